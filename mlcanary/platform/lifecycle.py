"""``up``, ``down`` and ``status`` of the whole platform (see :mod:`mlcanary.platform` for what
runs, in which order and why), with what they report: :class:`PlatformInfo` and
:class:`ComponentState`."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from mlcanary.config import Settings
from mlcanary.platform.errors import PlatformError
from mlcanary.platform.paths import MLFLOW, PREFECT, WEBHOOK, WORKER, PlatformPaths, repo_root
from mlcanary.platform.prefect_api import (
    align_monitor_schedule,
    deployed_names,
    http_client,
    pool_exists,
    run_cli,
    wait_worker_online,
)
from mlcanary.platform.prefect_yaml import deployment_names, work_pool_names
from mlcanary.platform.private_files import webhook_secret
from mlcanary.platform.servers import (
    WORKER_QUERY_SECONDS,
    check_port,
    require_binary,
    start_mlflow_server,
    start_or_find,
    start_prefect_server,
    stop_component,
    wait_healthy,
    webhook_argv,
    worker_argv,
)
from mlcanary.platform.settings_env import child_env, env_file_vars, platform_settings, write_env_file
from mlcanary.runtime.process_tree import descendants, stop_groups
from mlcanary.runtime.processes import ProcessError, find_running

if TYPE_CHECKING:
    from mlcanary.serving.local.stack import StackInfo

__all__ = ["ComponentState", "PlatformInfo", "Progress", "down", "status", "up"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ComponentState:
    """One platform process as observed."""

    name: str
    running: bool
    pid: int | None
    url: str | None
    healthy: bool | None
    log_path: Path


@dataclass
class PlatformInfo:
    """What :func:`up` did and where everything is."""

    settings: Settings
    paths: PlatformPaths
    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    deployed: bool = False
    monitor_interval_s: float | None = None
    stack: StackInfo | None = None
    stack_note: str | None = None

    def urls(self) -> dict[str, str]:
        return {
            "Prefect UI": self.paths.prefect_url,
            "MLflow UI": self.paths.mlflow_url,
            "webhook receiver": self.paths.webhook_url,
        }


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


@dataclass
class _Outcome:
    note: str | None = None


@contextlib.contextmanager
def _step(progress: Progress | None, label: str) -> Iterator[_Outcome]:
    """Announce ``label``; on success report ``✓ label (seconds)`` or ``✓ label (note)``."""
    _say(progress, f"{label}…")
    began = time.monotonic()
    outcome = _Outcome()
    yield outcome
    _say(progress, f"✓ {label} ({outcome.note or f'{time.monotonic() - began:.1f} s'})")


def up(
    settings: Settings,
    *,
    progress: Progress | None = None,
    python: str = sys.executable,
    bin_dir: Path | None = None,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    with_stack: bool = True,
    timeout_s: float = 180.0,
) -> PlatformInfo:
    """Bring the platform up (see :mod:`mlcanary.platform`); idempotent: what runs is left alone.

    ``progress`` receives one line per step. Raises :class:`PlatformError` naming the failed step
    (with the log file and its tail when a process died); what this call started is stopped again.
    """
    root = root or repo_root()
    bin_dir = bin_dir or Path(python).parent
    environ = os.environ if environ is None else environ
    psettings = platform_settings(settings)
    paths = PlatformPaths.of(psettings)
    pools = work_pool_names(root)
    if not pools:
        raise PlatformError(f"{root / 'prefect.yaml'}: no deployment names a work pool")
    for binary in ("mlflow", "prefect"):
        require_binary(bin_dir / binary)
    for name, setting, port in (
        (MLFLOW, "mlflow_port", paths.mlflow_port),
        (PREFECT, "prefect_port", paths.prefect_port),
        (WEBHOOK, "webhook_port", paths.webhook_port),
    ):
        check_port(paths, name, setting, port)
    from mlcanary.serving.local.stack import foreign_ports

    taken = foreign_ports(psettings)
    if taken:
        raise PlatformError(f"{', '.join(taken)} already taken by a process that is not ours")

    paths.state_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(psettings, base=environ, config_dir=root / "configs")
    info = PlatformInfo(settings=psettings, paths=paths)
    api = paths.prefect_api_url

    def record(name: str, started: bool, outcome: _Outcome) -> None:
        (info.started if started else info.already_running).append(name)
        if not started:
            outcome.note = "already running"

    try:
        # Both servers start at once (each takes 10-30 s on 2 cores), then each is awaited.
        launched = time.monotonic()
        mlflow, mlflow_started = start_mlflow_server(psettings, env=env, bin_dir=bin_dir, wait=False)
        (info.started if mlflow_started else info.already_running).append(MLFLOW)
        server, prefect_started = start_prefect_server(psettings, env=env, bin_dir=bin_dir, wait=False)
        (info.started if prefect_started else info.already_running).append(PREFECT)
        for process, started, label in (
            (mlflow, mlflow_started, f"MLflow server {paths.mlflow_url}"),
            (server, prefect_started, f"Prefect server {paths.prefect_url}"),
        ):
            with _step(progress, label) as outcome:
                wait_healthy(psettings, process, timeout_s)
                outcome.note = f"{time.monotonic() - launched:.1f} s" if started else "already running"
        prefect = str(bin_dir / "prefect")
        for pool in pools:
            if not pool_exists(api, pool):
                with _step(progress, f"work pool {pool}"):
                    run_cli(
                        [prefect, "--no-prompt", "work-pool", "create", pool, "--type", "process"],
                        env=env,
                        cwd=root,
                        log=paths.log("platform-deploy"),
                        what=f"creating the work pool {pool}",
                    )
        missing = set(deployment_names(root)) - deployed_names(api)
        if prefect_started or missing:
            with _step(progress, "deploying prefect.yaml (prefect deploy --all)"):
                run_cli(
                    [prefect, "--no-prompt", "deploy", "--all"],
                    env={**env, "PWD": str(root)},  # prefect.yaml's pull step uses {{ $PWD }}
                    cwd=root,
                    log=paths.log("platform-deploy"),
                    what="prefect deploy --all",
                )
                info.deployed = True
        info.monitor_interval_s = align_monitor_schedule(api, psettings.rollout.tick_interval.total_seconds())
        with _step(progress, f"Prefect worker on pool {pools[0]}") as outcome:
            worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_SECONDS}
            worker, started = start_or_find(WORKER, worker_argv(bin_dir, pools[0]), paths, worker_env, root)
            record(WORKER, started, outcome)
            wait_worker_online(api, pools[0], f"{pools[0]}-worker", worker, timeout_s)
        with _step(progress, f"webhook receiver {paths.webhook_url}") as outcome:
            secret = webhook_secret(paths, environ)
            receiver_env = {**env, "MLCANARY_WEBHOOK_SECRET": secret}
            receiver, started = start_or_find(WEBHOOK, webhook_argv(psettings, python), paths, receiver_env)
            record(WEBHOOK, started, outcome)
            wait_healthy(psettings, receiver, timeout_s)
        with _step(progress, "MLflow webhook → receiver"):
            _register(paths, secret)
        write_env_file(paths.env_file, env_file_vars(psettings, config_dir=root / "configs"))
    except BaseException as exc:
        for name in reversed(info.started):
            process = find_running(paths.state_dir, name)
            if process is not None:
                with contextlib.suppress(ProcessError):
                    stop_component(process)
        if isinstance(exc, httpx.HTTPError):
            raise PlatformError(f"the Prefect API at {api} failed: {type(exc).__name__}: {exc}") from exc
        raise
    if with_stack:
        # The platform stays up if the serving stack fails: its UIs and logs are how to find out why.
        _stack_up(psettings, info, progress)
    return info


def _register(paths: PlatformPaths, secret: str) -> None:
    from mlcanary.triggers.registration import register_webhook

    try:
        register_webhook(paths.mlflow_url, paths.webhook_url, secret)
    except Exception as exc:  # MlflowException and transport errors: the user's to read
        raise PlatformError(f"registering the MLflow webhook failed: {type(exc).__name__}: {exc}") from exc


def _stack_up(settings: Settings, info: PlatformInfo, progress: Progress | None) -> None:
    from mlcanary.registry.mlflow_registry import registry_from_settings
    from mlcanary.rollout.arms import CHAMPION
    from mlcanary.rollout.versions import ModelNotFoundError
    from mlcanary.serving.local.stack import StackError, stack_status
    from mlcanary.serving.local.stack import up as stack_up

    model = settings.model.name
    try:
        champion = registry_from_settings(settings).aliases(model).get(CHAMPION)
    except ModelNotFoundError:
        champion = None
    if champion is None:
        info.stack_note = (
            f"serving stack not started: {model} has no @champion yet. Train one (the `train` deployment "
            "in the Prefect UI, or `mlcanary train`), then run `mlcanary up --platform` again"
        )
        return
    if stack_status(settings).healthy:
        info.stack_note = "serving stack already running"
        return
    with _step(progress, "serving stack (collector, Envoy, model servers)"):
        try:
            info.stack = stack_up(settings, candidate_percent=settings.rollout.steps[0])
        except StackError as exc:
            raise PlatformError(f"the platform is up, but {exc}") from exc


def down(settings: Settings, *, grace_s: float = 10.0) -> list[str]:
    """Stop the worker (SIGINT), the receiver, then the serving stack and both servers.

    Returns the names of the processes that were running. Idempotent.
    """
    from mlcanary.serving.local.stack import StackError
    from mlcanary.serving.local.stack import down as stack_down

    state_dir = Path(settings.state_dir).absolute()
    stopped: list[str] = []
    for name in (WORKER, WEBHOOK):
        process = find_running(state_dir, name)
        if process is not None:
            # The worker starts each flow run in a session of its own: find them before it exits.
            flow_runs = descendants(process.pid) if name == WORKER else []
            try:
                stop_component(process, grace_s=grace_s)
                stop_groups(flow_runs, grace_s)
            except ProcessError as exc:
                raise PlatformError(f"could not stop {name}: {exc}") from exc
            stopped.append(name)
    try:
        # The serving stack's down stops everything else recorded in <state>/run/, servers included.
        stopped += stack_down(settings, grace_s=grace_s)
    except StackError as exc:
        raise PlatformError(str(exc)) from exc
    return stopped


def status(settings: Settings) -> list[ComponentState]:
    """Each platform process: running (pidfile names a live process), pid, URL and health."""
    paths = PlatformPaths.of(settings)
    urls = {MLFLOW: paths.mlflow_url, PREFECT: paths.prefect_url, WORKER: None, WEBHOOK: paths.webhook_url}
    states = []
    for name, url in urls.items():
        check = paths.health_url(name)
        process = find_running(paths.state_dir, name)
        healthy: bool | None = None
        if process is not None and check is not None:
            try:
                with http_client(retry=False) as client:
                    healthy = client.get(check, timeout=3.0).status_code == 200
            except httpx.HTTPError:
                healthy = False
        elif process is None:
            healthy = False
        states.append(
            ComponentState(
                name=name,
                running=process is not None,
                pid=None if process is None else process.pid,
                url=url,
                healthy=healthy,
                log_path=paths.log(name),
            )
        )
    return states
