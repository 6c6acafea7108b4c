"""End to end: @candidate set on a real `mlflow server` → signed webhook → our receiver → Prefect
event → the `start-canary` deployment's trigger creates a flow run with the model and version; the
monitor's approval-requested event → the `approve-release` trigger creates the approval run; and the
same deployments registered on a `kubernetes` work pool with `--pool`.

Real processes: `mlflow server` (SQLite) and `prefect server`, the deployments registered from this
repository's prefect.yaml with `prefect --no-prompt deploy`. No worker runs: the test asserts the
flow runs the triggers created, with their parameters.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from stack_helpers import REPO_ROOT, stack_settings
from tcp_link import TcpLink

from mlcanary.platform import (
    child_env,
    platform_settings,
    start_mlflow_server,
    start_prefect_server,
    stop_component,
    wait_healthy,
)
from mlcanary.platform.prefect_api import http_client
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.testing.ports import free_ports
from mlcanary.triggers.prefect_events import PrefectEventEmitter
from mlcanary.triggers.receiver import create_webhook_app
from mlcanary.triggers.registration import register_webhook
from tasks.rollout import approval_requested_event

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
SECRET = "test-secret-not-a-real-one"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict[str, str]]]:
    """The platform's own MLflow server (webhooks allowed to loopback, a stable Fernet key) and
    Prefect server (PREFECT_HOME in the state directory), on free ports; shared by this module's
    tests (each registers the deployments itself and looks only at the runs it caused)."""
    tmp_path = tmp_path_factory.mktemp("servers")
    mlflow_port, prefect_port, receiver_port = free_ports(3)
    settings = platform_settings(
        stack_settings(tmp_path, **{"serving.mlflow_port": mlflow_port, "serving.prefect_port": prefect_port})
    )
    env = child_env(settings)
    started = []
    try:
        started.append(start_prefect_server(settings, env=env, wait=False)[0])
        started.append(start_mlflow_server(settings, env=env, wait=False)[0])
        for process in started:
            wait_healthy(settings, process, timeout_s=120)
        yield (
            f"http://127.0.0.1:{mlflow_port}",
            f"http://127.0.0.1:{prefect_port}/api",
            env | {"RECEIVER_PORT": str(receiver_port)},
        )
    finally:
        for process in started:
            stop_component(process)


DEPLOYMENTS = {"train", "start-canary", "canary-monitor", "approve-release", "promote", "rollback"}


def _prefect(env: dict[str, str], *args: str) -> None:
    argv = [str(BIN / "prefect"), *args]
    done = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def _api(method: str, url: str, **options: Any) -> httpx.Response:
    """One call to the Prefect API, retried while it answers 503 (its SQLite store is busy)."""
    with http_client() as client:
        return client.request(method.upper(), url, **options)


def _runs_of(prefect_api: str, deployment: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    """The flow runs of ``deployment``, waiting up to ``timeout_s`` for the first one."""
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not runs:
        time.sleep(1)
        answer = _api(
            "post",
            f"{prefect_api}/flow_runs/filter",
            json={"deployments": {"name": {"any_": [deployment]}}},
            timeout=5,
        )
        runs = answer.json() if answer.status_code == 200 else []
    return runs


def test_deploy_all_then_setting_candidate_alias_starts_a_start_canary_run(servers) -> None:  # type: ignore[no-untyped-def]
    tracking_uri, prefect_api, env = servers
    _prefect(env, "work-pool", "create", "mlcanary-local", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")
    deployments = _api("post", f"{prefect_api}/deployments/filter", json={}, timeout=10).json()
    by_name = {d["name"]: d for d in deployments}
    assert set(by_name) == DEPLOYMENTS
    assert {d["work_pool_name"] for d in deployments} == {"mlcanary-local"}
    assert by_name["train"]["schedules"][0]["schedule"]["cron"] == "0 2 * * 1"
    assert by_name["canary-monitor"]["schedules"][0]["schedule"]["interval"] == 900
    for name in ("start-canary", "canary-monitor"):
        assert by_name[name]["global_concurrency_limit"]["limit"] == 1, name
    automations = _api("post", f"{prefect_api}/automations/filter", json={}, timeout=10).json()
    assert sorted(a["trigger"]["expect"] for a in automations) == [
        ["mlcanary.model.candidate-set"],
        ["mlcanary.release.approval-requested"],
    ]

    emitter = PrefectEventEmitter(prefect_api)
    app = create_webhook_app(secret=SECRET, emit=emitter)
    port = int(env["RECEIVER_PORT"])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        register_webhook(tracking_uri, f"http://127.0.0.1:{port}/webhook", SECRET)

        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.create_registered_model("fraud-e2e")
        for _ in range(2):
            # Only the alias matters here; a remote-looking source skips the local-path check.
            client.create_model_version("fraud-e2e", source="s3://mlcanary-e2e/model")
        client.set_registered_model_alias("fraud-e2e", "candidate", "2")

        runs = _runs_of(prefect_api, "start-canary")
        assert len(runs) == 1, "the trigger did not create exactly one start-canary run"
        assert runs[0]["parameters"]["model"] == "fraud-e2e"
        assert runs[0]["parameters"]["version"] == "2"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        emitter.close()


def test_approval_event_starts_approve_release_and_deployments_go_to_a_kubernetes_pool(servers) -> None:  # type: ignore[no-untyped-def]
    _, prefect_api, env = servers
    _prefect(env, "work-pool", "create", "mlcanary-local", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--all")

    # The event exactly as canary-monitor emits it for a release that starts waiting.
    now = datetime.now(UTC)
    waiting = ReleaseState(
        model="fraud-e2e",
        candidate_version="7",
        champion_version="6",
        phase=Phase.AWAITING_APPROVAL,
        step_index=1,
        traffic=50,
        started_at=now,
        step_started_at=now,
        reason="every check passed; waiting for a human approval",
        approval_requested_at=now,
    )
    event = approval_requested_event(waiting, "demo", None)
    body = [{"id": str(uuid.uuid4()), "occurred": now.isoformat(), **event}]
    assert _api("post", f"{prefect_api}/events", json=body, timeout=10).status_code == 204
    runs = _runs_of(prefect_api, "approve-release")
    assert len(runs) == 1, "the trigger did not create exactly one approve-release run"
    assert runs[0]["parameters"] == {"model": "fraud-e2e", "profile": "demo", "config_file": ""}

    # A cluster: the same deployments on a kubernetes pool, chosen by Prefect's setting (prefect.toml
    # sets mlcanary-local; `deploy --all` ignores --pool).
    _prefect(env, "work-pool", "create", "mlcanary-k8s", "--type", "kubernetes")
    _prefect(env | {"PREFECT_DEFAULT_WORK_POOL_NAME": "mlcanary-k8s"}, "--no-prompt", "deploy", "--all")
    pool = _api("get", f"{prefect_api}/work_pools/mlcanary-k8s", timeout=10).json()
    assert pool["type"] == "kubernetes"
    deployments = _api("post", f"{prefect_api}/deployments/filter", json={}, timeout=10).json()
    assert {d["name"] for d in deployments} == DEPLOYMENTS
    for deployment in deployments:
        assert deployment["work_pool_name"] == "mlcanary-k8s", deployment["name"]
        assert deployment["job_variables"]["env"]["MLFLOW_DISABLE_TELEMETRY"] == "true"


def _receiver(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    return server, thread


def _wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _start_canary_runs_of(prefect_api: str, model: str, timeout_s: float) -> list[dict[str, Any]]:
    """The start-canary runs for ``model``, waiting up to ``timeout_s`` for the first one."""
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while not runs and time.monotonic() < deadline:
        runs = [r for r in _runs_of(prefect_api, "start-canary", 2) if r["parameters"].get("model") == model]
    return runs


def test_prefect_down_when_the_webhook_arrives(servers) -> None:  # type: ignore[no-untyped-def]
    """The receiver's way to Prefect is cut (refused connects, as if the server were stopped): each
    delivery is answered 503 with Retry-After 2 s and MLflow 3.17 retries it 3 times (its default
    MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES). Back within that window (~6 s): exactly one start-canary
    run. Down for longer: MLflow gives up and the event is lost; no run follows, ever."""
    tracking_uri, prefect_api, env = servers
    deployed = _api("post", f"{prefect_api}/deployments/filter", json={}, timeout=10).json()
    if "start-canary" not in {d["name"] for d in deployed}:
        _prefect(env, "work-pool", "create", "mlcanary-local", "--type", "process", "--overwrite")
        _prefect(env, "--no-prompt", "deploy", "--all")
    link = TcpLink(int(prefect_api.rsplit(":", 1)[1].split("/")[0]))
    emitter = PrefectEventEmitter(f"{link.url}/api")
    app = create_webhook_app(secret=SECRET, emit=emitter)
    port = int(env["RECEIVER_PORT"])
    server, thread = _receiver(app, port)
    stats = app.state.stats
    try:
        register_webhook(tracking_uri, f"http://127.0.0.1:{port}/webhook", SECRET)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        for model in ("fraud-long-outage", "fraud-short-outage"):
            client.create_registered_model(model)
            for _ in range(2):
                client.create_model_version(model, source="s3://mlcanary-e2e/model")

        # Down longer than MLflow's retries: 4 deliveries, all 503; then MLflow stops trying.
        link.cut()
        client.set_registered_model_alias("fraud-long-outage", "candidate", "2")
        _wait_for(lambda: stats.emit_failures >= 4, 30, "MLflow's 4 deliveries")
        time.sleep(4)  # longer than Retry-After: a 5th delivery would have come by now
        assert stats.emit_failures == 4
        assert stats.emitted == 0

        # Down, then back within the window: a retry gets through.
        client.set_registered_model_alias("fraud-short-outage", "candidate", "2")
        _wait_for(lambda: stats.emit_failures >= 5, 30, "the first delivery answered 503")
        link.restore()
        _wait_for(lambda: stats.emitted == 1, 30, "a retried delivery emitted")
        runs = _start_canary_runs_of(prefect_api, "fraud-short-outage", 60)
        assert len(runs) == 1, "not exactly one start-canary run after Prefect came back"
        assert runs[0]["parameters"]["version"] == "2"
        # By now the lost event would have made its run too: none came.
        assert _start_canary_runs_of(prefect_api, "fraud-long-outage", 2) == []
        assert stats.duplicates == 0
    finally:
        link.close()
        server.should_exit = True
        thread.join(timeout=10)
        emitter.close()
