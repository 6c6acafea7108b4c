"""Bring your own model, on one real local stack (Envoy, model servers, collector, MLflow).

The README's two examples run as written, unchanged, in a user's working directory: they create
the MLflow store and register a pyfunc ``PythonModel`` and a scikit-learn pipeline with a custom
transformer saved with cloudpickle. A champion trained by ``mlcanary train`` then serves on the
stack, and every candidate — the README's, a label-only model, each registered with the plain
MLflow API — is released through the engine (preflight included), sent traffic, judged, and rolled
back so the next one can be released; a LightGBM pipeline fitted on inverted labels and saved with
skops is rolled back by the shipped checks. Candidates that raise, answer NaN or take
other inputs, or have no signature, are refused before any traffic. Also: ``up`` with a candidate
that cannot load, ``mlcanary traffic --data FILE --target COL``, the standard V2 client
``tritonclient[http]`` through Envoy in JSON and binary mode (numeric and string columns), and a
model whose signature is one tensor, served and logged on the candidate arm.

One module-scoped stack (and engine) serves every test: each model-server start costs seconds of
CPU on 2 cores, so every test starts as few as its claim needs, and a test that needs another
policy builds its engine on the same stack (``same_stack``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from byom_models import register, set_alias, tensor_rows
from stack_helpers import LocalStack, cli_env, local_stack, same_stack, stack_settings
from typer.testing import CliRunner

from mlcanary.cli.main import app
from mlcanary.data.loader import load_dataset
from mlcanary.data.synthetic import FEATURES, TARGET, generate_transactions
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import CandidateRefusedError, RolloutEngine
from mlcanary.rollout.state import Phase
from mlcanary.serving.headers import ARM_HEADER, ARM_SERVED_HEADER, REQUEST_ID_HEADER
from mlcanary.telemetry.store import InferenceLogStore
from mlcanary.wiring import build_engine

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "pyfunc": REPO / "examples" / "byom" / "pyfunc_model.py",
    "sklearn": REPO / "examples" / "byom" / "sklearn_model.py",
}
MODEL = "fraud-detector"  # the name the README's examples register under
POLICY = {
    "rollout.steps": [50],
    "rollout.min_bake_per_step": "1h",
    "rollout.min_duration": "1h",
    "rollout.max_duration": "2h",
    "rollout.tick_interval": "1s",
    "rollout.labels.delay": "0s",
    # Evidently's drift checks are advisory (they cannot change a decision) and slow to import.
    "rollout.checks": {
        "input_drift": {"enabled": False},
        "prediction_drift": {"enabled": False},
        "brier": {"enabled": True},
        "log_loss": {"enabled": True},
    },
    "telemetry.drift_reports": False,
}


def test_readme_shows_the_examples_verbatim() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    for example in EXAMPLES.values():
        assert example.read_text(encoding="utf-8") in blocks, f"README does not show {example.name} as it is"


@pytest.fixture(scope="module")
def readme_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Run both README examples, unchanged, in a fresh working directory as a user would (one
    Python process, no MLflow location inherited); return the directory and their versions."""
    workdir = tmp_path_factory.mktemp("user")
    (workdir / ".mlcanary").mkdir()
    script = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path, run_name='__main__')\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, EXAMPLES.values())],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    versions = re.findall(rf"{MODEL} v(\d+) is @candidate", done.stdout)
    assert len(versions) == 2, done.stdout
    return workdir, dict(zip(EXAMPLES, versions, strict=True))


@pytest.fixture(scope="module")
def stack(readme_versions: tuple[Path, dict[str, str]]) -> Iterator[LocalStack]:
    """The stack on the user's MLflow store: a champion trained by ``mlcanary train``, no candidate."""
    workdir, versions = readme_versions
    settings = stack_settings(workdir / "state", mlflow_dir=workdir / ".mlcanary", model_name=MODEL, **POLICY)
    registry = registry_from_settings(settings)
    assert registry.aliases(MODEL) == {CANDIDATE: versions["sklearn"]}  # the last example's alias
    registry.delete_alias(MODEL, CANDIDATE)
    with local_stack(settings, candidate=False) as running:
        yield running


@pytest.fixture(scope="module")
def data(stack: LocalStack) -> tuple[pd.DataFrame, pd.Series]:
    dataset = load_dataset(stack.settings.data)
    return dataset.x.head(600).reset_index(drop=True), dataset.y.head(600).reset_index(drop=True)


@pytest.fixture(scope="module")
def engine(stack: LocalStack) -> RolloutEngine:
    # One engine for the module: the champion is loaded once for paired agreement.
    return build_engine(stack.settings)


@dataclass(frozen=True)
class Canary:
    """What a canary showed: the candidate's flavor as its server reports it, and the checks."""

    flavor: str
    checks: dict[str, dict[str, Any]]


def _canary(stack: LocalStack, engine: RolloutEngine, version: str) -> Canary:
    """Release ``version``, send traffic, judge a tick; roll back; return what was seen."""
    set_alias(stack.settings, CANDIDATE, version)
    engine.start_canary(stack.model, version)
    try:
        with stack.client() as client:
            meta = client.get(f"/v2/models/{stack.model}", headers={ARM_HEADER: "candidate"}).json()
        replies = stack.send(80, prefix=f"byom-{version}")
        assert {r.status for r in replies} == {200}, [r.body for r in replies if r.status != 200][:3]
        assert {r.arm for r in replies} == {"champion", "candidate"}
        stack.wait_for_logged([r.request_id for r in replies], timeout_s=30)
        result = engine.tick(stack.model)
        assert result.decision is not None
        assert result.release.phase in (Phase.PROGRESSING, Phase.ROLLING_BACK, Phase.ROLLED_BACK)
        return Canary(str(meta["parameters"]["flavor"]), {c.name: c.__dict__ for c in result.decision.checks})
    finally:
        if engine.active_release(stack.model) is not None:
            engine.rollback(stack.model, "test: next model")


@pytest.mark.parametrize(("example", "flavor"), [("pyfunc", "python_function"), ("sklearn", "sklearn")])
def test_readme_examples_are_canaried_and_judged(
    stack: LocalStack,
    engine: RolloutEngine,
    readme_versions: tuple[Path, dict[str, str]],
    example: str,
    flavor: str,
) -> None:
    canary = _canary(stack, engine, readme_versions[1][example])
    assert canary.flavor == flavor  # served through the flavor it was logged with
    checks = canary.checks
    assert checks["error_rate"]["n_candidate"] > 0
    # Both arms gave labels and probabilities: the paired and probability checks have data.
    assert checks["agreement"]["value"] is not None, checks["agreement"]["reason"]
    assert "no data:" not in checks["brier"]["reason"], checks["brier"]["reason"]


def test_label_only_model_reports_no_data_for_probability_checks(
    stack: LocalStack, engine: RolloutEngine, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    version = register(stack.settings, "labels", *data)
    checks = _canary(stack, engine, version).checks
    for name in ("brier", "log_loss"):
        assert checks[name]["verdict"] == "inconclusive"  # never pass, never fail
        assert "gives no probability, only labels" in checks[name]["reason"], checks[name]["reason"]
        assert not checks[name]["blocking"]  # no data only blocks where the policy says must_have_data
    assert checks["agreement"]["value"] is not None  # labels alone still give paired agreement
    assert "labels only" in checks["agreement"]["reason"]


FLOOR = 60
SHIPPED_CHECKS = {
    "rollout.steps": [20],
    "rollout.min_bake_per_step": "5s",
    "rollout.min_duration": "30s",
    "rollout.max_duration": "300s",
    "rollout.tick_interval": "1s",
    "rollout.min_samples_per_arm": FLOOR,
    # Latency is judged, but not on the fast path: on a loaded CI machine a freshly loaded
    # candidate's first requests can trip it before the floor, which is not what this test is about.
    "rollout.checks": {
        "prediction_drift": {"enabled": False},
        "input_drift": {"enabled": False},
        "latency": {"critical": False},
    },
    "telemetry.drift_reports": False,
}


def test_label_flipped_candidate_is_rolled_back_within_two_ticks_of_the_floor(stack: LocalStack) -> None:
    """A confidently bad model, under the shipped checks and tolerances (``configs/rollout.yaml``)
    with times compressed to seconds, a smaller sample floor and latency off the fast path: a
    LightGBM pipeline fitted on inverted labels (it flags nearly every transaction the champion
    passes), saved with skops."""
    dataset = load_dataset(stack.settings.data)
    version = register(stack.settings, "flipped", dataset.x, dataset.y)
    set_alias(stack.settings, CANDIDATE, version)
    engine = build_engine(same_stack(stack.settings, **SHIPPED_CHECKS))
    registry = registry_from_settings(stack.settings)
    ticks_after_floor = 0
    with stack.background_traffic(interval_s=0.01) as replies:
        engine.start_canary(stack.model, version)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(1.0)
            result = engine.tick(stack.model)
            if result.decision is None:
                break
            # The floor as decide() applies it (requests per arm), not a check's own count: under
            # load a check may count fewer answered requests than were logged.
            if not result.decision.reason.startswith("waiting for samples"):
                ticks_after_floor += 1
            if result.release.phase.terminal:
                break

    state = result.release
    assert state.phase == Phase.ROLLED_BACK, state.reason
    assert 1 <= ticks_after_floor <= 2, f"rolled back {ticks_after_floor} tick(s) after the floor"
    assert result.decision is not None
    failed = {c.name for c in result.decision.checks if c.verdict == "fail"}
    assert failed & {"positive_rate", "agreement"}, failed
    assert "confidently" in (state.reason or "")  # the reason says what was measured and concluded
    assert registry.aliases(stack.model) == {CHAMPION: stack.champion_version}
    assert registry.get_version(stack.model, version).tag("rejected")
    observed = engine.backend.status(stack.model)
    assert observed.traffic == {"champion": 100, "candidate": 0}
    assert sum(1 for r in replies if r.status != 200) == 0  # a wrong model answers, it does not fail


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("raises", "feature store unreachable"),
        ("nan", "non-finite"),
        ("other-inputs", "inputs differ from the champion's"),
        ("no-signature", "logged without a signature"),
    ],
)
def test_preflight_refuses_before_any_traffic(
    stack: LocalStack,
    engine: RolloutEngine,
    data: tuple[pd.DataFrame, pd.Series],
    kind: str,
    expected: str,
) -> None:
    registry = registry_from_settings(stack.settings)
    version = register(stack.settings, kind, *data)
    set_alias(stack.settings, CANDIDATE, version)
    with stack.background_traffic(interval_s=0.1) as replies:  # the champion keeps answering
        with pytest.raises(CandidateRefusedError, match=expected):
            engine.start_canary(stack.model, version)
        time.sleep(0.3)
    info = registry.get_version(stack.model, version)
    assert expected in (info.tag("preflight") or ""), info.tags
    assert "refused before any traffic" in (info.tag("rejected") or "")
    assert registry.aliases(stack.model) == {CHAMPION: stack.champion_version}
    observed = stack.backend.status(stack.model)
    assert observed.traffic == {"champion": 100, "candidate": 0}
    assert replies
    assert {r.status for r in replies} == {200}
    assert {r.version for r in replies} == {stack.champion_version}


@pytest.fixture
def cli(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for key, value in cli_env(stack.settings).items():
        monkeypatch.setenv(key, value)
    return CliRunner()


def test_up_serves_the_champion_when_the_candidate_cannot_load(
    stack: LocalStack, cli: CliRunner, data: tuple[pd.DataFrame, pd.Series]
) -> None:
    # A version logged without a signature, made @candidate behind mlcanary's back.
    version = register(stack.settings, "no-signature", *data)
    set_alias(stack.settings, CANDIDATE, version)
    try:
        started = cli.invoke(app, ["up"])
    finally:
        registry_from_settings(stack.settings).delete_alias(stack.model, CANDIDATE)
    assert started.exit_code == 0, started.output
    warning = [line for line in started.stderr.splitlines() if "warning:" in line]
    assert len(warning) == 1, started.stderr  # one line, no traceback
    assert f"@candidate v{version} is not served" in warning[0]
    assert "without a signature" in warning[0]
    assert "Traceback" not in started.output
    assert stack.backend.status(stack.model).traffic == {"champion": 100, "candidate": 0}
    assert {r.version for r in stack.send(5)} == {stack.champion_version}


def test_traffic_replays_your_file_with_its_labels(stack: LocalStack, cli: CliRunner, tmp_path: Path) -> None:
    rows = generate_transactions(10, seed=5)[[*FEATURES, TARGET]]
    rows["amount"] = [7000.25 + i for i in range(len(rows))]  # marks the file's rows in the log
    rows[TARGET] = [i % 2 for i in range(len(rows))]
    path = tmp_path / "mine.csv"
    rows.to_csv(path, index=False)
    since = datetime.now(UTC)
    sent = cli.invoke(
        app,
        [
            "traffic",
            "--data",
            str(path),
            "--target",
            TARGET,
            "--requests",
            "20",
            "--rps",
            "40",
            "--feedback-share",
            "1.0",
            "--feedback-delay",
            "0",
            "--json",
        ],
    )
    assert sent.exit_code == 0, sent.output
    report = json.loads(sent.stdout)
    assert report["arms"]["champion"]["ok"] == 20
    assert report["feedback_sent"] == 20
    with InferenceLogStore(stack.info.store_url) as store:
        deadline = time.monotonic() + 20
        while True:
            logged = store.fetch(stack.model, since=since)
            logged = logged[logged["amount"].isin(rows["amount"])]
            if (len(logged) >= 20 and logged["label"].notna().sum() >= 20) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert len(logged) == 20  # each of the file's 10 rows, twice
    expected = dict(zip(rows["amount"], rows[TARGET], strict=True))
    assert [int(v) for v in logged["label"]] == [expected[a] for a in logged["amount"]]
    assert set(logged["merchant_category"]) <= set(rows["merchant_category"])

    wrong = cli.invoke(app, ["traffic", "--data", str(path), "--target", "label", "--requests", "1"])
    assert wrong.exit_code == 2
    assert "--target 'label' is not a column" in wrong.stderr


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_through_envoy(stack: LocalStack, binary: bool) -> None:
    rows = stack.instances(4)
    columns = list(rows[0])
    assert {type(rows[0][c]) for c in columns} >= {str, float}, "mixed numeric and string columns"
    client = triton.InferenceServerClient(url=stack.front_door.removeprefix("http://"))
    inputs = []
    for column in columns:
        values = [row[column] for row in rows]
        if isinstance(values[0], str):
            array, datatype = np.array(values, dtype=object).reshape(-1, 1), "BYTES"
        elif isinstance(values[0], int):
            array, datatype = np.array(values, dtype=np.int64).reshape(-1, 1), "INT64"
        else:
            array, datatype = np.array(values, dtype=np.float64).reshape(-1, 1), "FP64"
        tensor = triton.InferInput(column, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = (
        None
        if binary
        else [triton.InferRequestedOutput(n, binary_data=False) for n in ("output-1", "predict_proba")]
    )
    assert client.is_server_live()
    result = client.infer(stack.model, inputs, outputs=outputs)
    labels, proba = result.as_numpy("output-1"), result.as_numpy("predict_proba")
    assert labels.shape == (4, 1)
    assert proba.shape == (4, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    with stack.client() as http:
        expected = http.post(f"/v1/models/{stack.model}:predict", json={"instances": rows}).json()
    assert proba[:, 1] == pytest.approx(expected["probabilities"])
    assert labels.ravel().tolist() == expected["predictions"]
    client.close()


def test_a_tensor_model_is_served_and_logged(stack: LocalStack, data: tuple[pd.DataFrame, pd.Series]) -> None:
    """A model whose signature is one float tensor (LightGBM's own flavor), on the candidate arm."""
    version = register(stack.settings, "tensor-lightgbm", *data)
    tensors = tensor_rows(data[0].head(12))
    stack.backend.deploy(stack.model, stack.champion_version, version, 0)
    try:
        with stack.client() as client:
            meta = client.get(f"/v2/models/{stack.model}", headers={ARM_HEADER: "candidate"}).json()
        assert meta["parameters"]["flavor"] == "lightgbm"
        assert meta["inputs"][0]["datatype"] == "FP64"
        assert meta["inputs"][0]["shape"] == [-1, tensors.shape[1]]
        # V1: one nested list per row.
        replies = _send_tensors(stack, tensors[:8])
        assert {(status, arm) for status, arm, _rid in replies} == {(200, "candidate")}
        # V2, the standard client's default (binary) request and a JSON one: a batch of 4 rows.
        client = triton.InferenceServerClient(url=stack.front_door.removeprefix("http://"))
        for binary in (True, False):
            batch = triton.InferInput("input-0", [4, tensors.shape[1]], "FP64")
            batch.set_data_from_numpy(tensors[8:], binary_data=binary)
            answer = client.infer(stack.model, [batch], headers={ARM_HEADER: "candidate"})
            labels, proba = answer.as_numpy("output-1"), answer.as_numpy("predict_proba")
            assert labels.shape == (4, 1)
            assert proba.shape == (4, 2)
            assert np.allclose(proba.sum(axis=1), 1.0)
        client.close()
        logged = stack.wait_for_logged([rid for _s, _a, rid in replies], timeout_s=30)
        assert set(logged["version"]) == {version}
        assert logged["prediction"].isin([0, 1]).all()
        assert logged["probability"].between(0, 1).all()
    finally:
        stack.backend.deploy(stack.model, stack.champion_version, None, 0)


def _send_tensors(stack: LocalStack, tensors: np.ndarray) -> list[tuple[int, str | None, str]]:
    """One V1 request per row (``instances``: one nested list) to the candidate, through Envoy."""
    replies = []
    with stack.client() as client:
        for index, row in enumerate(tensors.tolist()):
            request_id = f"tensor-{index:04d}"
            response = client.post(
                f"/v1/models/{stack.model}:predict",
                json={"instances": [row]},
                headers={REQUEST_ID_HEADER: request_id, ARM_HEADER: "candidate"},
            )
            replies.append((response.status_code, response.headers.get(ARM_SERVED_HEADER), request_id))
    return replies
