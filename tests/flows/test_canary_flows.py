"""The rollout flows on Prefect's test harness, driven tick by tick with in-memory fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest

import flows.canary as canary
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.ports import NullRecorder
from mlcanary.rollout.state import Phase
from mlcanary.rollout.versions import RegistryUnavailableError
from mlcanary.testing.fakes import (
    FakeWorld,
    InjectedCrashError,
    steady_traffic,
)

pytestmark = pytest.mark.flows

POLICY = RolloutPolicy(
    steps=[10, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="3h",
    tick_interval="5m",
    min_samples_per_arm=100,
)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    made = FakeWorld(POLICY)
    monkeypatch.setattr(canary, "engine_for", made.make_engine)
    return made


def test_release_driven_tick_by_tick_to_promotion(world: FakeWorld) -> None:
    started = canary.start_canary("fraud", "2")
    assert started["phase"] == "progressing"
    assert started["traffic"] == 10
    assert world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}

    seen: list[tuple[str, int, str]] = []
    for _ in range(20):
        world.clock.advance(timedelta(minutes=5))
        (result,) = canary.monitor("fraud")
        seen.append((result["phase"], result["traffic"], result.get("action", "")))
        if result["phase"] == "promoted":
            break
    phases = [phase for phase, _, _ in seen]
    assert phases[-1] == "promoted"
    assert set(phases[:-1]) == {"progressing"}
    traffic = [t for _, t, _ in seen]
    assert traffic == sorted(traffic), "traffic only grows on the way to promotion"
    assert 50 in traffic
    assert world.registry.aliases("fraud") == {CHAMPION: "2"}
    assert world.backend.status("fraud").arms["champion"].version == "2"


def test_bad_release_is_rolled_back_by_the_monitor(world: FakeWorld) -> None:
    world.metrics = steady_traffic(0.25)
    canary.start_canary("fraud", "2")
    world.clock.advance(timedelta(minutes=5))
    (result,) = canary.monitor("fraud")
    assert result["phase"] == "rolled_back"
    assert result["action"] == "rollback"
    assert "error_rate" in result["reason"] or "error_burst" in result["reason"]
    assert world.registry.aliases("fraud") == {CHAMPION: "1"}
    assert world.backend.status("fraud").traffic == {"champion": 100, "candidate": 0}


def test_crash_between_promote_steps_is_completed_by_the_next_monitor_run(world: FakeWorld) -> None:
    canary.start_canary("fraud", "2")
    world.registry.fail_on("delete_alias")
    state = canary.promote("fraud", return_state=True)
    assert state.is_failed()
    with pytest.raises(InjectedCrashError):
        state.result()
    assert world.registry.get_version("fraud", "2").tag("phase") == Phase.PROMOTING.value

    (result,) = canary.monitor("fraud")
    assert result["phase"] == "promoted"
    assert world.registry.aliases("fraud") == {CHAMPION: "2"}


def test_monitor_all_ticks_only_active_releases(world: FakeWorld) -> None:
    world.registry.add_version("other")
    world.registry.set_alias("other", CHAMPION, "1")
    canary.start_canary("fraud", "2")
    world.clock.advance(timedelta(minutes=5))
    results = canary.monitor()
    assert [r["model"] for r in results] == ["fraud"]


def test_manual_rollback_and_nothing_to_promote(world: FakeWorld) -> None:
    canary.start_canary("fraud", "2")
    rolled = canary.rollback("fraud", reason="bad smell")
    assert rolled["phase"] == "rolled_back"
    assert world.registry.get_version("fraud", "2").tag("rejected") == "bad smell"
    state = canary.promote("fraud", return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="nothing to promote"):
        state.result()


def test_monitor_starts_a_candidate_whose_start_canary_run_never_came(world: FakeWorld) -> None:
    """The webhook's start-canary run was lost (Prefect down longer than MLflow retried): the next
    scheduled monitor starts the release, once; a rejected candidate is left alone."""
    world.registry.set_alias("fraud", CANDIDATE, "2")
    (started,) = canary.monitor()
    assert (started["candidate_version"], started["phase"]) == ("2", "progressing")
    world.clock.advance(timedelta(minutes=11))
    (ticked,) = canary.monitor()
    assert ticked["action"] == "step_up"

    world.registry.add_version("other")
    world.registry.add_version("other")
    world.registry.set_alias("other", CHAMPION, "1")
    world.registry.set_tags("other", "2", {"mlcanary.rejected": "rolled back earlier"})
    world.registry.set_alias("other", CANDIDATE, "2")
    world.clock.advance(timedelta(minutes=11))
    assert [r["model"] for r in canary.monitor()] == ["fraud"]
    assert world.registry.get_version("other", "2").tag("phase") is None


def test_a_monitor_run_that_finds_the_lease_held_yields_and_changes_nothing(
    world: FakeWorld, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from mlcanary.telemetry.lease import StoreLease

    canary.start_canary("fraud", "2")
    world.lease = StoreLease.from_url(f"sqlite:///{tmp_path / 'inference.db'}")
    world.lease.acquire("fraud", "mlcanary command line on host pid 7")  # type: ignore[attr-defined]
    world.clock.advance(timedelta(minutes=5))
    (result,) = canary.monitor("fraud")
    assert result["yielded"].startswith("yielded: mlcanary command line on host pid 7 holds the lease")
    assert result["holder"] == "mlcanary command line on host pid 7"
    assert canary.promote("fraud")["yielded"].startswith("yielded: ")
    assert world.release().ticks == 0  # type: ignore[union-attr]
    assert world.release().phase == Phase.PROGRESSING  # type: ignore[union-attr]


class _KeepingRecorder(NullRecorder):
    """Evidence kept for models while MLflow was away; ``flush`` writes it (or fails while away)."""

    def __init__(self, kept: dict[str, int]) -> None:
        self.kept = kept
        self.away = False
        self.flushed: list[str] = []

    def flush(self, model: str) -> int:
        if self.away:
            raise RegistryUnavailableError("MLflow at http://mlflow:5000 is unavailable: ...")
        self.flushed.append(model)
        return self.kept.pop(model, 0)

    def pending_models(self) -> list[str]:
        return sorted(self.kept)


def test_the_monitor_writes_evidence_kept_for_a_release_that_ended_and_never_fails_on_it(
    world: FakeWorld,
) -> None:
    recorder = _KeepingRecorder({"fraud": 2})
    world.recorder = recorder
    recorder.away = True
    assert canary.monitor() == []  # no release in progress; MLflow still away: kept, no failure
    assert recorder.kept == {"fraud": 2}
    recorder.away = False
    assert canary.monitor() == []
    assert recorder.flushed == ["fraud"]
    assert recorder.kept == {}
