"""The two model-server processes of the local stack, one per arm: start, probe, wait, retire.

Each arm's server (``python -m mlcanary.serving.local.model_server``) listens on its own port
(``serving.champion_port`` / ``serving.candidate_port``) and is recorded in the pidfile
``<state>/run/model-<arm>.pid``. What an arm serves is asked of the server itself
(``GET /v1/models/<name>`` reports its version); anything else on the port is someone else's and is
refused, never killed.
"""

from __future__ import annotations

import logging
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx

from mlcanary.rollout.arms import Arm
from mlcanary.rollout.serving import ArmStatus, ServingError
from mlcanary.runtime.env import child_env
from mlcanary.runtime.net import port_in_use
from mlcanary.runtime.processes import (
    ManagedProcess,
    PidRecord,
    ProcessError,
    find_running,
    read_pidfile,
    start_process,
    wait_for_http,
)
from mlcanary.serving.local.payload_logger import DRAIN_ON_STOP_S, UVICORN_GRACEFUL_S

if TYPE_CHECKING:
    from mlcanary.config import Settings

logger = logging.getLogger(__name__)

MODEL_SERVER_MODULE: Final = "mlcanary.serving.local.model_server"
# One BLAS/OpenMP thread per model server unless the environment says otherwise: two servers on
# 2 cores oversubscribe (single-row predict P95 went from ~13 ms to ~1 s under load).
DEFAULT_OMP_THREADS: Final = "1"
_LOG_DIRNAME = "logs"
STOP_GRACE_S: Final = UVICORN_GRACEFUL_S + DRAIN_ON_STOP_S + 5.0
"""How long a stopping model server has before SIGKILL: its graceful shutdown, then its payload
logger delivering what is queued (a server stopped with an empty queue exits at once)."""


def server_process_name(arm: Arm) -> str:
    """Pidfile name of ``arm``'s model server (``model-champion`` / ``model-candidate``)."""
    return f"model-{arm}"


def load_failure(log_tail: str) -> str | None:
    """The one-line reason a model server gave for not serving its model (None if it gave none)."""
    from mlcanary.serving.local.model_server import LOAD_FAILED_PREFIX

    lines = [line for line in log_tail.splitlines() if line.startswith(LOAD_FAILED_PREFIX)]
    if not lines:
        return None
    reason = lines[-1].removeprefix(LOAD_FAILED_PREFIX).strip()
    _, _, reason = reason.partition(": ") if reason.count(": ") else ("", "", reason)
    return reason or lines[-1]


def argv_value(argv: list[str], flag: str) -> str | None:
    """The value after ``flag`` in a recorded argv, or None."""
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        return None


@dataclass(frozen=True)
class ArmProbe:
    """One arm as observed right now: what answers on its port and what we recorded for it."""

    arm: Arm
    url: str
    answering: bool
    ready: bool
    version: str | None
    process: ManagedProcess | None
    recorded: PidRecord | None
    detail: str | None = None

    def serves(self, model: str, version: str) -> bool:
        """Our own process serves ``model`` at ``version`` and is ready."""
        return (
            self.ready
            and self.version == version
            and self.process is not None
            and argv_value(self.process.record.argv, "--name") == model
        )

    def to_status(self) -> ArmStatus:
        return ArmStatus(
            arm=self.arm, version=self.version, ready=self.ready, url=self.url, detail=self.detail
        )


class ArmServers:
    """The model servers of both arms for one configuration (see the module docstring).

    Processes started here keep running after this object is gone (``mlcanary down`` stops them).
    """

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        *,
        python: str = sys.executable,
        ready_timeout_s: float = 90.0,
        stop_grace_s: float = STOP_GRACE_S,
        probe_timeout_s: float = 2.0,
        child_log_level: str = "warning",
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.python = python
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.probe_timeout_s = probe_timeout_s
        self.child_log_level = child_log_level
        self._children: dict[Arm, ManagedProcess] = {}
        self._client: httpx.Client | None = None

    @property
    def host(self) -> str:
        return self.settings.serving.host

    def port(self, arm: Arm) -> int:
        """The port ``arm``'s model server listens on."""
        serving = self.settings.serving
        return serving.champion_port if arm == "champion" else serving.candidate_port

    def url(self, arm: Arm) -> str:
        """Base URL of ``arm``'s model server (bypassing Envoy)."""
        return self.settings.serving.url(self.port(arm))

    # -- observation -----------------------------------------------------------------------------

    def live_process(self, arm: Arm) -> ManagedProcess | None:
        """Our running server of ``arm`` (a child of this process, or one found by its pidfile)."""
        child = self._children.get(arm)
        if child is not None:
            if child.alive():  # also reaps our own child once it has exited
                return child
            self._children.pop(arm, None)
        return find_running(self.state_dir, server_process_name(arm))

    def probe(self, arm: Arm, model: str) -> ArmProbe:
        """What answers on ``arm``'s port for ``model`` right now."""
        recorded = read_pidfile(self.state_dir, server_process_name(arm))
        process = self.live_process(arm)
        url = self.url(arm)

        def probe(
            answering: bool, detail: str | None, version: str | None = None, ready: bool = False
        ) -> ArmProbe:
            return ArmProbe(arm, url, answering, ready, version, process, recorded, detail)

        client = self._http()
        try:
            health = client.get(url + "/v2/health/ready")
        except httpx.HTTPError as exc:
            return probe(False, self._why_silent(arm, exc))
        if health.status_code != 200:
            return probe(True, f"{url}/v2/health/ready answered {health.status_code}")
        try:
            meta = client.get(f"{url}/v1/models/{urllib.parse.quote(model, safe='')}")
            body = meta.json() if meta.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            return probe(True, f"ready, but /v1/models/{model} failed: {type(exc).__name__}: {exc}")
        if meta.status_code != 200 or not isinstance(body, dict):
            return probe(
                True, f"ready, but does not serve {model!r}: HTTP {meta.status_code} {meta.text[:200]}"
            )
        version = None if body.get("version") is None else str(body["version"])
        detail = None if process is not None else f"answers on port {self.port(arm)} but is not ours"
        return probe(True, detail, version, bool(body.get("ready")))

    def _http(self) -> httpx.Client:
        """One keep-alive client for every probe (created on first use)."""
        if self._client is None:
            self._client = httpx.Client(timeout=self.probe_timeout_s, trust_env=False)
        return self._client

    def close(self) -> None:
        """Release the probe client (still usable: the next probe opens a new one)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _why_silent(self, arm: Arm, exc: Exception) -> str:
        port = self.port(arm)
        process = self.live_process(arm)
        if process is not None:
            version = argv_value(process.record.argv, "--version")
            return f"pid {process.pid} (v{version}) is running but port {port} does not answer yet: {exc}"
        record = read_pidfile(self.state_dir, server_process_name(arm))
        if record is not None:
            version = argv_value(record.argv, "--version")
            return f"pid {record.pid} (v{version}) has exited; log {record.log_path}"
        return f"no model server on port {port}"

    # -- processes -------------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = child_env()
        env.setdefault("OMP_NUM_THREADS", DEFAULT_OMP_THREADS)
        return env

    def _argv(self, arm: Arm, model: str, version: str) -> list[str]:
        settings = self.settings
        return [
            self.python,
            "-m",
            MODEL_SERVER_MODULE,
            "--host",
            self.host,
            "--port",
            str(self.port(arm)),
            "--name",
            model,
            "--version",
            version,
            "--arm",
            arm,
            "--tracking-uri",
            settings.tracking_uri,
            "--registry-uri",
            settings.registry_uri,
            "--collector-url",
            settings.serving.collector_url + "/events",
            "--threshold",
            repr(settings.training.decision_threshold),
            "--outputs",
            settings.model.outputs.model_dump_json(),
            "--log-level",
            self.child_log_level,
        ]

    def start(self, arm: Arm, model: str, version: str) -> ManagedProcess:
        """A process of ours that is (or will soon be) serving ``version`` on ``arm``'s port: the one
        already starting with that version, or a new one replacing whatever server of ours was there."""
        process = self.live_process(arm)
        if process is not None:
            argv = process.record.argv
            if argv_value(argv, "--name") == model and argv_value(argv, "--version") == version:
                # Started by a caller that crashed or timed out while it loaded: wait for it.
                return process
        self.retire(arm)
        port = self.port(arm)
        if port_in_use(self.host, port):
            raise ServingError(
                f"port {port} ({arm} model server) is taken by a process that is not ours; stop it or "
                f"choose another serving.{arm}_port"
            )
        name = server_process_name(arm)
        try:
            process = start_process(
                name,
                self._argv(arm, model, version),
                state_dir=self.state_dir,
                log_path=self.state_dir / _LOG_DIRNAME / f"{name}.log",
                env=self._child_env(),
            )
        except ProcessError as exc:
            raise ServingError(f"cannot start the {arm} model server: {exc}") from exc
        self._children[arm] = process
        logger.info("started %s v%s as %s (pid %d) on port %d", model, version, arm, process.pid, port)
        return process

    def await_ready(self, arm: Arm, model: str, process: ManagedProcess, version: str) -> None:
        """Wait until ``process`` serves ``version``; stop it and raise :class:`ServingError` if not."""
        url = self.url(arm)
        try:
            wait_for_http(
                url + "/v2/health/ready",
                timeout_s=self.ready_timeout_s,
                process=process,
                description=f"{arm} model server {url} to be ready",
            )
        except ProcessError as exc:
            # Stopped so that a retry starts afresh instead of waiting on a hung process again.
            self._stop(process)
            refused = load_failure(process.log_tail())
            if refused is not None:
                # The model cannot be served (its server said why, in one line): no log tail.
                raise ServingError(
                    f"the {arm} model server cannot serve {model} v{version}: {refused}"
                ) from None
            raise ServingError(f"the {arm} model server for {model} v{version} did not start: {exc}") from exc
        probe = self.probe(arm, model)
        if not probe.serves(model, version):
            self._stop(process)
            raise ServingError(
                f"the {arm} model server on {url} reports version {probe.version!r} of {model!r}, expected "
                f"{version!r} ({probe.detail})"
            )

    def _stop(self, process: ManagedProcess) -> None:
        try:
            process.stop(grace_s=self.stop_grace_s)
        except ProcessError as exc:
            raise ServingError(str(exc)) from exc

    def retire(self, arm: Arm) -> None:
        """Stop ``arm``'s server if it is ours; the port must then be free."""
        process = self.live_process(arm)
        if process is not None:
            self._stop(process)
            logger.info("stopped the %s model server (pid %d)", arm, process.pid)
        self._children.pop(arm, None)
        port = self.port(arm)
        deadline = time.monotonic() + 3.0
        while port_in_use(self.host, port):
            if process is None or time.monotonic() >= deadline:
                raise ServingError(
                    f"port {port} ({arm} model server) is taken by a process that is not ours; stop it "
                    f"or choose another serving.{arm}_port"
                )
            time.sleep(0.05)
