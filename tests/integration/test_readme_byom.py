"""The README's "Bring your own model" examples run as written, and what they register can be served.

The README shows ``examples/byom/pyfunc_model.py`` and ``examples/byom/sklearn_model.py`` verbatim;
both are run, unchanged, in a fresh working directory (one Python process, as a user would run
one after the other), then each registered version is loaded and scored as the model servers do,
and its inputs are checked against those of a champion trained by ``mlcanary train``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlcanary.data.model_inputs import InputSchema
from mlcanary.data.schema import infer_schema
from mlcanary.data.synthetic import FEATURES, generate_transactions
from mlcanary.registry.model_loader import load_registered_model
from mlcanary.rollout.model_outputs import OutputNames, read_outputs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [REPO / "examples" / "byom" / "pyfunc_model.py", REPO / "examples" / "byom" / "sklearn_model.py"]


def test_readme_shows_the_examples_verbatim() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    for example in EXAMPLES:
        assert example.read_text(encoding="utf-8") in blocks, f"README does not show {example.name} as it is"


def test_examples_run_as_written_and_serve(tmp_path: Path, mlflow_state: Path) -> None:
    (tmp_path / ".mlcanary").mkdir()
    if (mlflow_state / "mlflow.db").is_file():
        shutil.copy(mlflow_state / "mlflow.db", tmp_path / ".mlcanary" / "mlflow.db")  # skips migrations
    script = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path, run_name='__main__')\n"
    # A user's shell, not this test process: no MLflow locations inherited from other tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, EXAMPLES)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    versions = re.findall(r"fraud-detector v(\d+) is @candidate", done.stdout)
    assert len(versions) == 2, done.stdout
    uri = f"sqlite:///{tmp_path / '.mlcanary' / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    assert str(client.get_registered_model("fraud-detector").aliases["candidate"]) == versions[-1]
    rows = generate_transactions(50, seed=3)
    champion_inputs = InputSchema(kind="columns", columns=infer_schema(rows, list(FEATURES)))
    for version, flavor in zip(versions, ("python_function", "sklearn"), strict=True):
        scorer = load_registered_model(client, uri, "fraud-detector", version)
        assert scorer.flavor == flavor
        assert scorer.inputs.differences(champion_inputs) == []
        reading = read_outputs(scorer.predict(rows[list(FEATURES)]), 50, OutputNames())
        assert reading.problem is None
        assert reading.kind == "label and probability"
