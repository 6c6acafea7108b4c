"""Child processes of the local stack: start in their own process group, wait until healthy, stop.

Each process is recorded in a pidfile ``<state_dir>/run/<name>.pid`` (JSON) so that another
process (``mlcanary down``) can find and stop it later. A pidfile whose process has exited, or
whose pid now belongs to a different process (checked by the kernel's start time on Linux), is
stale: it is removed and nothing is signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from mlcanary.runtime.atomic_files import write_atomic
from mlcanary.runtime.net import port_in_use

RUN_DIRNAME = "run"


class ProcessError(RuntimeError):
    """A managed process could not be started, became unhealthy, or could not be stopped."""


class AlreadyRunningError(ProcessError):
    """A live process with the same name is already recorded in the state directory."""


@dataclass(frozen=True)
class PidRecord:
    """What a pidfile holds. ``start_ticks`` identifies the process beyond its (reusable) pid."""

    name: str
    pid: int
    pgid: int
    argv: list[str]
    log_path: str
    started_at: float
    start_ticks: int | None


def pidfile_path(state_dir: Path, name: str) -> Path:
    """Where the pidfile of process ``name`` lives."""
    return Path(state_dir) / RUN_DIRNAME / f"{name}.pid"


def proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state [0], ppid [1], pgid [2],
    utime [11] and stime [12] in clock ticks, start time in clock ticks [19]), or None where the
    process or /proc is gone (Linux only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it are fixed.
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, seconds) ``pid`` has used so far, or None where it or /proc is gone."""
    fields = proc_stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_ticks(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks (Linux), or None where /proc is unavailable."""
    fields = proc_stat_fields(pid)
    return None if fields is None else int(fields[19])


def _is_zombie(pid: int) -> bool:
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] == "Z"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # An exited child of some other process stays a zombie until reaped; it is not running.
    return not _is_zombie(pid)


def read_pidfile(state_dir: Path, name: str) -> PidRecord | None:
    """The record in ``name``'s pidfile, or None if there is none or it is unreadable."""
    return _read_record(pidfile_path(state_dir, name))


def _read_record(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PidRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def _record_is_live(record: PidRecord) -> bool:
    if not _pid_alive(record.pid):
        return False
    if record.start_ticks is None:
        return True
    return _start_ticks(record.pid) == record.start_ticks


class ManagedProcess:
    """A process started by :func:`start_process` or found through its pidfile.

    Contract: :meth:`stop` signals the whole process group (SIGTERM, then SIGKILL after the grace
    period), waits for the leader to exit, and removes the pidfile; it is idempotent. A process
    found through a pidfile (``popen`` is None) can be stopped but not reaped by this process.
    """

    def __init__(self, record: PidRecord, pidfile: Path, popen: subprocess.Popen[bytes] | None = None):
        self.record = record
        self.pidfile = pidfile
        self.popen = popen

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def pid(self) -> int:
        return self.record.pid

    @property
    def log_path(self) -> Path:
        return Path(self.record.log_path)

    def alive(self) -> bool:
        """True while the process runs (for our own child: until it exits)."""
        if self.popen is not None:
            return self.popen.poll() is None
        return _record_is_live(self.record)

    def returncode(self) -> int | None:
        """Exit status of our own child once it has exited; None otherwise."""
        return None if self.popen is None else self.popen.poll()

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last ``max_bytes`` of the process's log, for error messages."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - max_bytes))
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _wait_exit(self, timeout_s: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _record_is_live(self.record):
                return True
            time.sleep(0.02)
        return not _record_is_live(self.record)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.record.pgid, sig)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the process group; SIGKILL whatever is left after ``grace_s`` seconds."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            if not self._wait_exit(grace_s):
                self._signal_group(signal.SIGKILL)
                if not self._wait_exit(5.0):
                    raise ProcessError(f"{self.name} (pid {self.pid}) survived SIGKILL")
            # Helpers the leader forked may outlive it in the same group; they go with it.
            self._signal_group(signal.SIGKILL)
        self._remove_pidfile()

    def _remove_pidfile(self) -> None:
        record = _read_record(self.pidfile)
        # Never delete a pidfile that a newer process of the same name has written meanwhile.
        if record is None or record.pid == self.pid:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()


def find_running(state_dir: Path, name: str) -> ManagedProcess | None:
    """The live process recorded as ``name``, or None. A stale pidfile is removed."""
    path = pidfile_path(state_dir, name)
    record = read_pidfile(state_dir, name)
    if record is None:
        if path.exists():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return None
    if not _record_is_live(record):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None
    return ManagedProcess(record, path)


def held_by_stranger(state_dir: Path, owner: str, host: str, port: int) -> bool:
    """True if something listens on ``host:port`` while our process ``owner`` (its pidfile name)
    is not running: the port is taken by a process that is not ours."""
    return find_running(state_dir, owner) is None and port_in_use(host, port)


def stop_by_pidfile(state_dir: Path, name: str, grace_s: float = 5.0) -> bool:
    """Stop the process recorded as ``name`` (from any process). True if one was running."""
    process = find_running(state_dir, name)
    if process is None:
        return False
    process.stop(grace_s=grace_s)
    return True


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    state_dir: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start ``argv`` in a new session (its own process group), output appended to ``log_path``.

    Raises :class:`AlreadyRunningError` if a live process is already recorded under ``name`` in
    ``state_dir``; a stale pidfile is replaced. The pidfile is written before returning.
    """
    existing = find_running(state_dir, name)
    if existing is not None:
        raise AlreadyRunningError(
            f"{name} is already running (pid {existing.pid}, pidfile {existing.pidfile}); stop it first"
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=None if env is None else dict(env),
                cwd=cwd,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {name}: {exc}") from exc
    record = PidRecord(
        name=name,
        pid=popen.pid,
        pgid=popen.pid,  # start_new_session makes the child its group leader
        argv=list(argv),
        log_path=str(log_path),
        started_at=time.time(),
        start_ticks=_start_ticks(popen.pid) if sys.platform.startswith("linux") else None,
    )
    path = pidfile_path(state_dir, name)
    write_atomic(path, json.dumps(asdict(record), indent=2))
    return ManagedProcess(record, path, popen)


def _fail_if_exited(process: ManagedProcess | None, what: str) -> None:
    if process is not None and not process.alive():
        raise ProcessError(
            f"{process.name} exited (status {process.returncode()}) while waiting for {what}; "
            f"log {process.log_path}:\n{process.log_tail()}"
        )


def wait_for_http(
    url: str | Callable[[], str | None],
    *,
    timeout_s: float,
    process: ManagedProcess | None = None,
    accept: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
    interval_s: float = 0.05,
    description: str | None = None,
) -> httpx.Response:
    """Poll ``url`` until ``accept(response)``; return that response.

    ``url`` may be a callable returning None while the address is not yet known (then say what it
    is in ``description``). Raises :class:`ProcessError`, with the tail of the process's log, when
    ``process`` exits first or after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    what = description or (url if isinstance(url, str) else "health URL")
    last = "no attempt"
    with httpx.Client(timeout=min(2.0, timeout_s), trust_env=False) as client:
        while True:
            _fail_if_exited(process, what)
            target = url() if callable(url) else url
            if target is not None:
                try:
                    response = client.get(target)
                    if accept(response):
                        return response
                    last = f"HTTP {response.status_code}: {response.text[:200]!r}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
            else:
                last = "address not known yet"
            if time.monotonic() >= deadline:
                tail = f"; log:\n{process.log_tail()}" if process is not None else ""
                raise ProcessError(
                    f"{target or 'health URL'} not healthy after {timeout_s:g}s (last: {last}){tail}"
                )
            time.sleep(interval_s)


def wait_for_port(host: str, port: int, *, timeout_s: float, process: ManagedProcess | None = None) -> None:
    """Wait until a TCP connection to ``host:port`` succeeds (the listener accepts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _fail_if_exited(process, f"{host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                tail = f"; log:\n{process.log_tail()}" if process is not None else ""
                raise ProcessError(
                    f"{host}:{port} does not accept connections after {timeout_s:g}s: {exc}{tail}"
                ) from exc
        time.sleep(0.02)
