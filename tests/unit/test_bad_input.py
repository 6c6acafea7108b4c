"""Bad input from a user (issue 14, item 9): config files, environment overrides and command-line
arguments → one clear line, exit 2 (1 for a corrupted release tag), no traceback; a corrupted state
tag in the registry → an error naming the tag, and nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import mlcanary.cli.rollout_commands as rollout_commands
from mlcanary.cli.main import app
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.tags import CorruptTagError, release_from_tags
from mlcanary.testing.fakes import FakeWorld

runner = CliRunner()


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("training: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("nonsense_key: 1\n", "nonsense_key"),
        ("serving:\n  front_door_prot: 8080\n", "serving.front_door_prot"),
        ("serving:\n  front_door_port: abc\n", "serving.front_door_port"),
        ("serving:\n  front_door_port: 70000\n", "serving.front_door_port"),
        ("serving:\n  front_door_port: 8080\n  collector_port: 8080\n", "both 8080"),
        ("rollout:\n  tick_interval: soon\n", "rollout.tick_interval"),
        ("rollout:\n  steps: [50, 20]\n", "rollout.steps"),
        ("lease:\n  ttl: 0s\n", "lease"),
        ("model:\n  name: 'bad name!'\n", "model.name"),
        ("extends: bad.yaml\n", "cycle"),
        ("telemetry:\n  store_url: 12\n  sources: {nope: store}\n", "telemetry"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = runner.invoke(app, ["--config", str(bad), "config"])
    assert result.exit_code == 2, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert str(bad) in lines[0]
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--config", str(tmp_path / "nope.yaml"), "config"])
    assert result.exit_code == 2
    assert _error_lines(result.output) == [f"error: {tmp_path / 'nope.yaml'}: config file not found"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MLCANARY_SERVING__FRONT_DOOR_PORT", "abc", "serving.front_door_port"),
        ("MLCANARY_ROLLOUT__MIN_SAMPLES_PER_ARM", "-3", "rollout.min_samples_per_arm"),
        ("MLCANARY_NO_SUCH_SECTION__X", "1", "MLCANARY_NO_SUCH_SECTION__X"),
        ("MLCANARY_PROFILE", "nope", "nope"),
    ],
)
def test_a_bad_environment_override_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1, result.output
    assert expected in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["step", "--no-such-option"], "No such option"),
        (["traffic", "--rps", "fast"], "Invalid value"),
        (["traffic", "--duration"], "requires an argument"),
        (["no-such-command"], "No such command"),
        (["--profile", "nope", "config"], "nope"),
    ],
)
def test_bad_arguments_exit_2_with_the_problem_and_no_traceback(argv: list[str], expected: str) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


# -- a corrupted release tag -------------------------------------------------------------------

POLICY = RolloutPolicy(
    steps=[20, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="6h",
    tick_interval="5m",
    min_samples_per_arm=100,
)

CORRUPTIONS = [
    ("mlcanary.phase", "exploded"),
    ("mlcanary.traffic", "half"),
    ("mlcanary.traffic", "250"),
    ("mlcanary.step_index", "-1"),
    ("mlcanary.ticks", "1e3"),
    ("mlcanary.started_at", "yesterday"),
    ("mlcanary.step_started_at", "2026-13-45"),
    ("mlcanary.approval_requested_at", "soon"),
]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    world = FakeWorld(POLICY)
    world.registry.set_alias("fraud", CANDIDATE, "2")
    world.make_engine().start_canary("fraud", "2")
    monkeypatch.setattr(rollout_commands, "engine_for", world.make_engine)
    return world


@pytest.mark.parametrize(("tag", "value"), CORRUPTIONS)
def test_the_codec_names_the_corrupted_tag(tag: str, value: str) -> None:
    good = {"mlcanary.phase": "progressing", "mlcanary.started_at": "2026-01-01T00:00:00+00:00"}
    with pytest.raises(CorruptTagError) as raised:
        release_from_tags("fraud", "2", {**good, tag: value})
    assert f"fraud v2: tag {tag} is {value!r}, not " in str(raised.value)


@pytest.mark.parametrize("command", ["step", "promote", "rollback"])
@pytest.mark.parametrize(("tag", "value"), CORRUPTIONS[:3])
def test_a_corrupted_tag_stops_every_action_with_its_name_and_changes_nothing(
    world: FakeWorld, command: str, tag: str, value: str
) -> None:
    world.registry.set_tags("fraud", "2", {tag: value})
    tags_before = dict(world.registry.get_version("fraud", "2").tags)
    serving_before = world.backend.status("fraud")
    calls_before = len(world.backend.calls)
    result = runner.invoke(app, [command, "fraud"])
    assert result.exit_code == 1, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: fraud v2: tag {tag} is {value!r}, not ")
    assert "nothing was changed" in lines[0]
    assert dict(world.registry.get_version("fraud", "2").tags) == tags_before
    assert world.registry.aliases("fraud") == {CHAMPION: "1", CANDIDATE: "2"}
    assert world.backend.status("fraud") == serving_before
    assert len(world.backend.calls) == calls_before
