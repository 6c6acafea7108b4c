"""The stack commands end to end: `train`, `up`, `traffic`, `status`, `down` on free local ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcanary.cli.main import app
from mlcanary.testing.ports import PORT_SETTINGS, free_ports

pytestmark = pytest.mark.integration


def _env_name(dotted: str) -> str:
    return "MLCANARY_" + dotted.upper().replace(".", "__")


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "MLCANARY_STATE_DIR": str(tmp_path / "state"),
        "MLCANARY_MODEL__NAME": "cli-stack",
        "MLCANARY_MODEL__ESTIMATOR": "logistic_regression",
        "MLCANARY_DATA__SYNTHETIC__ROWS": "2000",
        "MLCANARY_TRAINING__REFERENCE_ROWS": "300",
    }
    env |= {
        _env_name(name): str(port)
        for name, port in zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)), strict=True)
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_up_traffic_status_down(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--json"])
    assert trained.exit_code == 0, trained.output
    try:
        started = runner.invoke(app, ["up"])
        assert started.exit_code == 0, started.output
        assert f"127.0.0.1:{cli_env['MLCANARY_SERVING__FRONT_DOOR_PORT']}" in started.output

        sent = runner.invoke(app, ["traffic", "--requests", "40", "--rps", "40", "--no-feedback", "--json"])
        assert sent.exit_code == 0, sent.output
        report = json.loads(sent.stdout)
        assert report["arms"]["champion"]["ok"] == 40

        status = runner.invoke(app, ["status", "--json"])
        assert status.exit_code == 0, status.output
        data = json.loads(status.stdout)
        assert data["traffic"] == {"champion": 100, "candidate": 0}
        assert data["champion_version"] == "1"
    finally:
        stopped = runner.invoke(app, ["down"])
    assert stopped.exit_code == 0, stopped.output
    assert "envoy" in stopped.output
    again = runner.invoke(app, ["down"])
    assert "nothing was running" in again.output
