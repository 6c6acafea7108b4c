"""`mlcanary --help` and every command's `--help` answer without loading the heavy libraries: only
typer and rich (and mlcanary's CLI modules; typer itself loads pydantic for its parameter types);
the configuration, numpy, MLflow, SQLAlchemy… load in the command that needs them. Checked in a
fresh interpreter (what a user's shell starts)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "mlflow",
    "pandas",
    "sklearn",
    "numpy",
    "scipy",
    "evidently",
    "sqlalchemy",
    "httpx",
    "prefect",
    "yaml",
    "kubernetes",
    "uvicorn",
    "starlette",
    "mlcanary.config",
    "mlcanary.rollout.engine",
    "mlcanary.serving",
    "mlcanary.telemetry",
)

PROBE = """
import json, sys
import typer
from typer.testing import CliRunner
from mlcanary.cli.main import app
root = typer.main.get_command(app)
commands = [[]]
for name, command in sorted(root.commands.items()):
    commands.append([name])
    commands.extend([name, sub] for sub in sorted(getattr(command, "commands", {})))
runs = []
for command in commands:
    result = CliRunner().invoke(app, [*command, "--help"])
    runs.append({"command": command, "exit": result.exit_code, "output": result.output,
                 "modules": sorted(sys.modules)})
print(json.dumps(runs))
"""


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_every_help_answers_without_a_heavy_library() -> None:
    # One interpreter runs every command's --help in turn; modules are recorded after each, so the
    # first command to load a heavy library is the one named.
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    names = {" ".join(run["command"]) for run in runs}
    assert {"", "release", "status", "traffic", "demo", "webhook register"} <= names
    for run in runs:
        shown = " ".join(("mlcanary", *run["command"], "--help"))
        assert run["exit"] == 0, f"{shown}: {run['output']}"
        assert "Usage" in run["output"], shown
        assert _heavy(run["modules"]) == [], f"`{shown}` imported {_heavy(run['modules'])[:10]}"
