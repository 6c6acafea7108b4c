"""The shadow phase on the real local stack: Envoy mirrors a share of live requests to the
candidate, users only ever see the champion, the collector pairs both answers by request id, and
the judge rejects a label-flipped candidate before any user was served by it, while a good one
moves on to the first canary step.

One stack for the module (real Envoy, model servers, collector, SQLite inference log, MLflow);
times compressed to seconds, small sample floors, Evidently off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack_helpers import LocalStack, Reply, count_by, local_stack, stack_settings

from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.registry.protocol import NewVersion
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import RolloutEngine, TickResult
from mlcanary.rollout.state import Phase
from mlcanary.telemetry.aggregate import aggregate
from mlcanary.telemetry.shadow import fetch_pairs
from mlcanary.telemetry.store import InferenceLogStore
from mlcanary.wiring import build_engine
from models.faults import FaultyModel

pytestmark = pytest.mark.integration

SHARE = 0.5
FLOOR = 40
POLICY = {
    "rollout.steps": [20],
    "rollout.min_bake_per_step": "5s",
    "rollout.min_duration": "30s",
    "rollout.max_duration": "120s",
    "rollout.tick_interval": "1s",
    "rollout.min_samples_per_arm": FLOOR,
    "rollout.shadow": {"enabled": True, "duration": "2s", "min_samples": FLOOR, "share": SHARE},
    "rollout.checks": {"prediction_drift": {"enabled": False}, "input_drift": {"enabled": False}},
    "telemetry.drift_reports": False,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_state: Path) -> Iterator[LocalStack]:
    settings = stack_settings(tmp_path_factory.mktemp("shadow"), mlflow_dir=mlflow_state, **POLICY)
    # Champion and a good candidate (the same training: a model that agrees with it), candidate idle.
    with local_stack(settings, candidate_percent=0) as running:
        yield running


def tick_until(
    engine: RolloutEngine, stack: LocalStack, done: set[Phase], replies: list[Reply], timeout_s: float = 60
) -> tuple[list[TickResult], int]:
    """Tick once a second until the release reaches a phase in ``done``; also returns how many
    ``replies`` had come back before the last tick began (all of them answered in shadow)."""
    results = []
    before = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        before = len(replies)
        results.append(engine.tick(stack.model))
        if results[-1].release.phase in done:
            break
    return results, before


def test_users_see_only_the_champion_and_the_mirrored_share_is_paired(stack: LocalStack) -> None:
    engine = build_engine(stack.settings)
    assert stack.candidate_version is not None
    release = engine.start_canary(stack.model, stack.candidate_version)
    assert release.phase == Phase.SHADOWING
    assert release.traffic == 0
    observed = engine.backend.status(stack.model)
    assert observed.traffic == {"champion": 100, "candidate": 0}
    assert observed.shadow == SHARE

    n = 300
    replies = stack.send(n)
    assert count_by(replies) == {"champion": n}  # every client-visible answer is the champion's
    assert count_by(replies, "status") == {200: n}
    ids = {r.request_id for r in replies}

    # Every live request is logged once, on the champion; about SHARE of them also as a mirrored
    # copy answered by the candidate, under the same request id, in the shadow log.
    live = stack.wait_for_logged(ids)
    assert set(live.index) == ids
    assert set(live["arm"]) == {"champion"}
    with InferenceLogStore(stack.info.store_url) as store:
        deadline = time.monotonic() + 20
        while True:
            pairs = fetch_pairs(
                store,
                stack.model,
                release.started_at,
                release.started_at.replace(year=release.started_at.year + 1),
                champion_version=stack.champion_version,
                candidate_version=stack.candidate_version,
            )
            pairs = pairs[pairs["request_id"].isin(ids)]
            complete = pairs["candidate_prediction"].notna() & pairs["champion_prediction"].notna()
            if complete.sum() == len(pairs) and len(pairs) > 0 and time.monotonic() > deadline - 18:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        live_arms = aggregate(store, stack.model, release.started_at, release.started_at.replace(year=3000))
    mirrored = len(pairs)
    sigma = math.sqrt(n * SHARE * (1 - SHARE))
    assert abs(mirrored - n * SHARE) <= 4 * sigma, (
        f"{mirrored} of {n} mirrored, expected {n * SHARE:.0f} ± {4 * sigma:.0f}"
    )
    assert complete.all(), "every mirrored copy is paired with the champion's answer"
    assert (pairs["candidate_status"] == 200).all()
    # The same model on both sides: identical answers to identical inputs.
    assert (pairs["candidate_prediction"] == pairs["champion_prediction"]).all()
    # No mirrored answer counts as live traffic: the live log holds the champion alone.
    assert set(live_arms) == {"champion"}

    # The judge sees the pairs and moves the good candidate on to the first canary step.
    with stack.background_traffic(interval_s=0.01) as background:
        results, in_shadow = tick_until(engine, stack, {Phase.PROGRESSING, Phase.ROLLED_BACK}, background)
    final = results[-1]
    assert final.release.phase == Phase.PROGRESSING, final.release.reason
    assert final.decision is not None
    assert final.decision.action == "step_up"
    assert "shadow passed" in final.decision.reason
    shadow_checks = {c.name: c for c in results[-1].decision.checks}
    assert shadow_checks["agreement"].verdict != "fail"
    assert (shadow_checks["agreement"].n_candidate or 0) >= FLOOR
    assert in_shadow > 0
    assert count_by(background[:in_shadow], "arm").keys() == {"champion"}  # nobody saw the candidate
    observed = engine.backend.status(stack.model)
    assert observed.traffic == {"champion": 80, "candidate": 20}
    assert observed.shadow == 0.0
    engine.rollback(stack.model, "end of the test")


def _register_label_flip(stack: LocalStack) -> str:
    """The champion with its scores inverted (a label flip), registered as ``@candidate``."""
    registry = registry_from_settings(stack.settings)
    champion = registry.load_model(stack.model, stack.champion_version)
    reference = registry.load_reference(stack.model, stack.champion_version)
    info = registry.register(
        stack.model,
        NewVersion(
            model=FaultyModel(champion.model, invert=True),
            features=champion.features,
            reference=reference,
            input_example=reference.head(3),
            metrics={},
            params={"base_version": stack.champion_version},
            tags={},
            run_name="label-flip",
            pip_requirements=("scikit-learn",),
        ),
    )
    registry.set_alias(stack.model, CANDIDATE, info.version)
    return info.version


def test_a_label_flip_is_rejected_in_shadow_and_never_serves_a_user(stack: LocalStack) -> None:
    version = _register_label_flip(stack)
    engine = build_engine(stack.settings)
    started = engine.start_canary(stack.model, version)
    assert started.phase == Phase.SHADOWING
    with stack.background_traffic(interval_s=0.01) as replies:
        results, _ = tick_until(engine, stack, {Phase.ROLLED_BACK, Phase.PROGRESSING}, replies)
        observed = [engine.backend.status(stack.model).candidate_percent]
    final = results[-1]
    assert final.release.phase == Phase.ROLLED_BACK, final.release.reason
    assert "rejected in shadow" in (final.release.reason or "")
    assert final.decision is not None
    failed = {c.name for c in final.decision.checks if c.verdict == "fail"}
    assert failed & {"agreement", "probability_shift", "positive_rate"}, failed
    # Never a live request: every reply is the champion's, and the live log has no candidate row.
    assert len(replies) > FLOOR
    assert count_by(replies, "arm").keys() == {"champion"}
    assert count_by(replies, "status").keys() == {200}
    with InferenceLogStore(stack.info.store_url) as store:
        live = aggregate(store, stack.model, started.started_at, started.started_at.replace(year=3000))
    assert set(live) == {"champion"}
    assert observed == [0]
    assert all(r.decision is None or r.decision.traffic == 0 for r in results)
    registry = registry_from_settings(stack.settings)
    assert registry.aliases(stack.model) == {CHAMPION: stack.champion_version}
    assert "rejected in shadow" in (registry.get_version(stack.model, version).tag("rejected") or "")
    assert engine.backend.status(stack.model).shadow == 0.0
