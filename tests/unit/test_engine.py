"""The rollout engine with in-memory fakes: a release driven tick by tick, crashes, bad requests.

Every test runs twice: against the in-memory serving backend and against the KServe backend on a
fake Kubernetes API server that plays KServe's controller (``tests/fake_kube``)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import NothingToDoError, RolloutEngine, RolloutError
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.ports import Notifier
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.tags import release_from_tags
from mlcanary.rollout.versions import VersionNotFoundError
from mlcanary.testing.fakes import (
    FakeClock,
    FakeServingBackend,
    InjectedCrashError,
    InMemoryRegistry,
    ScriptedMetrics,
    steady_traffic,
)

POLICY = RolloutPolicy(
    steps=[20, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="2h",
    tick_interval="5m",
    min_samples_per_arm=100,
)
TICK = timedelta(minutes=5)


@pytest.fixture(params=["memory", "kserve"])
def world(request: pytest.FixtureRequest) -> tuple[InMemoryRegistry, FakeServingBackend, FakeClock]:
    backend = FakeServingBackend() if request.param == "memory" else request.getfixturevalue("kserve_backend")
    registry = InMemoryRegistry()
    champion = registry.add_version("fraud")
    candidate = registry.add_version("fraud")
    registry.set_alias("fraud", CHAMPION, champion)
    registry.set_alias("fraud", CANDIDATE, candidate)
    return registry, backend, FakeClock()


def engine_for(world, metrics: ScriptedMetrics, notifier: Notifier | None = None) -> RolloutEngine:  # type: ignore[no-untyped-def]
    registry, backend, clock = world
    return RolloutEngine(
        registry=registry, backend=backend, metrics=metrics, policy=POLICY, clock=clock, notifier=notifier
    )


def test_good_release_steps_up_then_promotes(world) -> None:  # type: ignore[no-untyped-def]
    registry, backend, clock = world
    engine = engine_for(world, steady_traffic(0.01))
    state = engine.start_canary("fraud", "2")
    assert state.phase == Phase.PROGRESSING
    assert backend.status("fraud").traffic == {"champion": 80, "candidate": 20}

    phases, actions = [], []
    for _ in range(40):
        clock.advance(TICK)
        result = engine.tick("fraud")
        phases.append(result.release.phase)
        actions.append(result.decision.action if result.decision else None)
        if result.release.phase.terminal:
            break
    assert actions[0] == "hold"  # baking the first step
    assert "step_up" in actions
    assert actions[-1] == "promote"
    assert phases[:-1] == [Phase.PROGRESSING] * (len(phases) - 1)
    assert phases[-1] == Phase.PROMOTED
    assert registry.aliases("fraud") == {CHAMPION: "2"}
    assert registry.get_version("fraud", "1").tag("previous_champion") == "true"
    assert backend.status("fraud").arms["champion"].version == "2"
    with pytest.raises(NothingToDoError):
        engine.tick("fraud")


def test_bad_release_rolls_back_and_is_tagged(world) -> None:  # type: ignore[no-untyped-def]
    registry, backend, clock = world
    engine = engine_for(world, steady_traffic(0.20))
    engine.start_canary("fraud", "2")
    for _ in range(10):
        clock.advance(TICK)
        result = engine.tick("fraud")
        if result.release.phase.terminal:
            break
    assert result.release.phase == Phase.ROLLED_BACK
    assert result.decision is not None
    assert result.decision.action == "rollback"
    assert registry.aliases("fraud") == {CHAMPION: "1"}
    info = registry.get_version("fraud", "2")
    assert "error_rate" in (info.tag("rejected") or "")
    last = json.loads(info.tag("last_decision") or "{}")
    assert last["action"] == "rollback"
    assert backend.status("fraud").traffic == {"champion": 100, "candidate": 0}


def test_state_is_persisted_in_tags_after_every_tick(world) -> None:  # type: ignore[no-untyped-def]
    registry, _, clock = world
    engine = engine_for(world, steady_traffic(0.01))
    engine.start_canary("fraud", "2")
    clock.advance(TICK)
    engine.tick("fraud")
    tags = dict(registry.get_version("fraud", "2").tags)
    restored = release_from_tags("fraud", "2", tags)
    assert restored is not None
    assert restored.phase == Phase.PROGRESSING
    assert restored.ticks == 1
    assert restored.champion_version == "1"
    # A fresh engine (another process) continues the same release.
    other = engine_for(world, steady_traffic(0.01))
    clock.advance(TICK)
    assert other.tick("fraud").release.ticks == 2


@pytest.mark.parametrize("crash_point", ["set_alias", "delete_alias", "promote"])
def test_crash_during_promote_is_completed_by_the_next_run(world, crash_point: str) -> None:  # type: ignore[no-untyped-def]
    registry, backend, _ = world
    engine = engine_for(world, steady_traffic(0.01))
    engine.start_canary("fraud", "2")
    target = backend if crash_point == "promote" else registry
    target.fail_on(crash_point)
    with pytest.raises(InjectedCrashError):
        engine.promote("fraud")
    assert engine.active_release("fraud").phase == Phase.PROMOTING  # type: ignore[union-attr]

    result = engine_for(world, steady_traffic(0.01)).tick("fraud")
    assert result.release.phase == Phase.PROMOTED
    assert "interrupted promote" in result.note
    assert registry.aliases("fraud") == {CHAMPION: "2"}
    assert backend.status("fraud").arms["champion"].version == "2"
    assert engine.active_release("fraud") is None


def test_crash_during_rollback_is_completed_by_the_next_run(world) -> None:  # type: ignore[no-untyped-def]
    registry, backend, _ = world
    engine = engine_for(world, steady_traffic(0.01))
    engine.start_canary("fraud", "2")
    registry.fail_on("delete_alias")
    with pytest.raises(InjectedCrashError):
        engine.rollback("fraud", "manual test")
    assert backend.status("fraud").traffic == {"champion": 100, "candidate": 0}
    result = engine.tick("fraud")
    assert result.release.phase == Phase.ROLLED_BACK
    assert registry.aliases("fraud") == {CHAMPION: "1"}
    assert registry.get_version("fraud", "2").tag("rejected") == "manual test"


def test_a_start_crashed_after_setting_candidate_is_started_by_the_next_tick(world) -> None:  # type: ignore[no-untyped-def]
    """The alias is set, the release's first tag is not: nothing says a release exists but the
    alias. The next tick of that model starts it (the monitor of all models did already)."""
    registry, backend, _ = world
    registry.delete_alias("fraud", CANDIDATE)
    registry.fail_on("set_tags")
    with pytest.raises(InjectedCrashError):
        engine_for(world, steady_traffic(0.01)).start_canary("fraud", "2")
    assert registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}
    assert registry.get_version("fraud", "2").tag("phase") is None
    assert "deploy" not in backend.calls

    engine = engine_for(world, steady_traffic(0.01))
    assert engine.unstarted_candidate("fraud") == "2"
    result = engine.tick("fraud")
    assert result.note == "started the release of @candidate v2"
    assert result.release.phase == Phase.PROGRESSING
    assert engine.active_release("fraud") == result.release
    assert engine.unstarted_candidate("fraud") is None
    observed = backend.status("fraud")
    assert observed.traffic == {"champion": 80, "candidate": 20}
    assert observed.arms["candidate"].version == "2"
    assert registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}


def test_bad_requests_are_refused_and_change_nothing(world) -> None:  # type: ignore[no-untyped-def]
    registry, backend, _ = world
    engine = engine_for(world, steady_traffic(0.01))
    before = (registry.aliases("fraud"), dict(registry.get_version("fraud", "2").tags), dict(backend.served))

    with pytest.raises(RolloutError, match="not registered"):
        engine.start_canary("nope", "1")
    with pytest.raises(VersionNotFoundError):
        engine.start_canary("fraud", "9")
    with pytest.raises(RolloutError, match="already @champion"):
        engine.start_canary("fraud", "1")
    with pytest.raises(NothingToDoError, match="nothing to promote"):
        engine.promote("fraud")
    with pytest.raises(NothingToDoError, match="nothing to roll back"):
        engine.rollback("fraud")
    assert (
        registry.aliases("fraud"),
        dict(registry.get_version("fraud", "2").tags),
        dict(backend.served),
    ) == before

    engine.start_canary("fraud", "2")
    third = registry.add_version("fraud")
    tags_before = dict(registry.get_version("fraud", third).tags)
    with pytest.raises(RolloutError, match="release of version 2 is progressing"):
        engine.start_canary("fraud", third)
    assert registry.aliases("fraud")[CANDIDATE] == "2"
    assert dict(registry.get_version("fraud", third).tags) == tags_before
    # Starting the running release again is a no-op.
    assert engine.start_canary("fraud", "2").phase == Phase.PROGRESSING


def test_rejected_version_cannot_be_canaried(world) -> None:  # type: ignore[no-untyped-def]
    registry, _, _ = world
    bad = registry.add_version("fraud", tags={"mlcanary.rejected": "worse than the champion"})
    with pytest.raises(RolloutError, match="rejected"):
        engine_for(world, steady_traffic(0.01)).start_canary("fraud", bad)


def test_crashed_candidate_is_rolled_back_from_the_serving_status(world) -> None:  # type: ignore[no-untyped-def]
    registry, backend, clock = world
    engine = engine_for(world, steady_traffic(0.01))
    engine.start_canary("fraud", "2")
    backend.candidate_ready = False  # the process died: the log sees nothing, the front door 503s
    clock.advance(TICK)
    result = engine.tick("fraud")
    assert result.release.phase == Phase.ROLLED_BACK
    assert result.decision is not None
    assert "availability" in result.decision.reason
    assert registry.aliases("fraud") == {CHAMPION: "1"}


class RecordingNotifier:
    def __init__(self) -> None:
        self.titles: list[str] = []

    def notify(self, release: ReleaseState, title: str, message: str) -> None:
        self.titles.append(title)


def test_humans_hear_about_start_rollback_and_failed_ticks(world) -> None:  # type: ignore[no-untyped-def]
    registry, _, clock = world
    notifier = RecordingNotifier()
    engine = engine_for(world, steady_traffic(0.01), notifier)
    engine.start_canary("fraud", "2")
    registry.fail_on("set_tags")
    clock.advance(TICK)
    with pytest.raises(InjectedCrashError):
        engine.tick("fraud")
    engine.rollback("fraud", "by hand")
    assert notifier.titles == ["canary started", "failed", "rolled back"]


def test_a_tick_that_another_run_overtook_does_nothing(world) -> None:  # type: ignore[no-untyped-def]
    """A manual rollback lands while a tick is measuring: the tick must not act on its stale judgement
    (it would roll back again and overwrite the human's reason)."""
    registry, backend, clock = world
    engine = engine_for(world, steady_traffic(0.30))
    engine.start_canary("fraud", "2")
    judge = engine.metrics.script

    def measure_while_someone_rolls_back(release, window_start, now):  # type: ignore[no-untyped-def]
        measurements = judge(release, window_start, now)
        engine.rollback("fraud", "rolled back by the on-call engineer")
        return measurements

    engine.metrics.script = measure_while_someone_rolls_back
    clock.advance(TICK)
    result = engine.tick("fraud")
    assert result.decision is None
    assert result.note == "another run acted during this tick: rolled_back"
    assert result.release.phase == Phase.ROLLED_BACK
    assert registry.get_version("fraud", "2").tag("rejected") == "rolled back by the on-call engineer"
    assert backend.calls.count("rollback") == 1


def test_starting_a_canary_sets_candidate_only_when_it_is_not_set_already(world) -> None:  # type: ignore[no-untyped-def]
    """Setting the alias again would fire MLflow's webhook, and so a second start-canary."""
    registry, _, _ = world  # the fixture already points @candidate at version 2
    registry.calls.clear()
    engine = engine_for(world, steady_traffic(0.01))
    engine.start_canary("fraud", "2")
    assert "set_alias" not in registry.calls
    registry.add_version("fraud")
    engine.rollback("fraud")
    engine.start_canary("fraud", "3")
    assert registry.calls.count("set_alias") == 1
    assert registry.aliases("fraud")[CANDIDATE] == "3"


@pytest.mark.parametrize(
    ("crash", "act"),
    [
        ("deploy", lambda engine: engine.start_canary("fraud", "2")),
        ("promote", lambda engine: (engine.start_canary("fraud", "2"), engine.promote("fraud"))),
        ("rollback", lambda engine: (engine.start_canary("fraud", "2"), engine.rollback("fraud"))),
    ],
    ids=["start", "manual promote", "manual rollback"],
)
def test_a_failed_start_or_manual_action_is_notified_once(world, crash: str, act) -> None:  # type: ignore[no-untyped-def]
    _, backend, _ = world
    notifier = RecordingNotifier()
    engine = engine_for(world, steady_traffic(0.01), notifier)
    backend.fail_on(crash)
    with pytest.raises(InjectedCrashError):
        act(engine)
    assert notifier.titles.count("failed") == 1
    assert notifier.titles[-1] == "failed"


def test_a_refused_request_is_not_a_failure_to_notify(world) -> None:  # type: ignore[no-untyped-def]
    notifier = RecordingNotifier()
    engine = engine_for(world, steady_traffic(0.01), notifier)
    engine.start_canary("fraud", "2")
    with pytest.raises(RolloutError):
        engine.start_canary("fraud", "1")  # the champion
    with pytest.raises(NothingToDoError):
        engine.approve("fraud")  # nothing waits
    assert "failed" not in notifier.titles
