"""`mlcanary release`, `step`, `promote` and `rollback` from a shell: the engine on in-memory fakes,
driven through the real command line (options, output, exit codes)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

import mlcanary.cli.rollout_commands as rollout_commands
from mlcanary.cli.main import app
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import Phase
from mlcanary.testing.fakes import FakeClock, FakeWorld

POLICY = RolloutPolicy(
    steps=[20, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="6h",
    tick_interval="5m",
    min_samples_per_arm=100,
)
runner = CliRunner()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    world = FakeWorld(POLICY)
    monkeypatch.setattr(rollout_commands, "engine_for", world.make_engine)
    return world


def phase(world: FakeWorld, version: str = "2") -> Phase:
    state = world.release(version)
    assert state is not None
    return state.phase


def test_release_without_a_candidate_is_a_clear_error(world: FakeWorld) -> None:
    result = runner.invoke(app, ["release", "fraud"])
    assert result.exit_code == 1
    assert "fraud has no @candidate: train one or pass --version" in result.output
    assert "Traceback" not in result.output
    assert world.release() is None


def test_release_canaries_the_candidate_at_the_first_step(world: FakeWorld) -> None:
    world.registry.set_alias("fraud", CANDIDATE, "2")
    result = runner.invoke(app, ["release", "fraud"])
    assert result.exit_code == 0, result.output
    assert "fraud v2: progressing at 20 % beside champion v1" in result.output
    assert world.backend.status("fraud").traffic == {"champion": 80, "candidate": 20}


def test_release_of_a_named_version_and_a_second_release_refused(world: FakeWorld) -> None:
    assert runner.invoke(app, ["release", "fraud", "--version", "2"]).exit_code == 0
    assert world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}
    world.registry.add_version("fraud")
    again = runner.invoke(app, ["release", "fraud", "--version", "3"])
    assert again.exit_code == 1
    assert "a release of version 2 is progressing" in again.output


def test_step_prints_the_decision_and_its_check_table(world: FakeWorld) -> None:
    runner.invoke(app, ["release", "fraud", "--version", "2"])
    clock = world.clock
    assert isinstance(clock, FakeClock)
    clock.advance(timedelta(minutes=12))
    result = runner.invoke(app, ["step", "fraud"])
    assert result.exit_code == 0, result.output
    assert "step_up: step 1 healthy: 20 % → 50 %" in result.output
    for column in ("check", "verdict", "champion", "candidate", "requirement"):
        assert column in result.output
    assert "error_rate ⚑" in result.output
    assert "a burst is at least 5" in result.output  # the requirement, wrapped to fit
    assert "phase: progressing, candidate traffic 50 %" in result.output


def test_step_as_json_and_with_nothing_to_do(world: FakeWorld) -> None:
    runner.invoke(app, ["release", "fraud", "--version", "2"])
    world.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    result = runner.invoke(app, ["step", "fraud", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["phase"] == "progressing"
    assert payload["decision"]["action"] == "hold"
    assert {check["name"] for check in payload["decision"]["checks"]} >= {"error_rate", "latency"}
    runner.invoke(app, ["rollback", "fraud"])
    nothing = runner.invoke(app, ["step", "fraud"])
    assert nothing.exit_code == 1
    assert "fraud: no release in progress" in nothing.output


def test_promote_by_hand_moves_champion_and_records_the_reason(world: FakeWorld) -> None:
    runner.invoke(app, ["release", "fraud", "--version", "2"])
    result = runner.invoke(app, ["promote", "fraud", "--reason", "the business asked"])
    assert result.exit_code == 0, result.output
    assert "fraud v2 is @champion: the business asked" in result.output
    assert phase(world) == Phase.PROMOTED
    assert world.registry.aliases("fraud") == {CHAMPION: "2"}
    assert world.backend.status("fraud").traffic == {"champion": 100, "candidate": 0}


def test_rollback_by_hand_rejects_the_version(world: FakeWorld) -> None:
    runner.invoke(app, ["release", "fraud", "--version", "2"])
    result = runner.invoke(app, ["rollback", "fraud", "--reason", "smells funny"])
    assert result.exit_code == 0, result.output
    assert "fraud v2 rolled back: smells funny" in result.output
    assert phase(world) == Phase.ROLLED_BACK
    assert world.registry.get_version("fraud", "2").tag("rejected") == "smells funny"
    assert world.registry.aliases("fraud") == {CHAMPION: "1"}


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_manual_actions_without_a_release_are_clear_errors(world: FakeWorld, command: str) -> None:
    result = runner.invoke(app, [command, "fraud"])
    assert result.exit_code == 1
    assert "no release in progress" in result.output
    assert "Traceback" not in result.output
    assert world.registry.aliases("fraud") == {CHAMPION: "1"}
