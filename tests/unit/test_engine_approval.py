"""The approval gate in the engine: a release waits for a human, who approves or rejects; the
monitor keeps protecting it meanwhile; no answer follows the policy. Every test runs against the
in-memory serving backend and against the KServe backend on a fake Kubernetes API server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import NothingToDoError
from mlcanary.rollout.policy import ApprovalPolicy, RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.status import read_status
from mlcanary.rollout.tags import release_from_tags
from mlcanary.testing import fakes
from mlcanary.testing.fakes import FakeWorld, steady_traffic

TICK = timedelta(minutes=5)


@pytest.fixture(autouse=True, params=["memory", "kserve"])
def serving(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """FakeWorld builds its serving backend by this name: the KServe run swaps it in."""
    if request.param == "kserve":
        backend = request.getfixturevalue("kserve_backend")
        monkeypatch.setattr(fakes, "FakeServingBackend", lambda: backend)


def gated(on_timeout: str = "rollback", timeout: str = "1h") -> RolloutPolicy:
    return RolloutPolicy(
        steps=[20, 50],
        min_bake_per_step="10m",
        min_duration="30m",
        max_duration="6h",
        tick_interval="5m",
        min_samples_per_arm=100,
        approval=ApprovalPolicy(required=True, timeout=timeout, on_timeout=on_timeout),
    )


class Notes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def notify(self, release: ReleaseState, title: str, message: str) -> None:
        self.sent.append((title, release.phase.value, message))


class World(FakeWorld):
    def __init__(self, policy: RolloutPolicy, candidate_error_rate: float = 0.01) -> None:
        super().__init__(policy, candidate_error_rate=candidate_error_rate, notifier=Notes())
        self.notes: Notes = self.notifier  # type: ignore[assignment]
        self.engine = self.make_engine()

    def tick_until_waiting(self) -> ReleaseState:
        self.engine.start_canary("fraud", "2")
        for _ in range(40):
            self.clock.advance(TICK)
            result = self.engine.tick("fraud")
            if result.release.phase != Phase.PROGRESSING:
                return result.release
        raise AssertionError("the release never left progressing")


def test_a_release_ready_to_promote_waits_at_its_last_step_and_asks_a_human() -> None:
    world = World(gated())
    waiting = world.tick_until_waiting()
    assert waiting.phase == Phase.AWAITING_APPROVAL
    assert waiting.traffic == 50
    assert waiting.approval_requested_at == world.clock.now()
    assert world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}
    assert world.backend.status("fraud").traffic == {"champion": 50, "candidate": 50}
    assert [t for t, _, _ in world.notes.sent].count("approval requested") == 1
    # The waiting state survives in the registry tags, so any process resumes it.
    restored = release_from_tags("fraud", "2", dict(world.registry.get_version("fraud", "2").tags))
    assert restored == waiting
    # Further ticks hold, at the same traffic, and ask nobody again.
    world.clock.advance(TICK)
    result = world.engine.tick("fraud")
    assert result.decision is not None
    assert result.decision.action == "hold"
    assert "awaiting approval" in result.decision.reason
    assert result.release.phase == Phase.AWAITING_APPROVAL
    assert result.release.approval_requested_at == waiting.approval_requested_at
    assert [t for t, _, _ in world.notes.sent].count("approval requested") == 1


def test_approve_promotes_with_the_comment_as_reason() -> None:
    world = World(gated())
    world.tick_until_waiting()
    state = world.engine.approve("fraud", "numbers look fine", "alice")
    assert state.phase == Phase.PROMOTED
    assert state.reason == "approved by alice at the approval gate: numbers look fine"
    assert world.registry.aliases("fraud") == {CHAMPION: "2"}
    assert world.backend.status("fraud").arms["champion"].version == "2"
    assert world.notes.sent[-1][0] == "promoted"
    with pytest.raises(NothingToDoError, match="nothing waits for approval"):
        world.engine.approve("fraud")


def test_reject_rolls_back_and_tags_the_version() -> None:
    world = World(gated())
    world.tick_until_waiting()
    state = world.engine.reject("fraud", "the fraud team wants another week")
    assert state.phase == Phase.ROLLED_BACK
    assert world.registry.aliases("fraud") == {CHAMPION: "1"}
    assert world.backend.status("fraud").traffic == {"champion": 100, "candidate": 0}
    rejected = world.registry.get_version("fraud", "2").tag("rejected") or ""
    assert rejected == "rejected at the approval gate: the fraud team wants another week"
    assert world.notes.sent[-1][0] == "rolled back"


def test_an_answer_is_refused_while_nothing_waits() -> None:
    world = World(gated())
    world.engine.start_canary("fraud", "2")
    for answer in (world.engine.approve, world.engine.reject):
        with pytest.raises(NothingToDoError, match="the release is progressing"):
            answer("fraud")
    assert world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}


def test_a_critical_failure_while_waiting_still_rolls_back() -> None:
    world = World(gated(timeout="24h"))
    world.tick_until_waiting()
    world.metrics.script = steady_traffic(0.30).script
    for _ in range(20):
        world.clock.advance(TICK)
        result = world.engine.tick("fraud")
        if result.release.phase.terminal:
            break
    assert result.release.phase == Phase.ROLLED_BACK
    assert result.decision is not None
    assert "critical check failed" in result.decision.reason
    with pytest.raises(NothingToDoError):
        world.engine.approve("fraud", "too late")


@pytest.mark.parametrize(
    ("on_timeout", "phase", "champion"),
    [("rollback", Phase.ROLLED_BACK, "1"), ("promote", Phase.PROMOTED, "2")],
)
def test_no_answer_within_the_timeout_follows_the_policy(
    on_timeout: str, phase: Phase, champion: str
) -> None:
    world = World(gated(on_timeout=on_timeout, timeout="30m"))
    waiting = world.tick_until_waiting()
    assert waiting.approval_requested_at is not None
    for _ in range(20):
        world.clock.advance(TICK)
        result = world.engine.tick("fraud")
        if result.release.phase.terminal:
            break
    assert result.release.phase == phase
    assert world.clock.now() - waiting.approval_requested_at == timedelta(minutes=30)
    assert result.decision is not None
    assert "no approval within 30.0 min" in result.decision.reason
    assert world.registry.aliases("fraud")[CHAMPION] == champion


def test_manual_promote_or_rollback_still_works_while_waiting() -> None:
    world = World(gated())
    world.tick_until_waiting()
    assert world.engine.rollback("fraud", "changed my mind").phase == Phase.ROLLED_BACK


def test_status_shows_the_wait_then_the_answer() -> None:
    world = World(gated())
    waiting = world.tick_until_waiting()
    status = read_status(world.registry, "fraud")
    assert status.phase == "awaiting_approval"
    assert status.approval_requested_at == (
        waiting.approval_requested_at.isoformat() if waiting.approval_requested_at else ""
    )
    assert status.last_decision is not None
    assert status.last_decision.action == "await_approval"
    world.engine.approve("fraud")
    status = read_status(world.registry, "fraud")
    assert status.phase == "promoted"
    assert status.champion_version == "2"
