"""The ``mlcanary`` command line (entry point :data:`mlcanary.cli.main.app`)."""
