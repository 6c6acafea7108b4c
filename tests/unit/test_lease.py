"""The release lease (issue 14, item 6): two runs at once → exactly one acts, the other yields.

Real stores: the lease in a real inference-log database — every test that touches it runs on a
SQLite file and on a real PostgreSQL (``store_url``, ``tests/pg_server.py``) — and the release on a
real MLflow SQLite registry; two real engines tick the same release from two threads at once, and
many runs race for one lease on each database. A holder that crashes (its process SIGKILLed inside
the block) blocks the model only until its lease expires.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

import mlcanary.cli.rollout_commands as rollout_commands
from mlcanary.cli.main import app
from mlcanary.registry.mlflow_registry import MlflowRegistry
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.lease import LeaseHeldError
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.tags import release_from_tags
from mlcanary.telemetry.lease import StoreLease
from mlcanary.testing.fakes import FakeClock, FakeServingBackend, FakeWorld, steady_traffic

POLICY = RolloutPolicy(
    steps=[20, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="6h",
    tick_interval="5m",
    min_samples_per_arm=100,
)
TICK = timedelta(minutes=5)


@pytest.fixture
def db(store_url: str) -> str:
    """The lease's database: a SQLite file, then a real PostgreSQL (the ``store_url`` cases)."""
    return store_url


CONTENDERS = 8


def _race(leases: list[StoreLease], model: str) -> tuple[list[str], list[LeaseHeldError]]:
    """Every lease object (its own engine and connections, as a separate runner has) tries to take
    ``model`` at the same instant; returns who won and what the others were told."""
    start = threading.Barrier(len(leases))
    won: list[str] = []
    lost: list[LeaseHeldError] = []

    def race(lease: StoreLease, holder: str) -> None:
        start.wait()
        try:
            lease.acquire(model, holder)
            won.append(holder)
        except LeaseHeldError as held:
            lost.append(held)

    threads = [threading.Thread(target=race, args=(lease, f"run-{i}")) for i, lease in enumerate(leases)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return won, lost


def test_of_many_runs_racing_for_one_lease_exactly_one_gets_it(db: str) -> None:
    clock = FakeClock(datetime.now(tz=UTC))
    leases = [StoreLease.from_url(db, ttl=timedelta(minutes=2), now=clock.now) for _ in range(CONTENDERS)]
    # A free lease (no row yet: the INSERT path) ...
    won, lost = _race(leases, "fraud")
    assert len(won) == 1, (won, lost)
    assert len(lost) == CONTENDERS - 1
    assert {held.holder for held in lost} == set(won)
    assert leases[0].holder_of("fraud") == (won[0], clock.now() + timedelta(minutes=2))

    # ... and an expired one (its row taken over: the ON CONFLICT ... WHERE expired path).
    clock.advance(timedelta(minutes=3))
    won_again, lost_again = _race(leases, "fraud")
    assert len(won_again) == 1, (won_again, lost_again)
    assert len(lost_again) == CONTENDERS - 1
    assert {held.holder for held in lost_again} == set(won_again)
    holder = leases[-1].holder_of("fraud")
    assert holder == (won_again[0], clock.now() + timedelta(minutes=2))


def test_the_lease_is_renewed_by_its_holder_released_on_exit_and_per_model(db: str) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    lease = StoreLease.from_url(db, ttl=timedelta(minutes=2), now=clock.now)
    until = lease.acquire("fraud", "a")
    assert until == clock.now() + timedelta(minutes=2)
    assert lease.acquire("fraud", "a") == until  # the holder may take it again (extend)
    lease.acquire("churn", "b")  # another model is another lease
    with pytest.raises(
        LeaseHeldError, match=r"^yielded: a holds the lease on fraud until 2026-01-01 00:02:00 UTC$"
    ):
        lease.acquire("fraud", "b")
    clock.advance(timedelta(minutes=1))
    assert lease.renew("fraud", "a")
    assert not lease.renew("fraud", "b")
    lease.release("fraud", "b")  # not b's to release: nothing happens
    assert lease.holder_of("fraud") == ("a", clock.now() + timedelta(minutes=2))
    lease.release("fraud", "a")
    assert lease.holder_of("fraud") is None
    lease.acquire("fraud", "b")

    with lease.hold("other"):
        holder = lease.holder_of("other")
        assert holder is not None
        assert holder[0].startswith("mlcanary on ")
    assert lease.holder_of("other") is None  # released on exit


def test_a_lease_is_released_when_the_block_raises(db: str) -> None:
    lease = StoreLease.from_url(db)
    with pytest.raises(RuntimeError, match="crash"), lease.hold("fraud"):
        raise RuntimeError("crash")
    assert lease.holder_of("fraud") is None


def test_bad_lease_bounds_are_refused(db: str) -> None:
    with pytest.raises(ValueError, match="ttl > 0"):
        StoreLease.from_url(db, ttl=timedelta(0))
    with pytest.raises(ValueError, match="max_hold >= ttl"):
        StoreLease.from_url(db, ttl=timedelta(minutes=5), max_hold=timedelta(minutes=1))


# -- two real engines on the real MLflow registry ------------------------------------------------


def _two_versions(registry: MlflowRegistry, name: str) -> None:
    client = registry.client
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source="file:///nonexistent/model", run_id=None)
    registry.set_alias(name, CHAMPION, "1")
    registry.set_alias(name, CANDIDATE, "2")


class _SlowMetrics:
    """Steady traffic whose ``measure`` blocks until told to go on: a tick that is still running
    when the other run arrives."""

    def __init__(self) -> None:
        self.inner = steady_traffic(0.01)
        self.entered = threading.Event()
        self.go_on = threading.Event()
        self.calls = 0

    def measure(self, release: ReleaseState, *, window_start: datetime, now: datetime) -> Measurements:
        self.calls += 1
        self.entered.set()
        assert self.go_on.wait(20), "the other run never finished"
        return self.inner.measure(release, window_start=window_start, now=now)


def test_two_engines_ticking_one_release_at_once_one_acts_the_other_yields(
    registry: MlflowRegistry, db: str
) -> None:
    name = f"lease-{uuid.uuid4().hex[:8]}"
    _two_versions(registry, name)
    clock = FakeClock()
    backend = FakeServingBackend()
    metrics = _SlowMetrics()

    def engine(label: str) -> RolloutEngine:
        return RolloutEngine(
            registry=registry,
            backend=backend,
            metrics=metrics,
            policy=POLICY,
            clock=clock,
            lease=StoreLease.from_url(db, label=label),
        )

    assert engine("starter").start_canary(name, "2").phase == Phase.PROGRESSING
    clock.advance(TICK)
    outcomes: dict[str, object] = {}
    start = threading.Barrier(2)

    def run(label: str) -> None:
        start.wait()
        try:
            outcomes[label] = engine(label).tick(name)
        except LeaseHeldError as held:
            outcomes[label] = held
            metrics.go_on.set()  # the yielding run is done: let the acting one finish

    threads = [threading.Thread(target=run, args=(label,)) for label in ("worker-a", "worker-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    yielded = {label: o for label, o in outcomes.items() if isinstance(o, LeaseHeldError)}
    acted = {label: o for label, o in outcomes.items() if not isinstance(o, LeaseHeldError)}
    assert len(yielded) == 1, outcomes
    assert len(acted) == 1, outcomes
    (winner,) = acted
    (held,) = yielded.values()
    assert held.holder.startswith(f"{winner} on ")
    assert str(held).startswith(f"yielded: {winner} on ")
    assert metrics.calls == 1  # the yielding run measured nothing
    state = release_from_tags(name, "2", registry.get_version(name, "2").tags)
    assert state is not None
    assert state.ticks == 1  # one tick recorded in the registry, not two
    assert registry.get_version(name, "2").tag("last_decision") is not None
    # The lease was released when the acting tick ended: the next tick acts.
    clock.advance(TICK)
    metrics.go_on.set()
    assert engine("next").tick(name).release.ticks == 2


_CRASHING_HOLDER = """
import os, signal, sys
from datetime import timedelta
from mlcanary.telemetry.lease import StoreLease
lease = StoreLease.from_url(sys.argv[1], label="crashed-monitor", ttl=timedelta(seconds=60))
with lease.hold(sys.argv[2]):
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_crashed_holders_lease_expires_and_the_next_run_acts(registry: MlflowRegistry, db: str) -> None:
    name = f"crash-{uuid.uuid4().hex[:8]}"
    _two_versions(registry, name)
    world_clock = FakeClock()
    lease_clock = FakeClock(datetime.now(tz=UTC))
    engine = RolloutEngine(
        registry=registry,
        backend=FakeServingBackend(),
        metrics=steady_traffic(0.01),
        policy=POLICY,
        clock=world_clock,
        lease=StoreLease.from_url(db, label="next-monitor", ttl=timedelta(seconds=60), now=lease_clock.now),
    )
    engine.start_canary(name, "2")
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_HOLDER, db, name], capture_output=True, text=True, timeout=60
    )
    assert crashed.returncode == -9, crashed.stderr
    assert crashed.stdout.strip() == "holding"

    world_clock.advance(TICK)
    with pytest.raises(LeaseHeldError, match=r"^yielded: crashed-monitor on .* holds the lease on ") as held:
        engine.tick(name)
    assert release_from_tags(name, "2", registry.get_version(name, "2").tags).ticks == 0  # type: ignore[union-attr]

    lease_clock.current = held.value.until + timedelta(seconds=1)  # the crashed holder's lease expired
    assert engine.tick(name).release.ticks == 1


# -- what a user sees ----------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def held_world(monkeypatch: pytest.MonkeyPatch, db: str) -> FakeWorld:
    """A release in progress on fakes whose lease another run holds."""
    world = FakeWorld(POLICY)
    world.registry.set_alias("fraud", CANDIDATE, "2")
    world.make_engine().start_canary("fraud", "2")
    world.lease = StoreLease.from_url(db, label="mlcanary command line")
    world.lease.acquire("fraud", "Prefect flow run brave-otter")
    world.clock.advance(TICK)
    monkeypatch.setattr(rollout_commands, "engine_for", world.make_engine)
    return world


def test_step_yields_with_one_line_and_exit_0(held_world: FakeWorld) -> None:
    result = runner.invoke(app, ["step", "fraud"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("yielded: Prefect flow run brave-otter holds the lease on fraud until ")
    assert len(result.output.strip().splitlines()) == 1
    as_json = json.loads(runner.invoke(app, ["step", "fraud", "--json"]).output)
    assert as_json["holder"] == "Prefect flow run brave-otter"
    assert held_world.release().ticks == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_manual_action_yields_with_exit_1_and_changes_nothing(held_world: FakeWorld, command: str) -> None:
    result = runner.invoke(app, [command, "fraud"])
    assert result.exit_code == 1
    assert "yielded: Prefect flow run brave-otter holds the lease on fraud until " in result.output
    assert "error" not in result.output
    assert "Traceback" not in result.output
    assert held_world.release().phase == Phase.PROGRESSING  # type: ignore[union-attr]
    assert held_world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}


def test_an_unreachable_lease_store_stops_every_action_but_a_rollback(
    monkeypatch: pytest.MonkeyPatch, db: str
) -> None:
    from sqlalchemy.exc import OperationalError

    world = FakeWorld(POLICY)
    world.registry.set_alias("fraud", CANDIDATE, "2")
    world.make_engine().start_canary("fraud", "2")
    lease = StoreLease.from_url(db)

    def unreachable(model: str, holder: str) -> datetime:
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    monkeypatch.setattr(lease, "acquire", unreachable)
    world.lease = lease
    monkeypatch.setattr(rollout_commands, "engine_for", world.make_engine)
    world.clock.advance(TICK)
    for command in ("step", "promote"):
        result = runner.invoke(app, [command, "fraud"])
        assert result.exit_code == 1, result.output
        scheme = db.split("://")[0]
        assert (
            f"error: the release lease of fraud cannot be taken (OperationalError on {scheme}://"
            in result.output
        )
        assert "nothing was done" in result.output
    assert world.release().phase == Phase.PROGRESSING  # type: ignore[union-attr]
    assert world.release().ticks == 0  # type: ignore[union-attr]
    result = runner.invoke(app, ["rollback", "fraud"])
    assert result.exit_code == 0, result.output
    assert world.release().phase == Phase.ROLLED_BACK  # type: ignore[union-attr]
    assert world.backend.status("fraud").traffic == {"champion": 100, "candidate": 0}
