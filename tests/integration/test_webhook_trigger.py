"""End to end: @candidate set on a real `mlflow server` → signed webhook → our receiver → Prefect
event → the `start-canary` deployment's trigger creates a flow run with the model and version.

Real processes: `mlflow server` (SQLite) and `prefect server`, the deployments registered from this
repository's prefect.yaml with `prefect --no-prompt deploy`. No worker runs: the test asserts the
flow run the trigger created, with its parameters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from stack_helpers import REPO_ROOT, free_ports

from mlcanary.webhook import PrefectEventEmitter, create_webhook_app, register_webhook

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
SECRET = "test-secret-not-a-real-one"


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _wait(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} died:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s:\n{log.read_text()[-2000:]}")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    mlflow_port, prefect_port, receiver_port = free_ports(3)
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    mlflow = _start(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--default-artifact-root",
            (tmp_path / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        ],
        env,
        tmp_path / "mlflow.log",
    )
    prefect = _start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
        env,
        tmp_path / "prefect.log",
    )
    try:
        _wait(f"http://127.0.0.1:{prefect_port}/api/health", prefect, tmp_path / "prefect.log")
        _wait(f"http://127.0.0.1:{mlflow_port}/health", mlflow, tmp_path / "mlflow.log")
        yield (
            f"http://127.0.0.1:{mlflow_port}",
            f"http://127.0.0.1:{prefect_port}/api",
            env | {"RECEIVER_PORT": str(receiver_port)},
        )
    finally:
        _stop(mlflow)
        _stop(prefect)


def test_deploy_all_then_setting_candidate_alias_starts_a_start_canary_run(servers) -> None:  # type: ignore[no-untyped-def]
    tracking_uri, prefect_api, env = servers
    for argv in (
        [str(BIN / "prefect"), "work-pool", "create", "mlcanary-local", "--type", "process"],
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
    ):
        done = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
    deployments = httpx.post(f"{prefect_api}/deployments/filter", json={}, timeout=10).json()
    by_name = {d["name"]: d for d in deployments}
    assert set(by_name) == {"train", "start-canary", "canary-monitor", "promote", "rollback"}
    assert by_name["train"]["schedules"][0]["schedule"]["cron"] == "0 2 * * 1"
    assert by_name["canary-monitor"]["schedules"][0]["schedule"]["interval"] == 900
    automations = httpx.post(f"{prefect_api}/automations/filter", json={}, timeout=10).json()
    assert [a["trigger"]["expect"] for a in automations] == [["mlcanary.model.candidate-set"]]

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
        os.environ.update(
            {k: env[k] for k in ("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES")}
        )
        register_webhook(tracking_uri, f"http://127.0.0.1:{port}/webhook", SECRET)

        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.create_registered_model("fraud-e2e")
        for _ in range(2):
            # Only the alias matters here; a remote-looking source skips the local-path check.
            client.create_model_version("fraud-e2e", source="s3://mlcanary-e2e/model")
        client.set_registered_model_alias("fraud-e2e", "candidate", "2")

        runs: list[dict] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not runs:
            time.sleep(1)
            answer = httpx.post(
                f"{prefect_api}/flow_runs/filter",
                json={"deployments": {"name": {"any_": ["start-canary"]}}},
                timeout=5,
            )
            runs = answer.json() if answer.status_code == 200 else []
        assert len(runs) == 1, "the trigger did not create exactly one start-canary run"
        assert runs[0]["parameters"]["model"] == "fraud-e2e"
        assert runs[0]["parameters"]["version"] == "2"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        emitter.close()
