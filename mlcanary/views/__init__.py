"""How the command line, the demo, the HTML report and the Prefect artifacts show things: one
rendering each (the check table, the console)."""
