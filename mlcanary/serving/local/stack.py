"""The whole local stack as one unit: ``up``, ``down`` and ``stack_status`` (``mlcanary up|down``).

``up`` starts, for the registered model, the inference-log collector (pidfile ``collector``),
Envoy (``envoy``) and the model servers (``model-champion``, ``model-candidate``) through
:class:`~mlcanary.serving.local.backend.LocalBackend`, waits until each is healthy and returns the
URLs. ``down`` stops every process recorded in ``<state>/run/`` (whole process groups; the front
door first, the collector last so model servers can flush their payload logs into it).
Every process outlives the Python process that called ``up``; the pidfiles are how ``down`` and
``stack_status`` find them from another process.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx

from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.serving import ServingError, ServingStatus
from mlcanary.rollout.versions import ModelNotFoundError
from mlcanary.runtime.env import child_env
from mlcanary.runtime.processes import (
    RUN_DIRNAME,
    ManagedProcess,
    ProcessError,
    find_running,
    held_by_stranger,
    start_process,
    stop_by_pidfile,
    wait_for_http,
)
from mlcanary.serving.local.arm_servers import STOP_GRACE_S as MODEL_SERVER_STOP_GRACE_S
from mlcanary.serving.local.arm_servers import server_process_name
from mlcanary.serving.local.backend import LocalBackend
from mlcanary.serving.local.envoy import PROCESS_NAME as ENVOY_PROCESS

if TYPE_CHECKING:
    from mlcanary.config import Settings
    from mlcanary.registry.protocol import ModelRegistry

__all__ = [
    "COLLECTOR_PROCESS",
    "DEFAULT_CANDIDATE_PERCENT",
    "ProcessState",
    "StackError",
    "StackInfo",
    "StackStatus",
    "down",
    "foreign_ports",
    "stack_status",
    "up",
]

logger = logging.getLogger(__name__)

#: Pidfile name of the collector (``<state>/run/collector.pid``).
COLLECTOR_PROCESS: Final = "collector"
#: Candidate share ``up`` starts with when ``@candidate`` exists (the seed's 80/20 split).
DEFAULT_CANDIDATE_PERCENT: Final = 20
#: Stop order of ``down``: the front door first, the collector last; anything else in between.
_STOP_FIRST: Final = (ENVOY_PROCESS, server_process_name("candidate"), server_process_name("champion"))
_STOP_LAST: Final = (COLLECTOR_PROCESS,)
_MODEL_SERVERS: Final = (server_process_name("candidate"), server_process_name("champion"))


class StackError(RuntimeError):
    """The local stack cannot be brought up (or down); the message says why and what to do."""


@dataclass(frozen=True)
class StackInfo:
    """What :func:`up` brought up and where to reach it.

    ``serving`` is the backend's observed status right after start (weights read back from Envoy).
    ``store_url`` is the inference-log database the collector writes to. ``candidate_problem``
    says, in one line, why ``@candidate`` could not be served (the champion then serves alone and
    ``candidate_version`` is None).
    """

    model: str
    state_dir: Path
    front_door_url: str
    envoy_admin_url: str
    collector_url: str
    store_url: str
    champion_url: str
    candidate_url: str | None
    champion_version: str
    candidate_version: str | None
    serving: ServingStatus
    candidate_problem: str | None = None

    def urls(self) -> dict[str, str]:
        """Name → URL of everything a user may want to call, for printing."""
        found = {
            "front door": self.front_door_url,
            "envoy admin": self.envoy_admin_url,
            "collector": self.collector_url,
            "champion": self.champion_url,
        }
        if self.candidate_url is not None:
            found["candidate"] = self.candidate_url
        return found


@dataclass(frozen=True)
class ProcessState:
    """One process of the stack: whether its pidfile names a live process, and whether it is healthy.

    ``healthy`` is None when there is no health check for it (an unknown pidfile).
    """

    name: str
    running: bool
    pid: int | None
    healthy: bool | None
    url: str | None
    log_path: Path | None


@dataclass(frozen=True)
class StackStatus:
    """The local stack as observed: every known process and the serving status of the model."""

    model: str
    state_dir: Path
    processes: dict[str, ProcessState]
    serving: ServingStatus

    @property
    def running(self) -> bool:
        """True if any process of the stack runs."""
        return any(process.running for process in self.processes.values())

    @property
    def healthy(self) -> bool:
        """True if the collector, Envoy and the champion all run and answer their health checks."""
        required = (COLLECTOR_PROCESS, ENVOY_PROCESS, server_process_name("champion"))
        return all(name in self.processes and self.processes[name].healthy for name in required)


def _state_dir(settings: Settings) -> Path:
    return Path(settings.state_dir).absolute()


def _owned_ports(settings: Settings) -> list[tuple[str, int, str]]:
    """(setting, port, pidfile name of the process of ours that may hold it)."""
    s = settings.serving
    return [
        ("serving.front_door_port", s.front_door_port, ENVOY_PROCESS),
        ("serving.envoy_admin_port", s.envoy_admin_port, ENVOY_PROCESS),
        ("serving.champion_port", s.champion_port, server_process_name("champion")),
        ("serving.candidate_port", s.candidate_port, server_process_name("candidate")),
        ("serving.collector_port", s.collector_port, COLLECTOR_PROCESS),
    ]


def foreign_ports(settings: Settings) -> list[str]:
    """Descriptions of configured ports that something other than our own processes listens on."""
    state_dir = _state_dir(settings)
    return [
        f"{setting}={port}"
        for setting, port, owner in _owned_ports(settings)
        if held_by_stranger(state_dir, owner, settings.serving.host, port)
    ]


def _collector_argv(settings: Settings, python: str) -> list[str]:
    return [
        python,
        "-m",
        "mlcanary.telemetry.collector",
        "--host",
        settings.serving.host,
        "--port",
        str(settings.serving.collector_port),
        "--db-url",
        settings.store_url,
        "--log-level",
        "warning",
        "--outputs",
        settings.model.outputs.model_dump_json(),
        "--threshold",
        repr(settings.training.decision_threshold),
    ]


def _any_running(state_dir: Path) -> bool:
    return any(find_running(state_dir, path.stem) is not None for path in _pidfiles(state_dir))


def _pidfiles(state_dir: Path) -> list[Path]:
    run_dir = state_dir / RUN_DIRNAME
    return sorted(run_dir.glob("*.pid")) if run_dir.is_dir() else []


def up(
    settings: Settings,
    *,
    candidate_percent: int = DEFAULT_CANDIDATE_PERCENT,
    with_candidate: bool = True,
    registry: ModelRegistry | None = None,
    python: str = sys.executable,
    ready_timeout_s: float = 90.0,
) -> StackInfo:
    """Start the collector, Envoy and the model servers for ``settings.model.name``; wait for health.

    Serves the version holding ``@champion`` and, if ``@candidate`` exists and ``with_candidate``,
    that version at ``candidate_percent`` % (else 100/0). Re-running it on a running stack
    converges (nothing is restarted that already serves the right version; the weights are set
    again). Raises
    :class:`StackError` if ``@champion`` does not exist ("train first"), if a configured port is
    taken by a process that is not ours, or if anything fails to start — in that last case what this
    call started is stopped again when nothing was running before it.
    """
    if (
        isinstance(candidate_percent, bool)
        or not isinstance(candidate_percent, int)
        or not (0 <= candidate_percent <= 100)
    ):
        raise StackError(f"candidate_percent must be within 0..100, got {candidate_percent}")
    model = settings.model.name
    registry = registry if registry is not None else registry_from_settings(settings)
    try:
        aliases = registry.aliases(model)
    except ModelNotFoundError:
        aliases = {}
    champion = aliases.get(CHAMPION)
    if champion is None:
        raise StackError(f"model {model!r} has no @champion version: train first: mlcanary train")
    candidate = aliases.get(CANDIDATE) if with_candidate else None
    taken = foreign_ports(settings)
    if taken:
        raise StackError(
            f"cannot start the local stack: {', '.join(taken)} already taken by a process that is not "
            "ours; stop it or configure other ports"
        )
    state_dir = _state_dir(settings)
    was_running = _any_running(state_dir)
    collector = find_running(state_dir, COLLECTOR_PROCESS)
    try:
        if collector is None:
            # Started first and awaited last: it loads while the model servers do.
            collector = start_process(
                COLLECTOR_PROCESS,
                _collector_argv(settings, python),
                state_dir=state_dir,
                log_path=state_dir / "logs" / f"{COLLECTOR_PROCESS}.log",
                env=child_env(),
            )
        backend = LocalBackend(settings, python=python, ready_timeout_s=ready_timeout_s)
        candidate_problem: str | None = None
        try:
            serving = backend.deploy(model, champion, candidate, candidate_percent if candidate else 0)
        except ServingError as exc:
            if candidate is None:
                raise
            # A candidate that cannot be served never keeps the champion from serving.
            candidate_problem = f"@candidate v{candidate} is not served: {exc}"
            logger.warning("%s", candidate_problem)
            candidate = None
            serving = backend.deploy(model, champion, None, 0)
        _wait_collector(settings, collector, ready_timeout_s)
    except (ServingError, ProcessError) as exc:
        if not was_running:
            down(settings)
        raise StackError(f"the local stack did not come up: {exc}") from exc
    info = StackInfo(
        model=model,
        state_dir=state_dir,
        front_door_url=backend.front_door_url,
        envoy_admin_url=backend.envoy.admin_url,
        collector_url=settings.serving.collector_url,
        store_url=settings.store_url,
        champion_url=backend.arm_url("champion"),
        candidate_url=backend.arm_url("candidate") if candidate else None,
        champion_version=champion,
        candidate_version=candidate,
        serving=serving,
        candidate_problem=candidate_problem,
    )
    logger.info("local stack up for %s: %s", model, info.urls())
    return info


def _wait_collector(settings: Settings, process: ManagedProcess, timeout_s: float) -> None:
    wait_for_http(
        settings.serving.collector_url + "/healthz",
        timeout_s=timeout_s,
        process=process,
        description="collector /healthz",
    )


def down(settings: Settings, *, grace_s: float = 10.0) -> list[str]:
    """Stop every process recorded in ``<state>/run/``; return the names of those that were running.

    Idempotent: with nothing running it returns ``[]`` (stale pidfiles are removed). Raises
    :class:`StackError` only if a process survives SIGKILL.
    """
    state_dir = _state_dir(settings)
    names = [path.stem for path in _pidfiles(state_dir)]
    ordered = [n for n in _STOP_FIRST if n in names]
    ordered += [n for n in names if n not in _STOP_FIRST and n not in _STOP_LAST]
    ordered += [n for n in _STOP_LAST if n in names]
    stopped: list[str] = []
    for name in ordered:
        try:
            # A model server delivers its queued inference events before it exits.
            grace = max(grace_s, MODEL_SERVER_STOP_GRACE_S) if name in _MODEL_SERVERS else grace_s
            if stop_by_pidfile(state_dir, name, grace_s=grace):
                stopped.append(name)
        except ProcessError as exc:
            raise StackError(f"could not stop {name}: {exc}") from exc
    if stopped:
        logger.info("local stack down: stopped %s", ", ".join(stopped))
    return stopped


def _healthy(url: str) -> bool:
    try:
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def stack_status(settings: Settings) -> StackStatus:
    """Every process of the stack (known ones always listed) and the model's serving status."""
    state_dir = _state_dir(settings)
    backend = LocalBackend(settings)
    serving = backend.status(settings.model.name)
    serving_urls = settings.serving
    health: dict[str, tuple[str | None, str | None]] = {
        COLLECTOR_PROCESS: (serving_urls.collector_url, serving_urls.collector_url + "/healthz"),
        ENVOY_PROCESS: (backend.front_door_url, serving_urls.envoy_admin_url + "/ready"),
        server_process_name("champion"): (backend.arm_url("champion"), None),
        server_process_name("candidate"): (backend.arm_url("candidate"), None),
    }
    names = list(health) + [p.stem for p in _pidfiles(state_dir) if p.stem not in health]
    processes: dict[str, ProcessState] = {}
    for name in names:
        process = find_running(state_dir, name)
        url, check = health.get(name, (None, None))
        healthy: bool | None
        if name in (server_process_name("champion"), server_process_name("candidate")):
            arm = serving.arms.get("champion" if name.endswith("champion") else "candidate")
            healthy = process is not None and arm is not None and arm.ready
        elif check is not None:
            healthy = process is not None and _healthy(check)
        else:
            healthy = None
        processes[name] = ProcessState(
            name=name,
            running=process is not None,
            pid=None if process is None else process.pid,
            healthy=healthy,
            url=url,
            log_path=None if process is None else process.log_path,
        )
    return StackStatus(model=settings.model.name, state_dir=state_dir, processes=processes, serving=serving)
