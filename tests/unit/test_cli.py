"""The command line: exit codes, JSON contract, clear errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcanary.cli.main import app

runner = CliRunner()


@pytest.fixture
def cli_env(mlflow_state: Path, make_settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing the CLI at the session's MLflow store with this test's model name."""
    name = make_settings().model.name
    env = {
        "MLCANARY_STATE_DIR": str(mlflow_state),
        "MLCANARY_MODEL__NAME": name,
        "MLCANARY_MODEL__ESTIMATOR": "logistic_regression",
        "MLCANARY_DATA__SYNTHETIC__ROWS": "2000",
        "MLCANARY_TRAINING__REFERENCE_ROWS": "300",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_help_lists_commands_and_explains_options() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "status", "demo", "config"):
        assert command in result.output
    train_help = runner.invoke(app, ["train", "--help"])
    assert train_help.exit_code == 0
    assert "--data" in train_help.output
    assert "CSV or Parquet" in train_help.output


def test_train_then_status_json_contract(cli_env: dict[str, str]) -> None:
    first = runner.invoke(app, ["train", "--json"])
    assert first.exit_code == 0, first.output
    outcome = json.loads(first.stdout)
    assert outcome["alias"] == "champion"
    assert outcome["version"] == "1"

    second = runner.invoke(app, ["train", "--json", "--seed", "3"])
    assert second.exit_code == 0, second.output

    status = runner.invoke(app, ["status", cli_env["MLCANARY_MODEL__NAME"], "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    for key in ("phase", "champion_version", "candidate_version", "traffic", "last_decision"):
        assert key in data
    assert data["champion_version"] == "1"
    assert data["candidate_version"] in ("2", None)  # the gate decides; either way it is reported
    assert data["traffic"] is None


def test_human_readable_train_and_status(cli_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 0, result.output
    assert "@champion" in result.output
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "champion: v1" in status.output
    assert "not serving" in status.output


def test_status_of_unknown_model_is_a_clear_error(cli_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["status", "no-such-model", "--json"])
    assert result.exit_code == 1
    assert "no-such-model" in result.output
    assert "not registered" in result.output
    assert "Traceback" not in result.output


def test_bad_config_names_file_field_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  test_size: 1.5\n")
    result = runner.invoke(app, ["--config", str(bad), "status"])
    assert result.exit_code == 2
    assert str(bad) in result.output
    assert "training.test_size" in result.output
    assert "Traceback" not in result.output


def test_missing_data_file_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1
    assert "nope.csv" in result.output
    assert "not found" in result.output


def test_bad_option_value_names_the_option(cli_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["train", "--fraud-rate", "2"])
    assert result.exit_code == 2
    assert "data.synthetic.fraud_rate" in result.output


def test_config_prints_effective_settings(cli_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"]["name"] == cli_env["MLCANARY_MODEL__NAME"]
    assert data["data"]["synthetic"]["rows"] == 2000
