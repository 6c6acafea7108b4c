"""`mlcanary up --platform` end to end on free ports: real MLflow and Prefect servers, a real process
worker, the webhook receiver and the serving stack; @candidate set through the MLflow server ends in
a start-canary flow run the worker executes; `down` leaves no process behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack_helpers import REPO_ROOT, recorded_pids, stack_settings, train_versions

from mlcanary import platform
from mlcanary.config import Settings
from mlcanary.runtime.processes import read_pidfile
from mlcanary.serving.local.backend import LocalBackend
from mlcanary.serving.local.stack import stack_status
from mlcanary.testing.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1200)]


def _pgid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[2])


def _live_in_groups(pgids: set[int]) -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if _pgid(int(p.name)) in pgids]


def _post(url: str, body: dict[str, Any]) -> Any:
    response = httpx.post(url, json=body, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    mlflow_port, prefect_port = free_ports(2)
    base = stack_settings(
        tmp_path_factory.mktemp("platform"),
        **{
            "serving.mlflow_port": mlflow_port,
            "serving.prefect_port": prefect_port,
            # The canary-monitor schedule follows the policy; an hour keeps monitor runs out of the test.
            "rollout.tick_interval": "1h",
        },
    )
    try:
        yield base
    finally:
        platform.down(base)


def test_platform_up_trigger_executes_and_down_cleans_up(settings: Settings) -> None:
    steps: list[str] = []
    began = time.monotonic()
    info = platform.up(settings, progress=steps.append)
    up_s = time.monotonic() - began
    paths, api = info.paths, info.paths.prefect_api_url
    assert sorted(info.started) == sorted(platform.COMPONENTS)
    assert info.deployed
    assert any(step.startswith("✓ Prefect server") for step in steps), steps

    # Both servers healthy; the Prefect server keeps its home in the state directory.
    assert httpx.get(paths.mlflow_url + "/health", timeout=5).status_code == 200
    assert httpx.get(api + "/health", timeout=5).status_code == 200
    assert (Path(settings.state_dir) / "prefect").is_dir()

    # Every deployment of prefect.yaml is registered; canary-monitor follows rollout.tick_interval.
    deployments = {d["name"]: d for d in _post(f"{api}/deployments/filter", {})}
    assert set(platform.deployment_names(REPO_ROOT)) <= set(deployments)
    monitor = deployments["canary-monitor"]["schedules"]
    assert [s["schedule"]["interval"] for s in monitor] == [3600.0]

    # A worker is online for the pool.
    pool = platform.work_pool_names(REPO_ROOT)[0]
    workers = _post(f"{api}/work_pools/{pool}/workers/filter", {})
    assert [w["status"] for w in workers if w["name"] == f"{pool}-worker"] == ["ONLINE"]

    # The MLflow webhook is registered on the server and points at the receiver, which is healthy.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=paths.mlflow_url, registry_uri=paths.mlflow_url)
    hooks = [h for h in client.list_webhooks() if h.name == "mlcanary"]
    assert [(h.url, str(h.status)) for h in hooks] == [(paths.webhook_url, "ACTIVE")]
    assert httpx.get(paths.webhook_url.removesuffix("/webhook") + "/healthz", timeout=5).status_code == 200

    # The env file points a shell at the platform, without the secret.
    env_file = paths.env_file.read_text()
    assert f"PREFECT_API_URL={api}" in env_file
    assert f"MLCANARY_MLFLOW__TRACKING_URI={paths.mlflow_url}" in env_file
    assert platform.ensure_secret_file(paths.secret_file, lambda: "unused") not in env_file

    # No champion yet: no serving stack. Train one through the MLflow server, then up again.
    assert info.stack is None
    assert info.stack_note
    assert "@champion" in info.stack_note
    psettings = info.settings
    champion, _ = train_versions(psettings, candidate=False)
    again = platform.up(settings)
    assert again.started == []
    assert not again.deployed
    assert again.stack is not None
    assert again.stack.champion_version == champion
    assert stack_status(psettings).healthy
    model_url = f"{again.stack.front_door_url}/v1/models/{psettings.model.name}"
    assert httpx.get(model_url, timeout=5).status_code == 200

    # Up a third time: nothing new starts, every pid stays the same.
    before = recorded_pids(paths.state_dir)
    third = platform.up(settings)
    assert third.started == []
    assert third.stack is None
    assert sorted(third.already_running) == sorted(platform.COMPONENTS)
    assert recorded_pids(paths.state_dir) == before

    # @candidate set through the MLflow server → webhook → Prefect event → start-canary run,
    # executed by the worker: the candidate then serves beside the champion at the first step.
    from mlcanary.registry.mlflow_registry import registry_from_settings
    from mlcanary.training import train

    trained_at = time.monotonic()
    outcome = train(psettings, registry_from_settings(psettings))
    assert outcome.alias == "candidate", outcome.reason
    query = {"deployments": {"name": {"any_": ["start-canary"]}}}
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = _post(f"{api}/flow_runs/filter", query)
        if any(r["state_type"] == "COMPLETED" for r in runs):
            break
        assert not [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")], runs
        time.sleep(2)
    triggered_s = time.monotonic() - trained_at
    assert runs, "setting @candidate created no start-canary run"
    assert {(r["parameters"]["model"], r["parameters"]["version"]) for r in runs} == {
        (psettings.model.name, outcome.version)
    }
    # (start_canary sets @candidate again, which may trigger a second, idempotent run.)
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]
    assert completed, f"no start-canary run completed within 300 s: {[r['state_type'] for r in runs]}"
    served = LocalBackend(psettings).status(psettings.model.name)
    assert served.traffic == {
        "champion": 100 - psettings.rollout.steps[0],
        "candidate": psettings.rollout.steps[0],
    }
    print(f"up {up_s:.0f} s; @candidate → start-canary Completed {triggered_s:.0f} s")

    # down stops every process group of the platform and the stack, flow runs included.
    records = [read_pidfile(paths.state_dir, name) for name in recorded_pids(paths.state_dir)]
    pgids = {r.pgid for r in records if r is not None}
    children = [p for r in records if r is not None for p, _ in platform.descendants(r.pid)]
    assert {platform.MLFLOW, platform.PREFECT, platform.WORKER, platform.WEBHOOK} <= set(
        recorded_pids(paths.state_dir)
    )
    stopped = platform.down(settings)
    assert set(platform.COMPONENTS) <= set(stopped)
    assert recorded_pids(paths.state_dir) == {}
    assert _live_in_groups(pgids) == []
    assert [pid for pid in children if _pgid(pid) is not None] == []
    assert platform.down(settings) == []
    assert os.path.exists(paths.env_file)
