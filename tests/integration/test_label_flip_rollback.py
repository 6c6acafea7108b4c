"""A confidently bad model is rolled back within two ticks of the sample floor, on the real stack.

The candidate is what a user's own training code could produce: a scikit-learn pipeline fitted on
inverted labels (it flags nearly every transaction the champion passes), logged and registered
with the plain MLflow API, not ``mlcanary train``. Real Envoy, model servers, collector and
inference log; the shipped checks and tolerances (``configs/rollout.yaml``) with times compressed to
seconds and a smaller sample floor. Evidently's drift checks are advisory by default (they cannot
change the decision) and are turned off to keep the test fast.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import mlflow.sklearn
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from stack_helpers import LocalStack, local_stack, stack_settings

from mlcanary.data.loader import load_dataset
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.state import Phase
from mlcanary.wiring import build_engine
from models.pipeline import build_pipeline

pytestmark = pytest.mark.integration

FLOOR = 60
POLICY = {
    "rollout.steps": [20],
    "rollout.min_bake_per_step": "5s",
    "rollout.min_duration": "30s",
    "rollout.max_duration": "300s",
    "rollout.tick_interval": "1s",
    "rollout.min_samples_per_arm": FLOOR,
    "rollout.checks": {"prediction_drift": {"enabled": False}, "input_drift": {"enabled": False}},
    "telemetry.drift_reports": False,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_state: Path):  # type: ignore[no-untyped-def]
    settings = stack_settings(tmp_path_factory.mktemp("flip"), mlflow_dir=mlflow_state, **POLICY)
    with local_stack(settings, candidate=False) as running:
        yield running


def _register_label_flip(stack: LocalStack) -> str:
    """Fit the project's pipeline on inverted labels and register it with plain MLflow calls."""
    dataset = load_dataset(stack.settings.data)
    numeric = [c for c in dataset.x.columns if dataset.x[c].dtype.kind in "if"]
    categorical = [c for c in dataset.x.columns if c not in numeric]
    flipped = build_pipeline("logistic_regression", numeric=numeric, categorical=categorical)
    flipped.fit(dataset.x, 1 - dataset.y)
    mlflow.set_tracking_uri(stack.settings.mlflow.tracking_uri)
    experiment = mlflow.set_experiment("user-training")
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        logged = mlflow.sklearn.log_model(
            flipped,
            name="model",
            signature=infer_signature(dataset.x, flipped.predict_proba(dataset.x)[:, 1]),
            input_example=dataset.x.head(3),
            registered_model_name=stack.model,
            skops_trusted_types=["numpy.dtype"],  # what MLflow asks a user to add for this pipeline
        )
    version = str(logged.registered_model_version)
    MlflowClient(stack.settings.mlflow.tracking_uri).set_registered_model_alias(
        stack.model, CANDIDATE, version
    )
    return version


def test_label_flipped_candidate_is_rolled_back_within_two_ticks_of_the_floor(stack: LocalStack) -> None:
    version = _register_label_flip(stack)
    engine = build_engine(stack.settings)
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
            counts = [
                (c.n_champion or 0, c.n_candidate or 0)
                for c in result.decision.checks
                if c.name == "error_rate"
            ]
            if counts and min(counts[0]) >= FLOOR:
                ticks_after_floor += 1
            if result.release.phase.terminal:
                break
        release = engine.registry.get_version(stack.model, version)

    state = result.release
    assert state.phase == Phase.ROLLED_BACK, state.reason
    assert 1 <= ticks_after_floor <= 2, f"rolled back {ticks_after_floor} tick(s) after the floor"
    assert result.decision is not None
    failed = {c.name for c in result.decision.checks if c.verdict == "fail"}
    assert failed & {"positive_rate", "agreement"}, failed
    assert "confidently" in (state.reason or "")  # the reason says what was measured and concluded
    assert registry.aliases(stack.model) == {CHAMPION: stack.champion_version}
    assert release.tag("rejected")
    observed = engine.backend.status(stack.model)
    assert observed.traffic == {"champion": 100, "candidate": 0}
    assert sum(1 for r in replies if r.status != 200) == 0  # a wrong model answers, it does not fail
