"""The rollout engine's shadow phase on in-memory fakes: start in shadow, reject there, or move on
to the first canary step."""

from __future__ import annotations

from datetime import timedelta

from mlcanary.rollout.arms import CANDIDATE
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.policy import RolloutPolicy, ShadowPolicy
from mlcanary.rollout.ports import ReleaseEvent
from mlcanary.rollout.state import Phase
from mlcanary.rollout.status import read_status
from mlcanary.rollout.tags import REJECTED
from mlcanary.testing.fakes import FakeWorld, steady_traffic

POLICY = RolloutPolicy(
    steps=[20, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="2h",
    tick_interval="5m",
    min_samples_per_arm=100,
    shadow=ShadowPolicy(enabled=True, duration="10m", min_samples=100, share=0.5),
)
TICK = timedelta(minutes=5)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[ReleaseEvent, str]] = []

    def notify(self, release: object, event: ReleaseEvent, detail: str) -> None:
        self.events.append((event, detail))


def start(world: FakeWorld) -> RolloutEngine:
    engine = world.make_engine()
    engine.start_canary("fraud", "2")
    return engine


def test_release_starts_in_shadow_with_no_user_on_the_candidate() -> None:
    world = FakeWorld(POLICY)
    start(world)
    release = world.release()
    assert release is not None
    assert release.phase == Phase.SHADOWING
    assert release.traffic == 0
    status = world.backend.status("fraud")
    assert status.traffic == {"champion": 100, "candidate": 0}
    assert status.shadow == 0.5
    assert world.backend.calls[-1] == "set_shadow"


def test_good_candidate_moves_on_to_the_first_canary_step() -> None:
    world = FakeWorld(POLICY)
    world.metrics = steady_traffic(0.01, shadow_share=0.5)
    engine = start(world)
    actions = []
    for _ in range(6):
        world.clock.advance(TICK)
        result = engine.tick("fraud")
        actions.append(result.decision.action if result.decision else None)
        if result.release.phase == Phase.PROGRESSING:
            break
    assert actions[-1] == "step_up"
    assert "hold" in actions[:-1]
    release = world.release()
    assert release is not None
    assert (release.phase, release.step_index, release.traffic) == (Phase.PROGRESSING, 0, 20)
    assert release.step_started_at == world.clock.now()
    status = world.backend.status("fraud")
    assert status.traffic == {"champion": 80, "candidate": 20}
    assert status.shadow == 0.0
    # The canary goes on from there: its next decision is about step 1 of 2.
    world.clock.advance(TICK)
    decision = engine.tick("fraud").decision
    assert decision is not None
    assert "baking step 1 of 2 at 20 %" in decision.reason


def test_label_flip_is_rejected_in_shadow_and_never_served() -> None:
    recorder = Recorder()
    world = FakeWorld(POLICY, notifier=recorder)
    world.metrics = steady_traffic(0.01, shadow_share=0.5, shadow_agreement=0.02)
    engine = start(world)
    served = []
    for _ in range(4):
        world.clock.advance(TICK)
        result = engine.tick("fraud")
        served.append(world.backend.status("fraud").candidate_percent)
        if result.release.phase.terminal:
            break
    release = world.release()
    assert release is not None
    assert release.phase == Phase.ROLLED_BACK
    assert "rejected in shadow" in (release.reason or "")
    assert "agreement" in (release.reason or "")
    assert set(served) == {0}
    assert "set_traffic" not in world.backend.calls  # no user was ever sent to it
    info = world.registry.get_version("fraud", "2")
    assert "rejected in shadow" in (info.tag(REJECTED) or "")
    assert CANDIDATE not in world.registry.aliases("fraud")
    assert world.backend.status("fraud").shadow == 0.0
    assert [e for e, _ in recorder.events] == [ReleaseEvent.CANARY_STARTED, ReleaseEvent.ROLLED_BACK]
    assert "in shadow" in recorder.events[0][1]


def test_shadow_off_starts_at_the_first_step() -> None:
    world = FakeWorld(POLICY.model_copy(update={"shadow": ShadowPolicy()}))
    start(world)
    release = world.release()
    assert release is not None
    assert release.phase == Phase.PROGRESSING
    assert release.traffic == 20
    assert "set_shadow" not in world.backend.calls


def test_manual_rollback_and_promote_from_shadow() -> None:
    world = FakeWorld(POLICY)
    engine = start(world)
    assert engine.rollback("fraud").phase == Phase.ROLLED_BACK
    assert world.backend.status("fraud").shadow == 0.0

    world = FakeWorld(POLICY)
    engine = start(world)
    assert engine.promote("fraud").phase == Phase.PROMOTED
    assert world.backend.status("fraud").arms["champion"].version == "2"


def test_status_shows_the_shadow_phase_with_the_mirrored_share_and_paired_counts() -> None:
    world = FakeWorld(
        POLICY.model_copy(update={"shadow": ShadowPolicy(enabled=True, duration="1h", share=0.5)})
    )
    world.metrics = steady_traffic(0.01, shadow_share=0.5)
    engine = start(world)
    world.clock.advance(TICK)
    assert engine.tick("fraud").decision.action == "hold"  # type: ignore[union-attr]
    observed = world.backend.status("fraud")
    status = read_status(world.registry, "fraud", mirrored_share=observed.shadow)
    assert status.phase == "shadowing"
    assert status.shadow is not None
    payload = status.model_dump(mode="json")["shadow"]
    # 5 minutes at 20 requests/s, half of them mirrored.
    assert payload == {
        "mirrored_share": 0.5,
        "live": 6000,
        "mirrored": 3000,
        "pairs": 3000,
        "agreement": 0.995,
    }
    world.clock.advance(timedelta(hours=1))
    engine.tick("fraud")
    assert read_status(world.registry, "fraud").shadow is None  # on to the canary
