"""The long-running commands as a user runs them: `mlcanary collector` and `mlcanary webhook`, each
a real process on free ports, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from http_inbox import Inbox

from mlcanary.config import load_settings
from mlcanary.runtime.processes import wait_for_http
from mlcanary.telemetry.store import InferenceLogStore
from mlcanary.testing.ports import free_port_env
from mlcanary.triggers.prefect_events import CANDIDATE_SET_EVENT
from mlcanary.triggers.signature import sign

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def command_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCANARY_", "PREFECT_"))}
    return env | free_port_env() | {"MLCANARY_STATE_DIR": str(state_dir)} | extra


@contextmanager
def mlcanary(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m mlcanary.cli <args>`` running until the block ends, then SIGTERM."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlcanary.cli", *args], cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            raise


def test_collector_serves_on_the_configured_port_and_writes_the_configured_store(tmp_path: Path) -> None:
    env = command_env(tmp_path / "state")
    settings = load_settings("local", env=env)
    url = settings.serving.collector_url
    with mlcanary(["collector"], env, tmp_path / "collector.log") as process:
        wait_for_http(url + "/healthz", timeout_s=60)
        answer = httpx.post(url + "/feedback", json=[{"request_id": "r-1", "label": 1}], timeout=10)
        assert answer.status_code == 200, answer.text
        assert process.poll() is None
    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "collector.log").read_text()
    assert settings.store_url.endswith(str(tmp_path / "state" / "inference.db"))
    with InferenceLogStore(settings.store_url) as store, store.engine.connect() as connection:
        labels = connection.exec_driver_sql("SELECT request_id, label FROM feedback").all()
    assert [tuple(row) for row in labels] == [("r-1", 1)]


def test_webhook_forwards_a_signed_candidate_event_to_prefect(tmp_path: Path, inbox: Inbox) -> None:
    secret = uuid.uuid4().hex
    env = command_env(
        tmp_path / "state", MLCANARY_WEBHOOK_SECRET=secret, PREFECT_API_URL=f"http://{inbox.base}/api"
    )
    settings = load_settings("local", env=env)
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2027-01-15T08:00:00+00:00",
            "data": {"name": "churn", "alias": "candidate", "version": "7"},
        }
    ).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(secret, delivery, stamp, body),
    }
    with mlcanary(["webhook"], env, tmp_path / "webhook.log"):
        wait_for_http(settings.serving.url(settings.serving.webhook_port) + "/healthz", timeout_s=60)
        answer = httpx.post(settings.serving.webhook_url, content=body, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "emitted"
    (event,) = inbox.at("/api/events")
    assert event[0]["event"] == CANDIDATE_SET_EVENT  # type: ignore[index]
    assert event[0]["payload"]["version"] == "7"  # type: ignore[index]
    assert secret not in (tmp_path / "webhook.log").read_text()
    assert (tmp_path / "state" / "webhook-deliveries.db").is_file()
