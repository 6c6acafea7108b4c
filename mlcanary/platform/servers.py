"""The platform's processes one at a time: the argv (and MLflow's environment) of the MLflow server,
the Prefect server, the worker and the webhook receiver; starting or finding each
(:func:`start_mlflow_server`, :func:`start_prefect_server`, :func:`start_or_find`), waiting for its
health check (:func:`wait_healthy`) and stopping it (:func:`stop_component`). Also used by tests."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from mlcanary.config import Settings
from mlcanary.platform.errors import PlatformError
from mlcanary.platform.paths import MLFLOW, PREFECT, WEBHOOK, PlatformPaths
from mlcanary.platform.private_files import ensure_secret_file, fernet_key
from mlcanary.runtime.processes import (
    ManagedProcess,
    ProcessError,
    find_running,
    held_by_stranger,
    start_process,
    wait_for_http,
)

__all__ = [
    "SCHEDULER_MAX_RUNS",
    "WORKER_QUERY_SECONDS",
    "check_port",
    "mlflow_server_argv",
    "mlflow_server_env",
    "prefect_server_argv",
    "require_binary",
    "start_mlflow_server",
    "start_or_find",
    "start_prefect_server",
    "stop_component",
    "wait_healthy",
    "webhook_argv",
    "worker_argv",
]

#: Runs the Prefect scheduler creates ahead per schedule (its default, 100, floods the UI when the
#: monitor runs every 30 s; a schedule's own ``max_scheduled_runs`` is honoured only by Prefect Cloud).
SCHEDULER_MAX_RUNS: Final = "10"
WORKER_QUERY_SECONDS: Final = "5"


# --------------------------------------------------------------------------------------------------
# argv and environments (pure)


def mlflow_server_env(settings: Settings, key: str, base: Mapping[str, str]) -> dict[str, str]:
    """The MLflow server's environment: webhooks may deliver to loopback, secrets use ``key``.

    The server's job runner (GenAI scorers, trace archival: eight more processes and ~20 s of start
    on 2 cores) is off; webhook deliveries do not use it.
    """
    return {
        **base,
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": key,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def mlflow_server_argv(settings: Settings, bin_dir: Path) -> list[str]:
    paths = PlatformPaths.of(settings)
    return [
        str(bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{paths.mlflow_db}",
        "--default-artifact-root",
        settings.artifact_location,
        "--host",
        paths.host,
        "--port",
        str(paths.mlflow_port),
        "--workers",
        "1",
    ]


def prefect_server_argv(settings: Settings, bin_dir: Path) -> list[str]:
    paths = PlatformPaths.of(settings)
    return [
        str(bin_dir / "prefect"),
        "server",
        "start",
        "--host",
        paths.host,
        "--port",
        str(paths.prefect_port),
        "--analytics-off",
    ]


def worker_argv(bin_dir: Path, pool: str) -> list[str]:
    return [
        str(bin_dir / "prefect"),
        "--no-prompt",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        f"{pool}-worker",
        "--install-policy",
        "never",
    ]


def webhook_argv(settings: Settings, python: str) -> list[str]:
    """The receiver as ``mlcanary webhook`` (the secret travels in the environment, never here)."""
    paths = PlatformPaths.of(settings)
    return [
        python,
        "-m",
        "mlcanary.cli",
        "webhook",
        "--prefect-api-url",
        paths.prefect_api_url,
        "--host",
        paths.host,
        "--port",
        str(paths.webhook_port),
    ]


# --------------------------------------------------------------------------------------------------
# Starting, awaiting and stopping one process


def require_binary(path: Path) -> None:
    """:class:`PlatformError` unless ``path`` is an executable file (the CLIs beside this Python)."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise PlatformError(
            f"{path.name} not found at {path}: the platform runs the {path.name} command installed "
            "beside this Python (`make bootstrap` installs it into .venv)"
        )


def check_port(paths: PlatformPaths, name: str, setting: str, port: int) -> None:
    """:class:`PlatformError` if ``port`` (``serving.<setting>``) is taken and ``name`` is not ours."""
    if held_by_stranger(paths.state_dir, name, paths.host, port):
        raise PlatformError(
            f"port {port} (serving.{setting}) is taken by a process that is not ours: stop it or set "
            f"MLCANARY_SERVING__{setting.upper()}=<another port>"
        )


def start_or_find(
    name: str, argv: list[str], paths: PlatformPaths, env: Mapping[str, str], cwd: Path | None = None
) -> tuple[ManagedProcess, bool]:
    """The running process ``name`` or a newly started one; True if it was started now."""
    running = find_running(paths.state_dir, name)
    if running is not None:
        return running, False
    require_binary(Path(argv[0]))
    process = start_process(name, argv, state_dir=paths.state_dir, log_path=paths.log(name), env=env, cwd=cwd)
    return process, True


def _await_health(process: ManagedProcess, url: str, what: str, timeout_s: float) -> None:
    try:
        wait_for_http(url, timeout_s=timeout_s, process=process, interval_s=0.25, description=what)
    except ProcessError as exc:
        raise PlatformError(f"{what} did not come up (log {process.log_path}): {exc}") from exc


def start_mlflow_server(
    settings: Settings,
    *,
    env: Mapping[str, str],
    bin_dir: Path | None = None,
    timeout_s: float = 120.0,
    wait: bool = True,
) -> tuple[ManagedProcess, bool]:
    """Start (or find) the MLflow server of ``settings`` and wait for ``/health`` (unless not
    ``wait``: then call :func:`wait_healthy`).

    ``env`` is the base environment; the webhook variables and the Fernet key (kept in a 0600 file
    in the state directory) are added here. Returns the process and whether it was started now.
    """
    paths = PlatformPaths.of(settings)
    check_port(paths, MLFLOW, "mlflow_port", paths.mlflow_port)
    key = ensure_secret_file(paths.key_file, fernet_key)
    argv = mlflow_server_argv(settings, bin_dir or Path(sys.executable).parent)
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    process, started = start_or_find(MLFLOW, argv, paths, mlflow_server_env(settings, key, env))
    if wait:
        wait_healthy(settings, process, timeout_s)
    return process, started


def start_prefect_server(
    settings: Settings,
    *,
    env: Mapping[str, str],
    bin_dir: Path | None = None,
    timeout_s: float = 180.0,
    wait: bool = True,
) -> tuple[ManagedProcess, bool]:
    """Start (or find) the Prefect server of ``settings`` and wait for ``/api/health`` (unless not
    ``wait``: then call :func:`wait_healthy`).

    ``env`` should carry ``PREFECT_HOME`` (see :func:`~mlcanary.platform.settings_env.child_env`).
    A fresh database takes 11-26 s.
    """
    paths = PlatformPaths.of(settings)
    check_port(paths, PREFECT, "prefect_port", paths.prefect_port)
    argv = prefect_server_argv(settings, bin_dir or Path(sys.executable).parent)
    server_env = {**env, "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": SCHEDULER_MAX_RUNS}
    process, started = start_or_find(PREFECT, argv, paths, server_env)
    if wait:
        wait_healthy(settings, process, timeout_s)
    return process, started


def wait_healthy(settings: Settings, process: ManagedProcess, timeout_s: float) -> None:
    """Wait until the platform server ``process`` answers its health check; :class:`PlatformError`
    (with its log file and tail) if it exits first or after ``timeout_s``."""
    paths = PlatformPaths.of(settings)
    url = paths.health_url(process.name)
    if url is None:
        raise ValueError(f"{process.name} has no health check")
    what = {
        MLFLOW: f"MLflow server {paths.mlflow_url}",
        PREFECT: f"Prefect server {paths.prefect_url}",
        WEBHOOK: "webhook receiver",
    }[process.name]
    _await_health(process, url, what, timeout_s)


def stop_component(process: ManagedProcess, *, interrupt_s: float = 15.0, grace_s: float = 10.0) -> None:
    """SIGINT the process group, wait ``interrupt_s``, then :meth:`ManagedProcess.stop` (SIGTERM →
    SIGKILL, pidfile removed). SIGINT first because a Prefect worker may ignore SIGTERM."""
    if process.alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.record.pgid, signal.SIGINT)
        deadline = time.monotonic() + interrupt_s
        while process.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    process.stop(grace_s=grace_s)
