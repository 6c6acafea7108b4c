"""`mlcanary webhook` and `webhook register`: clear refusals without the secret, registration in
a real MLflow store."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcanary.cli.main import app

runner = CliRunner()


@pytest.fixture
def state(mlflow_state: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLCANARY_STATE_DIR", str(mlflow_state))
    monkeypatch.delenv("MLCANARY_WEBHOOK_SECRET", raising=False)
    return mlflow_state


@pytest.mark.parametrize("args", [["webhook"], ["webhook", "register"]])
def test_without_the_secret_the_commands_refuse_with_exit_2(state: Path, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "MLCANARY_WEBHOOK_SECRET" in result.output
    assert "Traceback" not in result.output


def test_register_creates_the_webhook_at_the_configured_receiver(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLCANARY_WEBHOOK_SECRET", "s-" + uuid.uuid4().hex)
    monkeypatch.setenv("MLCANARY_SERVING__WEBHOOK_PORT", "18095")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    result = runner.invoke(app, ["webhook", "register"])
    assert result.exit_code == 0, result.output
    match = re.search(r"MLflow webhook (\S+) → (\S+)", result.output)
    assert match is not None, result.output
    assert match.group(2) == "http://127.0.0.1:18095/webhook"
    uri = f"sqlite:///{(state / 'mlflow.db').resolve()}"
    hook = MlflowClient(tracking_uri=uri, registry_uri=uri).get_webhook(match.group(1))
    assert hook.url == "http://127.0.0.1:18095/webhook"
