"""``mlcanary demo``: the story, its live view, the HTML report and the traffic replayer."""
