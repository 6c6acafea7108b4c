"""``LocalBackend``: the :class:`~mlcanary.serving.backend.ServingBackend` of the local stack.

A real Envoy (the front door, :class:`~mlcanary.serving.local.envoy.EnvoyProxy`) splits traffic
between two model-server processes (``python -m mlcanary.serving.local.model_server``): the
champion arm on ``serving.champion_port`` and the candidate arm on ``serving.candidate_port``.

Where the truth lives, so that separate processes (CLI commands, flow runs) see the same state:

* weights: Envoy's admin endpoint (what it serves), never the files we wrote;
* which version an arm serves: the server itself (``GET /v1/models/<name>`` reports its version);
* which processes are ours: pidfiles ``<state>/run/model-champion.pid`` and ``model-candidate.pid``
  (plus Envoy's ``envoy.pid``); anything else listening on our ports is someone else's and is
  refused, never killed;
* what was asked for: ``<state>/serving/intent.json`` (model, champion and candidate versions, and
  the version being promoted while a promotion runs). It is intent, not observation: it lets a
  promotion interrupted after the candidate server stopped converge, and tells a crashed candidate
  (refuse to promote) from one that was never deployed or already promoted (a no-op).

Changing the version an arm serves means stopping its server and starting another on the same
port. Traffic is moved off that arm first whenever the other arm is ready; if no other arm is
ready there is a short gap (requests to that arm fail with 503 until the new server is ready).
Mutating calls are serialised across processes by ``<state>/serving/backend.lock``; ``rollback``
moves the weights *before* taking that lock, so a long ``deploy`` elsewhere cannot delay it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from mlcanary.serving.backend import ARMS, ArmStatus, ServingError, ServingStatus
from mlcanary.serving.local.envoy import (
    AlreadyRunningError,
    EnvoyError,
    EnvoyLayout,
    EnvoyNotRunningError,
    EnvoyProxy,
    Weights,
    load_persisted_weights,
    new_version,
    write_routes,
)
from mlcanary.serving.local.envoy_config import Arm
from mlcanary.serving.local.processes import (
    ManagedProcess,
    PidRecord,
    ProcessError,
    find_running,
    read_pidfile,
    start_process,
    wait_for_http,
)

if TYPE_CHECKING:
    from mlcanary.config import Settings

__all__ = [
    "MODEL_SERVER_MODULE",
    "LocalBackend",
    "TrafficChange",
    "collector_base_url",
    "port_in_use",
    "server_process_name",
]

logger = logging.getLogger(__name__)

MODEL_SERVER_MODULE: Final = "mlcanary.serving.local.model_server"
#: Environment every child gets: no telemetry calls, no progress bars in logs, unbuffered output.
CHILD_ENV: Final[dict[str, str]] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PYTHONUNBUFFERED": "1",
}
# One BLAS/OpenMP thread per model server unless the environment says otherwise: two servers on
# 2 cores oversubscribe (single-row predict P95 went from ~13 ms to ~1 s under load).
DEFAULT_OMP_THREADS: Final = "1"
_SERVING_DIRNAME = "serving"
_LOG_DIRNAME = "logs"


def load_failure(log_tail: str) -> str | None:
    """The one-line reason a model server gave for not serving its model (None if it gave none)."""
    from mlcanary.serving.local.model_server import LOAD_FAILED_PREFIX

    lines = [line for line in log_tail.splitlines() if line.startswith(LOAD_FAILED_PREFIX)]
    if not lines:
        return None
    reason = lines[-1].removeprefix(LOAD_FAILED_PREFIX).strip()
    _, _, reason = reason.partition(": ") if reason.count(": ") else ("", "", reason)
    return reason or lines[-1]


def server_process_name(arm: Arm) -> str:
    """Pidfile name of ``arm``'s model server (``model-champion`` / ``model-candidate``)."""
    return f"model-{arm}"


def url_host(host: str) -> str:
    """``host`` as it appears in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def collector_base_url(settings: Settings) -> str:
    """Base URL of the local inference-log collector, e.g. ``http://127.0.0.1:8090``."""
    return f"http://{url_host(settings.serving.host)}:{settings.serving.collector_port}"


def port_in_use(host: str, port: int, timeout_s: float = 0.25) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class TrafficChange:
    """A weight change that Envoy confirmed (read back from its admin endpoint).

    ``elapsed_ms`` runs from the start of the backend call to Envoy's confirmation (for
    ``rollback`` nothing else happens first); ``apply_ms`` from the routes-file rename to the first
    admin read showing the new table. ``previous`` is what Envoy served before, if it was readable.
    """

    action: str
    weights: Weights
    previous: Weights | None
    routes_version: str
    elapsed_ms: float
    apply_ms: float
    applied_at: datetime


@dataclass(frozen=True)
class _Probe:
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
            and _argv_value(self.process.record.argv, "--name") == model
        )

    def to_status(self) -> ArmStatus:
        return ArmStatus(
            arm=self.arm, version=self.version, ready=self.ready, url=self.url, detail=self.detail
        )


@dataclass
class _LockState:
    depth: int = 0
    handle: Any = None
    thread_lock: threading.RLock = field(default_factory=threading.RLock)


@dataclass(frozen=True)
class _Intent:
    """What the last mutating call asked of ``model``'s arms (see the module docstring)."""

    model: str
    champion: str | None = None
    candidate: str | None = None
    promoting: str | None = None


def _argv_value(argv: list[str], flag: str) -> str | None:
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        return None


def _percent(weights: Weights) -> dict[Arm, int]:
    champion = round(weights.champion * 100 / weights.total)
    return {"champion": champion, "candidate": 100 - champion}


def _check_percent(candidate_percent: int) -> None:
    if (
        not isinstance(candidate_percent, int)
        or isinstance(candidate_percent, bool)
        or not 0 <= candidate_percent <= 100
    ):
        raise ServingError(f"candidate_percent must be an integer 0..100, got {candidate_percent!r}")


class LocalBackend:
    """``ServingBackend`` over the local stack: Envoy + a champion and a candidate model server.

    Contract (beyond the protocol's):

    * ``deploy`` starts Envoy if it is not running (booting with the persisted weights, or 100/0
      when those would route to a candidate that is not ready), makes each arm's server serve the
      requested version (replacing a server that serves another one), stops the candidate server
      when no candidate is requested, and returns after Envoy confirms the new weights.
    * ``set_traffic`` refuses (``ServingError``) to give weight to an arm that is not ready.
    * ``promote`` sends all traffic to the candidate, restarts the champion server on the
      candidate's version, sends all traffic to it and stops the candidate server; re-running it
      after a crash at any step finishes the job, and re-running it afterwards is a no-op.
    * ``rollback`` confirms 100/0 from Envoy first (``last_change.elapsed_ms``, also in the returned
      ``detail`` and logged), then stops the candidate server. With Envoy down, 100/0 is persisted
      for its next start. If the champion is not ready the candidate is left running and
      ``ServingError`` says so (the weights have moved anyway: the candidate was judged bad).
    * Processes this object starts keep running after it is gone; ``mlcanary down``
      (:func:`mlcanary.serving.local.stack.down`) stops them.
    * Does not start the collector; model servers post events to ``collector_base_url/events``
      and count (and log) what they could not deliver.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        python: str = sys.executable,
        ready_timeout_s: float = 90.0,
        stop_grace_s: float = 10.0,
        probe_timeout_s: float = 2.0,
        lock_timeout_s: float = 300.0,
        envoy_concurrency: int | None = None,
        child_log_level: str = "warning",
    ) -> None:
        self.settings = settings
        self.python = python
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.probe_timeout_s = probe_timeout_s
        self.lock_timeout_s = lock_timeout_s
        self.child_log_level = child_log_level
        self.layout = EnvoyLayout.from_settings(settings)
        self.envoy = EnvoyProxy(self.layout, concurrency=envoy_concurrency)
        self.last_change: TrafficChange | None = None
        self._children: dict[Arm, ManagedProcess] = {}
        self._lock = _LockState()
        self._client: httpx.Client | None = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The absolute state directory (pidfiles in ``run/``, logs in ``logs/``)."""
        return self.layout.state_dir

    @property
    def host(self) -> str:
        return self.settings.serving.host

    def arm_port(self, arm: Arm) -> int:
        """The port ``arm``'s model server listens on."""
        serving = self.settings.serving
        return serving.champion_port if arm == "champion" else serving.candidate_port

    def arm_url(self, arm: Arm) -> str:
        """Base URL of ``arm``'s model server (bypassing Envoy)."""
        return f"http://{url_host(self.host)}:{self.arm_port(arm)}"

    @property
    def front_door_url(self) -> str:
        """Base URL of Envoy's listener: the one URL clients call."""
        return f"http://{url_host(self.host)}:{self.settings.serving.front_door_port}"

    @property
    def collector_events_url(self) -> str:
        """Where model servers post their CloudEvents."""
        return collector_base_url(self.settings) + "/events"

    @property
    def _serving_dir(self) -> Path:
        return self.state_dir / _SERVING_DIRNAME

    @property
    def _intent_path(self) -> Path:
        return self._serving_dir / "intent.json"

    # -- the protocol ----------------------------------------------------------------------------

    def deploy(
        self, model: str, champion: str, candidate: str | None = None, candidate_percent: int = 0
    ) -> ServingStatus:
        """Serve ``champion`` (and ``candidate`` at ``candidate_percent`` %) for ``model``."""
        _check_percent(candidate_percent)
        if candidate is None and candidate_percent:
            raise ServingError(f"candidate_percent={candidate_percent} needs a candidate version")
        champion, candidate = str(champion), None if candidate is None else str(candidate)
        with self._exclusive():
            # A new deployment supersedes any promotion left unfinished.
            self._write_intent(_Intent(model, champion=champion, candidate=candidate))
            self._ensure_envoy(model)
            champ = self._probe("champion", model)
            cand = self._probe("candidate", model)
            need_champion = not champ.serves(model, champion)
            need_candidate = candidate is not None and not cand.serves(model, candidate)
            starting: dict[Arm, tuple[ManagedProcess, str]] = {}
            drained_to_candidate = False
            if need_champion:
                if cand.ready:
                    # Keep answering while the champion's port changes hands.
                    self._set_weights(Weights(champion=0, candidate=100), "deploy: drain champion")
                    drained_to_candidate = True
                starting["champion"] = (self._replace("champion", model, champion), champion)
            if candidate is not None and need_candidate and not drained_to_candidate:
                if not need_champion:
                    self._set_weights(Weights(champion=100, candidate=0), "deploy: drain candidate")
                starting["candidate"] = (self._replace("candidate", model, candidate), candidate)
            # Both arms load in parallel when neither has to carry traffic for the other.
            if "champion" in starting:
                self._await("champion", model, *starting["champion"])
            if candidate is not None and need_candidate and drained_to_candidate:
                self._set_weights(Weights(champion=100, candidate=0), "deploy: drain candidate")
                starting["candidate"] = (self._replace("candidate", model, candidate), candidate)
            if "candidate" in starting:
                self._await("candidate", model, *starting["candidate"])
            if candidate is None and cand.process is not None:
                self._set_weights(Weights(champion=100, candidate=0), "deploy: no candidate")
                self._retire("candidate")
            change = self._set_weights(Weights.canary(candidate_percent), "deploy")
            detail = (
                f"deploy: champion v{champion}"
                + (f", candidate v{candidate} at {candidate_percent}%" if candidate is not None else "")
                + f"; weights confirmed by Envoy ({change.weights.champion}/{change.weights.candidate})"
            )
            return self._status(model, detail)

    def set_traffic(self, model: str, candidate_percent: int) -> ServingStatus:
        """Send ``candidate_percent`` % to the candidate; refuse weight for an arm that is not ready."""
        _check_percent(candidate_percent)
        with self._exclusive():
            self._require_envoy()
            if candidate_percent > 0:
                cand = self._probe("candidate", model)
                if not cand.ready:
                    raise ServingError(
                        f"cannot send {candidate_percent}% of {model!r} to the candidate: no ready "
                        f"candidate at {cand.url} ({cand.detail}); deploy a candidate first"
                    )
            if candidate_percent < 100:
                champ = self._probe("champion", model)
                if not champ.ready:
                    raise ServingError(
                        f"cannot send {100 - candidate_percent}% of {model!r} to the champion: it is not "
                        f"ready at {champ.url} ({champ.detail})"
                    )
            change = self._set_weights(Weights.canary(candidate_percent), "set_traffic")
            return self._status(
                model,
                f"set_traffic: {change.weights.champion}/{change.weights.candidate} confirmed by Envoy "
                f"in {change.elapsed_ms:.1f} ms",
            )

    def promote(self, model: str) -> ServingStatus:
        """All traffic to the candidate's version, which then runs as the only (champion) arm."""
        with self._exclusive():
            self._require_envoy()
            champ = self._probe("champion", model)
            cand = self._probe("candidate", model)
            intent = self._read_intent(model)
            if cand.ready and cand.version is not None:
                target = cand.version
                self._write_intent(_Intent(model, champion=champ.version, candidate=target, promoting=target))
            elif intent.promoting is not None:
                target = intent.promoting  # interrupted after the candidate server was stopped
            elif intent.candidate is not None or cand.process is not None:
                raise ServingError(
                    f"refusing to promote {model!r}: candidate v{intent.candidate or '?'} is not ready "
                    f"({cand.detail})"
                )
            elif champ.ready:
                self._set_weights(Weights(champion=100, candidate=0), "promote: nothing to do")
                return self._status(
                    model, f"promote: no candidate arm; champion already serves v{champ.version} (no-op)"
                )
            else:
                raise ServingError(f"nothing to promote for {model!r}: no candidate and no ready champion")
            if not champ.serves(model, target):
                if cand.ready:
                    self._set_weights(Weights(champion=0, candidate=100), "promote: all to candidate")
                process = self._replace("champion", model, target)
                self._await("champion", model, process, target)
            self._set_weights(Weights(champion=100, candidate=0), "promote")
            self._retire("candidate")
            self._write_intent(_Intent(model, champion=target))
            return self._status(model, f"promote: champion serves v{target} with 100% of traffic")

    def rollback(self, model: str) -> ServingStatus:
        """100/0 at once, confirmed by Envoy (elapsed ms in ``detail``); then stop the candidate."""
        started = time.perf_counter()
        target = Weights(champion=100, candidate=0)
        note: str
        if self.envoy.running():
            change = self._set_weights(target, "rollback", started=started)
            note = (
                f"rollback: 100/0 confirmed by Envoy {change.elapsed_ms:.1f} ms after the call "
                f"(routes applied {change.apply_ms:.1f} ms after the swap)"
            )
        else:
            # Nothing serves now; make sure the next start does not route to the candidate.
            write_routes(self.layout, target, new_version(target))
            note = "rollback: Envoy is not running; 100/0 persisted for its next start"
        logger.info("%s", note)
        with self._exclusive():
            champ = self._probe("champion", model)
            if self.envoy.running() and not champ.ready:
                raise ServingError(
                    f"{note}, but the champion of {model!r} is not ready ({champ.detail}); the candidate "
                    "server was left running"
                )
            self._retire("candidate")
            intent = self._read_intent(model)
            self._write_intent(_Intent(model, champion=intent.champion or champ.version))
            return self._status(model, note + "; candidate server stopped")

    def status(self, model: str) -> ServingStatus:
        """Observed weights (Envoy admin), each arm's readiness and reported version, the endpoint."""
        return self._status(model, None)

    # -- observation -----------------------------------------------------------------------------

    def _status(self, model: str, detail: str | None) -> ServingStatus:
        notes = [detail] if detail else []
        traffic: dict[Arm, int] | None = None
        endpoint: str | None = None
        if self.envoy.running():
            try:
                traffic = _percent(self.envoy.observed_weights())
                endpoint = self.front_door_url
            except EnvoyError as exc:
                notes.append(f"Envoy is running but its admin endpoint does not answer: {exc}")
        else:
            notes.append("Envoy is not running (nothing serves traffic)")
        arms = {arm: self._probe(arm, model) for arm in ARMS}
        intent = self._read_intent(model)
        for arm, probe in arms.items():
            expected = intent.champion if arm == "champion" else intent.candidate
            if expected is not None and not probe.serves(model, expected):
                notes.append(
                    f"{arm} should serve v{expected} but {probe.detail or f'reports v{probe.version}'}"
                )
        if traffic is not None:
            for arm, probe in arms.items():
                if traffic[arm] > 0 and not probe.ready:
                    notes.append(f"{arm} gets {traffic[arm]}% of traffic but is not ready: that share fails")
        return ServingStatus(
            model=model,
            arms={arm: probe.to_status() for arm, probe in arms.items()},
            traffic=traffic,
            endpoint=endpoint,
            detail="; ".join(notes) or None,
        )

    def _live_process(self, arm: Arm) -> ManagedProcess | None:
        child = self._children.get(arm)
        if child is not None:
            if child.alive():  # also reaps our own child once it has exited
                return child
            self._children.pop(arm, None)
        return find_running(self.state_dir, server_process_name(arm))

    def _probe(self, arm: Arm, model: str) -> _Probe:
        recorded = read_pidfile(self.state_dir, server_process_name(arm))
        process = self._live_process(arm)
        url = self.arm_url(arm)

        def probe(
            answering: bool, detail: str | None, version: str | None = None, ready: bool = False
        ) -> _Probe:
            return _Probe(arm, url, answering, ready, version, process, recorded, detail)

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
        detail = None if process is not None else f"answers on port {self.arm_port(arm)} but is not ours"
        return probe(True, detail, version, bool(body.get("ready")))

    def _http(self) -> httpx.Client:
        """One keep-alive client for every probe of this backend (created on first use)."""
        if self._client is None:
            self._client = httpx.Client(timeout=self.probe_timeout_s, trust_env=False)
        return self._client

    def close(self) -> None:
        """Release the probe client (the backend stays usable: the next probe opens a new one)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _why_silent(self, arm: Arm, exc: Exception) -> str:
        port = self.arm_port(arm)
        process = self._live_process(arm)
        if process is not None:
            version = _argv_value(process.record.argv, "--version")
            return f"pid {process.pid} (v{version}) is running but port {port} does not answer yet: {exc}"
        record = read_pidfile(self.state_dir, server_process_name(arm))
        if record is not None:
            version = _argv_value(record.argv, "--version")
            return f"pid {record.pid} (v{version}) has exited; log {record.log_path}"
        return f"no model server on port {port}"

    # -- processes -------------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **CHILD_ENV}
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
            str(self.arm_port(arm)),
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
            self.collector_events_url,
            "--threshold",
            repr(settings.training.decision_threshold),
            "--outputs",
            settings.model.outputs.model_dump_json(),
            "--log-level",
            self.child_log_level,
        ]

    def _replace(self, arm: Arm, model: str, version: str) -> ManagedProcess:
        """Return a process of ours that is (or will soon be) serving ``version`` on ``arm``'s port."""
        process = self._live_process(arm)
        if process is not None:
            argv = process.record.argv
            if _argv_value(argv, "--name") == model and _argv_value(argv, "--version") == version:
                # Started by a caller that crashed or timed out while it loaded: wait for it.
                return process
        self._retire(arm)
        port = self.arm_port(arm)
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

    def _await(self, arm: Arm, model: str, process: ManagedProcess, version: str) -> None:
        url = self.arm_url(arm)
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
        probe = self._probe(arm, model)
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

    def _retire(self, arm: Arm) -> None:
        """Stop ``arm``'s server if it is ours; the port must then be free."""
        process = self._live_process(arm)
        if process is not None:
            self._stop(process)
            logger.info("stopped the %s model server (pid %d)", arm, process.pid)
        self._children.pop(arm, None)
        port = self.arm_port(arm)
        deadline = time.monotonic() + 3.0
        while port_in_use(self.host, port):
            if process is None or time.monotonic() >= deadline:
                raise ServingError(
                    f"port {port} ({arm} model server) is taken by a process that is not ours; stop it "
                    f"or choose another serving.{arm}_port"
                )
            time.sleep(0.05)

    # -- Envoy -----------------------------------------------------------------------------------

    def _require_envoy(self) -> None:
        if not self.envoy.running():
            raise ServingError(
                f"the local stack is not running (no Envoy for {self.state_dir}); run `mlcanary up`"
            )

    def _ensure_envoy(self, model: str) -> None:
        if not self.envoy.running():
            layout = self.layout
            taken = [
                f"{what} {port}"
                for what, port in (("front door", layout.listener_port), ("Envoy admin", layout.admin_port))
                if port_in_use(layout.host if what == "front door" else layout.admin_host, port)
            ]
            if taken:
                raise ServingError(
                    f"cannot start Envoy: {', '.join(taken)} taken by a process that is not ours"
                )
            weights = load_persisted_weights(layout) or Weights(champion=100, candidate=0)
            if weights.candidate > 0 and not self._probe("candidate", model).ready:
                weights = Weights(champion=100, candidate=0)
            self.envoy.initial_weights = weights
            try:
                self.envoy.start()
            except AlreadyRunningError:
                pass  # started meanwhile by another process; checked below
            except EnvoyError as exc:
                raise ServingError(f"cannot start Envoy: {exc}") from exc
        deadline = time.monotonic() + 10.0
        while True:
            try:
                self.envoy.observed()
                return
            except EnvoyNotRunningError as exc:
                if time.monotonic() >= deadline:
                    raise ServingError(f"Envoy runs but its admin endpoint does not answer: {exc}") from exc
            except EnvoyError as exc:
                raise ServingError(f"Envoy does not serve the expected routes: {exc}") from exc
            time.sleep(0.1)

    def _set_weights(self, weights: Weights, action: str, *, started: float | None = None) -> TrafficChange:
        started = time.perf_counter() if started is None else started
        try:
            applied = self.envoy.set_weights(weights)
        except EnvoyError as exc:
            raise ServingError(f"{action}: Envoy did not confirm weights {weights}: {exc}") from exc
        change = TrafficChange(
            action=action,
            weights=applied.weights,
            previous=applied.previous,
            routes_version=applied.version,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
            apply_ms=applied.apply_ms,
            applied_at=applied.applied_at,
        )
        self.last_change = change
        logger.info(
            "%s: Envoy serves %d/%d (was %s), %.1f ms after the call",
            action,
            weights.champion,
            weights.candidate,
            None if applied.previous is None else f"{applied.previous.champion}/{applied.previous.candidate}",
            change.elapsed_ms,
        )
        return change

    # -- promotion intent and locking ------------------------------------------------------------

    def _read_intent(self, model: str) -> _Intent:
        """The recorded intent for ``model`` (empty if none, unreadable, or for another model)."""
        try:
            data = json.loads(self._intent_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return _Intent(model)
        if not isinstance(data, dict) or data.get("model") != model:
            return _Intent(model)

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return _Intent(model, text("champion"), text("candidate"), text("promoting"))

    def _write_intent(self, intent: _Intent) -> None:
        path = self._intent_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        payload = {**asdict(intent), "updated_at": datetime.now(UTC).isoformat()}
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise mutating calls across threads and processes (re-entrant within a thread)."""
        state = self._lock
        if not state.thread_lock.acquire(timeout=self.lock_timeout_s):
            raise ServingError(f"another thread holds the local backend for over {self.lock_timeout_s:g}s")
        try:
            if state.depth == 0:
                self._serving_dir.mkdir(parents=True, exist_ok=True)
                path = self._serving_dir / "backend.lock"
                handle = open(path, "a+")  # noqa: SIM115 (held across the with-body below)
                deadline = time.monotonic() + self.lock_timeout_s
                while True:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            handle.close()
                            raise ServingError(
                                f"another process holds {path} for over {self.lock_timeout_s:g}s"
                            ) from None
                        time.sleep(0.05)
                state.handle = handle
            state.depth += 1
            try:
                yield
            finally:
                state.depth -= 1
                if state.depth == 0 and state.handle is not None:
                    fcntl.flock(state.handle.fileno(), fcntl.LOCK_UN)
                    state.handle.close()
                    state.handle = None
        finally:
            state.thread_lock.release()
