"""Talking to the platform's Prefect server over plain HTTP (``mlcanary`` never imports Prefect):
deployments and work pools present, the worker online (:func:`wait_worker_online`), the
``canary-monitor`` schedule (:func:`align_monitor_schedule`), and running the ``prefect`` CLI with
its output appended to a log (:func:`run_cli`)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Final

import httpx

from mlcanary.platform.errors import PlatformError
from mlcanary.platform.retrying_transport import RetryingTransport
from mlcanary.platform.servers import require_binary
from mlcanary.runtime.processes import ManagedProcess

__all__ = [
    "MIN_MONITOR_INTERVAL_S",
    "MONITOR_DEPLOYMENT",
    "align_monitor_schedule",
    "deployed_names",
    "http_client",
    "pool_exists",
    "run_cli",
    "wait_worker_online",
    "worker_online",
]

#: The ``canary-monitor`` deployment whose schedule follows ``rollout.tick_interval``.
MONITOR_DEPLOYMENT: Final = "canary-monitor/canary-monitor"
#: A flow run is a new Python process (seconds on 2 cores): never schedule the monitor tighter.
MIN_MONITOR_INTERVAL_S: Final = 30


def http_client(*, retry: bool = True) -> httpx.Client:
    """A client for the platform's own services (no proxy or other settings from the environment).
    With ``retry`` it retries the "busy, try again" answers (429, 502, 503) as Prefect's own client
    does; a health probe passes ``retry=False`` to see the answer as it is."""
    transport = RetryingTransport() if retry else httpx.HTTPTransport()
    return httpx.Client(timeout=15.0, trust_env=False, transport=transport)


def deployed_names(api: str) -> set[str]:
    """The names of the deployments the Prefect server at ``api`` has."""
    with http_client() as client:
        response = client.post(f"{api}/deployments/filter", json={})
    response.raise_for_status()
    return {str(d["name"]) for d in response.json()}


def pool_exists(api: str, pool: str) -> bool:
    with http_client() as client:
        response = client.get(f"{api}/work_pools/{pool}")
    if response.status_code == 404:
        return False
    response.raise_for_status()
    return True


def worker_online(api: str, pool: str, name: str, since: float = 0.0) -> bool:
    """True if worker ``name`` is ONLINE with a heartbeat at or after unix time ``since`` (a worker
    restarted under the same name is listed ONLINE from its previous life for a while)."""
    with http_client() as client:
        response = client.post(f"{api}/work_pools/{pool}/workers/filter", json={})
    if response.status_code != 200:
        return False
    for worker in response.json():
        beat = worker.get("last_heartbeat_time")
        if worker.get("name") != name or worker.get("status") != "ONLINE" or not beat:
            continue
        if datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() >= since:
            return True
    return False


def wait_worker_online(api: str, pool: str, name: str, process: ManagedProcess, timeout_s: float) -> None:
    """Wait until the worker ``process`` (named ``name``) is online for ``pool``; :class:`PlatformError`
    (with its log file and tail) if it exits first or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    # One second of slack for the clock of the server vs the recorded start.
    while not worker_online(api, pool, name, since=process.record.started_at - 1.0):
        if not process.alive():
            raise PlatformError(
                f"the Prefect worker exited (status {process.returncode()}); log {process.log_path}:\n"
                f"{process.log_tail(2000)}"
            )
        if time.monotonic() > deadline:
            raise PlatformError(
                f"the Prefect worker is not online for pool {pool} after {timeout_s:g} s; log "
                f"{process.log_path}:\n{process.log_tail(2000)}"
            )
        time.sleep(0.5)


def run_cli(argv: list[str], *, env: Mapping[str, str], cwd: Path, log: Path, what: str) -> None:
    """Run ``argv`` to completion (600 s at most), appending the command and its output to ``log``;
    :class:`PlatformError` naming ``what`` (with the output's tail) if it fails."""
    require_binary(Path(argv[0]))
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PlatformError(f"{what} did not finish within 600 s") from None
    output = (done.stdout or "") + (done.stderr or "")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(argv)}\n{output}\n")
    if done.returncode != 0:
        raise PlatformError(f"{what} failed (exit {done.returncode}; log {log}):\n{output[-2000:]}")


def align_monitor_schedule(api: str, tick_interval_s: float) -> float | None:
    """Set the ``canary-monitor`` interval schedule to ``tick_interval_s`` (at least
    :data:`MIN_MONITOR_INTERVAL_S`); returns the interval in force, or None without an interval
    schedule (then it is left alone)."""
    interval = max(float(MIN_MONITOR_INTERVAL_S), float(tick_interval_s))
    with http_client() as client:
        response = client.get(f"{api}/deployments/name/{MONITOR_DEPLOYMENT}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        deployment = response.json()
        schedules = [s for s in deployment.get("schedules") or [] if "interval" in (s.get("schedule") or {})]
        if len(schedules) != 1:
            return None
        current = schedules[0]
        if float(current["schedule"]["interval"]) == interval:
            return interval
        schedule = {k: v for k, v in current["schedule"].items() if k in ("anchor_date", "timezone")}
        body = {"schedule": {**schedule, "interval": interval}, "active": current.get("active", True)}
        answer = client.patch(f"{api}/deployments/{deployment['id']}/schedules/{current['id']}", json=body)
        answer.raise_for_status()
    return interval
