"""The rollout engine on the real local stack: one release promoted, one rolled back.

Real Envoy, real model-server processes loading from MLflow, real collector and inference log;
the policy is compressed to seconds and trimmed to the checks that decide quickly at low volume
(statistical power is the subject of the unit and calibration tests, not of this one).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stack_helpers import LocalStack, local_stack, stack_settings

from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.registry.protocol import NewVersion
from mlcanary.rollout import tags
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.training import train
from mlcanary.wiring import build_engine
from models.faults import FaultyModel

pytestmark = pytest.mark.integration

POLICY = {
    "rollout.steps": [50],
    "rollout.min_bake_per_step": "3s",
    "rollout.min_duration": "5s",
    "rollout.max_duration": "100s",
    "rollout.tick_interval": "1s",
    "rollout.min_samples_per_arm": 60,
    "rollout.checks": {
        "error_rate": {"tolerance": 0.1},
        "latency": {"tolerance": 1.0},
        "latency_p95": {"enabled": False},
        "positive_rate": {"enabled": False},
        "prediction_drift": {"enabled": False},
        "input_drift": {"enabled": False},
        "accuracy": {"enabled": False},
    },
    "telemetry.drift_reports": False,
}


def _run(engine: RolloutEngine, model: str, deadline_s: float = 100.0) -> ReleaseState:
    state = engine.active_release(model)
    assert state is not None
    deadline = time.monotonic() + deadline_s
    while not state.phase.terminal and time.monotonic() < deadline:
        time.sleep(1.0)
        state = engine.tick(model).release
    return state


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_state: Path):  # type: ignore[no-untyped-def]
    settings = stack_settings(tmp_path_factory.mktemp("rollout"), mlflow_dir=mlflow_state, **POLICY)
    with local_stack(settings, candidate=False) as running:
        yield running


def test_good_release_is_promoted_then_bad_one_rolled_back(stack: LocalStack) -> None:
    settings, model = stack.settings, stack.model
    registry = registry_from_settings(settings)
    engine = build_engine(settings)

    candidate = train(settings, registry)
    assert candidate.alias == CANDIDATE
    with stack.background_traffic(interval_s=0.01) as replies:
        engine.start_canary(model, candidate.version)
        assert engine.backend.status(model).traffic == {"champion": 50, "candidate": 50}
        promoted = _run(engine, model)
    assert promoted.phase == Phase.PROMOTED, promoted.reason
    assert registry.aliases(model) == {CHAMPION: candidate.version}
    observed = engine.backend.status(model)
    assert observed.traffic == {"champion": 100, "candidate": 0}
    assert observed.arms["champion"].version == candidate.version
    assert sum(1 for r in replies if r.status >= 500 or r.status == 0) == 0

    base = registry.load_model(model, candidate.version)
    reference = registry.load_reference(model, candidate.version)
    faulty = registry.register(
        model,
        NewVersion(
            model=FaultyModel(base.model, failure_share=0.5, healthy_calls=5),  # passes preflight
            features=base.features,
            reference=reference,
            input_example=reference.head(3),
            metrics={},
            params={},
            tags=tags.tagged({tags.GATE: "manual"}),
            run_name="faulty",
        ),
    )
    registry.set_alias(model, CANDIDATE, faulty.version)
    with stack.background_traffic(interval_s=0.01):
        engine.start_canary(model, faulty.version)
        rolled_back = _run(engine, model, deadline_s=60)
    assert rolled_back.phase == Phase.ROLLED_BACK, rolled_back.reason
    assert "error" in (rolled_back.reason or "")
    assert registry.aliases(model) == {CHAMPION: candidate.version}
    assert registry.get_version(model, faulty.version).tag("rejected")
    observed = engine.backend.status(model)
    assert observed.traffic == {"champion": 100, "candidate": 0}
    assert observed.arms["champion"].version == candidate.version
    assert not observed.arms["candidate"].ready
