"""The approval gate on Prefect's test harness: the monitor asks, ``approve-release`` pauses with a
form, and a resume with approve / reject (as the UI sends it) promotes or rolls back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
from prefect.flow_runs import resume_flow_run

import flows.approval as approval
import flows.canary as canary
import tasks.rollout as steps
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.policy import ApprovalPolicy, RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.testing.fakes import FakeWorld

pytestmark = pytest.mark.flows

POLICY = RolloutPolicy(
    steps=[10, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="6h",
    tick_interval="5m",
    min_samples_per_arm=100,
    approval=ApprovalPolicy(required=True, timeout="2h"),
)


class World(FakeWorld):
    def __init__(self) -> None:
        super().__init__(POLICY)
        self.events: list[tuple[ReleaseState, str, str | None]] = []

    def to_waiting(self) -> dict[str, Any]:
        canary.start_canary("fraud", "2")
        for _ in range(30):
            self.clock.advance(timedelta(minutes=5))
            (result,) = canary.monitor("fraud")
            if result["phase"] != "progressing":
                return result
        raise AssertionError("the release never left progressing")

    def phase(self) -> Phase:
        state = self.release()
        assert state is not None
        return state.phase


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    made = World()
    monkeypatch.setattr(canary, "engine_for", made.make_engine)
    monkeypatch.setattr(approval, "POLL_INTERVAL_S", 1)
    monkeypatch.setattr(
        steps,
        "emit_approval_requested",
        lambda release, profile, config: made.events.append((release, profile, config)),
    )
    return made


def _approval_run_ids() -> set[UUID]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["approve-release"])))
    return {run.id for run in runs}


def _wait_until_paused(known: set[UUID], timeout_s: float = 60) -> UUID:
    """The id of the new approve-release run once it is paused, waiting for input."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            for run_id in _approval_run_ids() - known:
                (run,) = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
                )
                if run.state is not None and run.state.is_paused():
                    return run.id
            time.sleep(0.2)
    raise TimeoutError("no approve-release run paused")


@pytest.fixture
def run_in_thread() -> Iterator[Callable[..., dict[str, Any]]]:
    """Start ``approve_release`` in a thread; calling the returned handle joins and returns its result."""
    threads: list[threading.Thread] = []

    def start(**kwargs: Any) -> Callable[[], dict[str, Any]]:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = approval.approve_release(**kwargs)
            except BaseException as exc:  # surfaced to the test below
                box["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        threads.append(thread)

        def join() -> dict[str, Any]:
            thread.join(timeout=120)
            assert not thread.is_alive(), "approve-release did not finish"
            if "error" in box:
                raise box["error"]
            return box["result"]

        return join

    yield start  # type: ignore[misc]
    for thread in threads:
        thread.join(timeout=5)


def test_the_monitor_asks_once_when_a_release_is_ready(world: World) -> None:
    result = world.to_waiting()
    assert result["phase"] == "awaiting_approval"
    assert result["action"] == "await_approval"
    assert result["traffic"] == 50
    assert [(r.model, r.candidate_version, p, c) for r, p, c in world.events] == [
        ("fraud", "2", "local", None)
    ]
    world.clock.advance(timedelta(minutes=5))
    (held,) = canary.monitor("fraud")
    assert held["action"] == "hold"
    assert held["phase"] == "awaiting_approval"
    assert len(world.events) == 1, "a release waiting already is not announced again"


@pytest.mark.parametrize(
    ("answer", "phase", "champion"),
    [
        ({"approve": True, "comment": "looks good", "approver": "alice"}, Phase.PROMOTED, "2"),
        ({"approve": False, "comment": "not before the holidays"}, Phase.ROLLED_BACK, "1"),
    ],
    ids=["approve", "reject"],
)
def test_the_paused_run_acts_on_the_answer_from_the_form(
    world: World, run_in_thread, answer: dict[str, Any], phase: Phase, champion: str
) -> None:  # type: ignore[no-untyped-def]
    world.to_waiting()
    known = _approval_run_ids()
    join = run_in_thread(model="fraud")
    run_id = _wait_until_paused(known)
    assert world.phase() == Phase.AWAITING_APPROVAL, "nothing happens before the answer"
    resume_flow_run(run_id, run_input=answer)
    result = join()
    assert result["answer"] == ("approve" if answer["approve"] else "reject")
    assert world.phase() == phase
    assert world.registry.aliases("fraud")[CHAMPION] == champion
    assert answer["comment"] in (result["reason"] or "")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).state.is_completed()


def test_a_resume_without_valid_input_is_refused_and_the_release_keeps_waiting(
    world: World, run_in_thread
) -> None:  # type: ignore[no-untyped-def]
    world.to_waiting()
    known = _approval_run_ids()
    join = run_in_thread(model="fraud")
    run_id = _wait_until_paused(known)
    with pytest.raises(RuntimeError, match="Cannot resume this run"):
        resume_flow_run(run_id, run_input={"approve": True, "comment": "x" * 501})
    assert world.phase() == Phase.AWAITING_APPROVAL
    resume_flow_run(run_id, run_input={"approve": False})
    assert join()["answer"] == "reject"
    assert world.phase() == Phase.ROLLED_BACK


def test_no_answer_within_the_window_follows_the_policy(world: World, run_in_thread, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(approval, "GRACE_S", 0)
    world.to_waiting()
    # Leave 3 s of the approval window, then let them pass while the run is paused.
    world.clock.advance(POLICY.approval.timeout - timedelta(seconds=3))
    known = _approval_run_ids()
    join = run_in_thread(model="fraud")
    run_id = _wait_until_paused(known)
    world.clock.advance(timedelta(seconds=5))
    result = join()
    assert result["answer"] == "timeout"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).state.is_completed()
    assert world.phase() == Phase.ROLLED_BACK
    assert "no approval within 2.0 h: policy says roll back" in (result["reason"] or "")


def test_nothing_waits_for_approval_so_the_run_ends_at_once(world: World) -> None:
    canary.start_canary("fraud", "2")
    result = approval.approve_release(model="fraud")
    assert result["answer"] is None
    assert "nothing waits for approval (the release is progressing)" in result["note"]
    assert world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}


def test_an_answer_after_the_monitor_rolled_back_changes_nothing(world: World, run_in_thread) -> None:  # type: ignore[no-untyped-def]
    world.to_waiting()
    known = _approval_run_ids()
    join = run_in_thread(model="fraud")
    run_id = _wait_until_paused(known)
    canary.rollback("fraud", reason="on-call rolled it back")
    resume_flow_run(run_id, run_input={"approve": True})
    result = join()
    assert result["answer"] == "approve"
    assert "nothing waits for approval" in result["note"]
    assert world.phase() == Phase.ROLLED_BACK
    assert world.registry.aliases("fraud") == {CHAMPION: "1"}


# -- another run holds the lease: the approval run yields as the monitor does ---------------------


def _lease_held_by_another_run(world: World, tmp_path: Path) -> None:
    from mlcanary.telemetry.lease import StoreLease

    lease = StoreLease.from_url(f"sqlite:///{tmp_path / 'inference.db'}", label="approve-release")
    lease.acquire("fraud", "Prefect flow run calm-heron")
    world.lease = lease


def test_an_answer_while_another_run_holds_the_lease_yields_and_changes_nothing(
    world: World, run_in_thread, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    world.to_waiting()
    _lease_held_by_another_run(world, tmp_path)
    known = _approval_run_ids()
    join = run_in_thread(model="fraud")
    run_id = _wait_until_paused(known)
    resume_flow_run(run_id, run_input={"approve": True, "comment": "looks good"})
    result = join()
    assert result["answer"] == "approve"
    assert result["yielded"].startswith("yielded: Prefect flow run calm-heron holds the lease on fraud")
    assert result["holder"] == "Prefect flow run calm-heron"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).state.is_completed(), "a yield is not a failure"
    assert world.phase() == Phase.AWAITING_APPROVAL
    assert world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}


def test_a_window_that_ended_while_another_run_holds_the_lease_yields_and_changes_nothing(
    world: World, tmp_path: Path
) -> None:
    world.to_waiting()
    world.clock.advance(POLICY.approval.timeout + timedelta(minutes=1))
    _lease_held_by_another_run(world, tmp_path)
    state = approval.approve_release(model="fraud", return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["answer"] == "timeout"
    assert result["yielded"].startswith("yielded: Prefect flow run calm-heron holds the lease on fraud")
    assert world.phase() == Phase.AWAITING_APPROVAL
    assert world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}
