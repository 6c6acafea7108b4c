"""`mlcanary --help` and every command's `--help` answer without loading the heavy libraries: only
typer and rich (and mlcanary's CLI modules; the groups' own options are converted without the
pydantic adapters typer would build, see `LightGroup`); the configuration, pydantic, numpy, MLflow,
SQLAlchemy… load in the command that needs them. `status` loads neither MLflow, pandas nor
scikit-learn. Checked in a fresh interpreter (what a user's shell starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "pydantic",
    "pydantic_core",
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


STATUS_PROBE = """
import json, sys
from typer.testing import CliRunner
from mlcanary.cli.main import app
result = CliRunner().invoke(app, ["status", "no-such-model"])
print(json.dumps({"exit": result.exit_code, "output": result.output, "modules": sorted(sys.modules)}))
"""
STATUS_HEAVY = ("mlflow", "pandas", "sklearn", "evidently", "scipy", "prefect")


def test_status_answers_without_mlflow_pandas_or_scikit_learn(tmp_path: Path) -> None:
    # The local profile on a state directory with no MLflow store yet: status reads the registry
    # with SQL, says the model is not registered (an error of the registry, looked up without
    # importing training or the engine), and leaves no database behind. A registered model, over
    # SQL and REST, is tests/integration/test_registry_readers.py.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCANARY_", "MLFLOW_"))}
    env["MLCANARY_STATE_DIR"] = str(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-c", STATUS_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["exit"] == 1
    assert "model 'no-such-model' is not registered" in run["output"]
    loaded = sorted(m for m in run["modules"] if m.split(".")[0] in STATUS_HEAVY)
    assert loaded == [], f"status imported {loaded[:10]}"
    assert not (tmp_path / "state" / "mlflow.db").exists()
