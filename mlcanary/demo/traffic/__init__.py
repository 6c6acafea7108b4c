"""The traffic replayer behind ``mlcanary traffic`` and the demo: plan, rows, sending, labels, report."""
