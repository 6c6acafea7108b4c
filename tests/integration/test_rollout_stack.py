"""The rollout engine on the real local stack: releases promoted and rolled back, Envoy killed
mid-release, a candidate that crash-loops.

Real Envoy, real model-server processes loading from MLflow, real collector and inference log;
the policy is compressed to seconds and trimmed to the checks that decide quickly at low volume
(statistical power is the subject of the unit and calibration tests, not of this one).
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest
from stack_helpers import (
    LocalStack,
    count_by,
    local_stack,
    pid_alive,
    recorded_pids,
    same_stack,
    stack_settings,
)

from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.registry.protocol import NewVersion
from mlcanary.rollout import tags
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.serving.local.backend import LocalBackend
from mlcanary.serving.local.envoy import EnvoyLayout, EnvoyProxy, Weights
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


def _wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.05)


def test_envoy_killed_mid_release_is_restarted_by_the_next_tick_with_the_persisted_weights(
    stack: LocalStack,
) -> None:
    settings, model = stack.settings, stack.model
    registry = registry_from_settings(settings)
    engine = build_engine(settings)
    candidate = train(settings, registry)
    with stack.background_traffic(interval_s=0.02, deadline_s=600) as replies:
        engine.start_canary(model, candidate.version)
        assert engine.backend.status(model).traffic == {"champion": 50, "candidate": 50}
        killed = recorded_pids(stack.state_dir)["envoy"]
        os.kill(killed, signal.SIGKILL)
        _wait_gone(killed)

        result = engine.tick(model)  # no `mlcanary up`: the tick's status call notices

        restarted = recorded_pids(stack.state_dir)["envoy"]
        assert restarted != killed
        assert pid_alive(restarted)
        assert not result.release.phase.terminal, result.release.reason
        # What the new Envoy serves, read from its admin endpoint: the release's 50/50, not a default.
        assert EnvoyProxy(EnvoyLayout.from_settings(settings)).observed_weights() == Weights(50, 50)
        served_again = len(replies)
        time.sleep(2.0)
        after = replies[served_again:]
        # The release goes on through the new Envoy (a rollback by hand ends it: cheaper than a promotion).
        ended = engine.rollback(model, "test over")
    assert ended.phase == Phase.ROLLED_BACK, ended.reason
    assert len(after) > 20
    assert all(reply.status == 200 for reply in after), count_by(after, "status")
    assert {reply.arm for reply in after} == {"champion", "candidate"}
    assert engine.backend.status(model).traffic == {"champion": 100, "candidate": 0}


def test_a_crash_looping_candidate_is_rolled_back_and_clients_see_only_its_share_of_errors(
    stack: LocalStack,
) -> None:
    """The candidate's server is killed, restarted, killed again…; the engine ticks only while it is
    up and ready, so the availability check never sees it down: the rollback must come from the 5xx
    Envoy answered for it (its proxy-error log) counted in the candidate's error checks."""
    share = 20
    settings = same_stack(
        stack.settings, **(POLICY | {"rollout.steps": [share], "rollout.min_duration": "90s"})
    )
    model = stack.model
    registry = registry_from_settings(settings)
    engine = build_engine(settings)
    backend = engine.backend
    assert isinstance(backend, LocalBackend)
    candidate = train(settings, registry)
    crashes = 0
    with stack.background_traffic(interval_s=0.01, deadline_s=600) as replies:
        engine.start_canary(model, candidate.version)
        first = len(replies)
        state = engine.active_release(model)
        assert state is not None
        while not state.phase.terminal and crashes < 10:
            assert backend.status(model).arms["candidate"].ready
            state = engine.tick(model).release
            if state.phase.terminal:
                break
            pid = stack.server_pid("candidate")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)
            crashes += 1
            time.sleep(1.0)  # down for a second under traffic, then restarted (by a supervisor, say)
            process = backend.servers.start("candidate", model, candidate.version)
            backend.servers.await_ready("candidate", model, process, candidate.version)
        last = len(replies)
        time.sleep(1.0)
    assert state.phase == Phase.ROLLED_BACK, state.reason
    assert crashes >= 1
    reason = state.reason or ""
    assert "error_rate" in reason or "error_burst" in reason, reason
    assert "availability" not in reason, reason

    window = replies[first:last]
    errors = [reply for reply in window if reply.status != 200]
    print(f"\n{crashes} crashes, {len(window)} requests in the detection window, {len(errors)} failed")
    # Every failure is Envoy's 503 for the candidate's share: none came from the champion.
    assert all(reply.status == 503 for reply in errors), count_by(errors, "status")
    assert all(reply.arm != "champion" for reply in errors)
    # Failures are at most the candidate's share of requests (binomial, 3 standard deviations).
    p, n = share / 100, len(window)
    assert len(errors) <= p * n + 3 * math.sqrt(n * p * (1 - p)), (len(errors), n)
    after = replies[last:]
    assert after
    assert all(reply.status == 200 and reply.arm == "champion" for reply in after), count_by(after, "status")
    observed = backend.status(model)
    assert observed.traffic == {"champion": 100, "candidate": 0}
    assert not observed.arms["candidate"].ready
    assert registry.get_version(model, candidate.version).tag("rejected")
