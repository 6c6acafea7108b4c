"""`mlcanary approve` / `reject`: answering the approval gate from a shell (engine on fakes)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from typer.testing import CliRunner

import mlcanary.cli.rollout_commands as rollout_commands
from mlcanary.cli.main import app
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.policy import ApprovalPolicy, RolloutPolicy
from mlcanary.rollout.state import Phase
from mlcanary.rollout.tags import release_from_tags
from mlcanary.testing.fakes import FakeClock, FakeWorld

POLICY = RolloutPolicy(
    steps=[20],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="6h",
    tick_interval="5m",
    min_samples_per_arm=100,
    approval=ApprovalPolicy(required=True, timeout="4h"),
)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> RolloutEngine:
    made = FakeWorld(POLICY).make_engine()
    monkeypatch.setattr(rollout_commands, "engine_for", lambda _settings: made)
    return made


def _to_waiting(engine: RolloutEngine) -> None:
    engine.start_canary("fraud", "2")
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    for _ in range(20):
        clock.advance(timedelta(minutes=5))
        if engine.tick("fraud").release.phase == Phase.AWAITING_APPROVAL:
            return
    raise AssertionError("never reached awaiting_approval")


def _phase(engine: RolloutEngine) -> Phase:
    state = release_from_tags("fraud", "2", dict(engine.registry.get_version("fraud", "2").tags))
    assert state is not None
    return state.phase


def test_approve_promotes_and_prints_the_reason(engine: RolloutEngine) -> None:
    _to_waiting(engine)
    result = CliRunner().invoke(app, ["approve", "fraud", "--comment", "ship it", "--approver", "ops"])
    assert result.exit_code == 0, result.output
    assert "approved by ops at the approval gate: ship it" in result.output
    assert _phase(engine) == Phase.PROMOTED
    assert engine.registry.aliases("fraud") == {CHAMPION: "2"}


def test_reject_rolls_back(engine: RolloutEngine) -> None:
    _to_waiting(engine)
    result = CliRunner().invoke(app, ["reject", "fraud", "--comment", "not this week"])
    assert result.exit_code == 0, result.output
    assert "rolled back" in result.output
    assert _phase(engine) == Phase.ROLLED_BACK
    assert engine.registry.aliases("fraud") == {CHAMPION: "1"}


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_an_answer_with_nothing_waiting_is_a_clear_error_and_changes_nothing(
    engine: RolloutEngine, command: str
) -> None:
    engine.start_canary("fraud", "2")
    result = CliRunner().invoke(app, [command, "fraud"])
    assert result.exit_code == 1
    assert "nothing waits for approval (the release is progressing)" in result.output
    assert "Traceback" not in result.output
    assert _phase(engine) == Phase.PROGRESSING
    assert engine.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}
