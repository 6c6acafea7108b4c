"""Bring your own model, on the real local stack (Envoy, model servers, collector, MLflow).

One stack serves a champion trained by ``mlcanary train``; every candidate is registered with the
plain MLflow API (``byom_models``), released through the engine (preflight included), sent traffic
and judged, then rolled back by hand so the next one can be released. Also: the standard V2 client
``tritonclient[http]`` through Envoy, in JSON and binary mode, with numeric and string columns.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from byom_models import register, set_candidate
from stack_helpers import LocalStack, local_stack, stack_settings

from mlcanary.data.loader import load_dataset
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import CandidateRefusedError
from mlcanary.rollout.state import Phase
from mlcanary.serving.local.stack import up
from mlcanary.wiring import build_engine

pytestmark = pytest.mark.integration

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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_state: Path):  # type: ignore[no-untyped-def]
    settings = stack_settings(tmp_path_factory.mktemp("byom"), mlflow_dir=mlflow_state, **POLICY)
    with local_stack(settings, candidate=False) as running:
        yield running


@pytest.fixture(scope="module")
def data(stack: LocalStack):  # type: ignore[no-untyped-def]
    dataset = load_dataset(stack.settings.data)
    return dataset.x.head(600).reset_index(drop=True), dataset.y.head(600).reset_index(drop=True)


@pytest.fixture(scope="module")
def engine(stack: LocalStack):  # type: ignore[no-untyped-def]
    # One engine for the module: the champion is loaded once for paired agreement.
    return build_engine(stack.settings)


def _canary(stack: LocalStack, engine, version: str) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """Release ``version``, send traffic, judge a tick; roll back; return the checks by name."""
    set_candidate(stack.settings.tracking_uri, stack.model, version)
    engine.start_canary(stack.model, version)
    try:
        replies = stack.send(80, prefix=f"byom-{version}")
        assert {r.status for r in replies} == {200}, [r.body for r in replies if r.status != 200][:3]
        assert {r.arm for r in replies} == {"champion", "candidate"}
        stack.wait_for_logged([r.request_id for r in replies], timeout_s=30)
        result = engine.tick(stack.model)
        assert result.decision is not None
        assert result.release.phase in (Phase.PROGRESSING, Phase.ROLLING_BACK, Phase.ROLLED_BACK)
        return {c.name: c.__dict__ for c in result.decision.checks}
    finally:
        if engine.active_release(stack.model) is not None:
            engine.rollback(stack.model, "test: next model")


# skops with trusted types is canaried on this stack by test_label_flip_rollback.py.
@pytest.mark.parametrize("kind", ["frame", "cloudpickle", "lightgbm"])
def test_user_models_are_canaried_and_judged(stack: LocalStack, engine, data, kind: str) -> None:  # type: ignore[no-untyped-def]
    version = register(stack.settings.tracking_uri, stack.model, kind, *data)
    checks = _canary(stack, engine, version)
    assert checks["error_rate"]["n_candidate"] > 0
    # Both arms gave labels and probabilities: the paired and probability checks have data.
    assert checks["agreement"]["value"] is not None, checks["agreement"]["reason"]
    assert "no data:" not in checks["brier"]["reason"], checks["brier"]["reason"]


def test_label_only_model_reports_no_data_for_probability_checks(stack: LocalStack, engine, data) -> None:  # type: ignore[no-untyped-def]
    version = register(stack.settings.tracking_uri, stack.model, "labels", *data)
    checks = _canary(stack, engine, version)
    for name in ("brier", "log_loss"):
        assert checks[name]["verdict"] == "inconclusive"  # never pass, never fail
        assert "gives no probability, only labels" in checks[name]["reason"], checks[name]["reason"]
        assert not checks[name]["blocking"]  # no data only blocks where the policy says must_have_data
    assert checks["agreement"]["value"] is not None  # labels alone still give paired agreement
    assert "labels only" in checks["agreement"]["reason"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("raises", "feature store unreachable"),
        ("nan", "non-finite"),
        ("other-inputs", "inputs differ from the champion's"),
    ],
)
def test_preflight_refuses_before_any_traffic(
    stack: LocalStack, engine, data, kind: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    registry = registry_from_settings(stack.settings)
    version = register(stack.settings.tracking_uri, stack.model, kind, *data)
    set_candidate(stack.settings.tracking_uri, stack.model, version)
    with stack.background_traffic(interval_s=0.02) as replies:
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


def test_up_serves_the_champion_when_the_candidate_cannot_load(stack: LocalStack, data) -> None:  # type: ignore[no-untyped-def]
    version = register(stack.settings.tracking_uri, stack.model, "no-signature", *data)
    set_candidate(stack.settings.tracking_uri, stack.model, version)
    try:
        info = up(stack.settings)
    finally:
        registry_from_settings(stack.settings).delete_alias(stack.model, CANDIDATE)
    assert info.candidate_version is None
    assert info.candidate_problem is not None
    assert "\n" not in info.candidate_problem, "one line, no traceback"
    assert "without a signature" in info.candidate_problem
    assert info.serving.traffic == {"champion": 100, "candidate": 0}
    assert {r.status for r in stack.send(5)} == {200}


@pytest.mark.parametrize("binary", [False, True])
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
