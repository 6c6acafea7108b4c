"""The collector as a real process (``python -m mlcanary.telemetry.collector``), for the tests and
benchmarks that need one outside the local stack (which starts its own through ``mlcanary up``)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["CollectorNotHealthyError", "collector_process", "wait_healthy"]


class CollectorNotHealthyError(RuntimeError):
    """The collector exited, or did not answer ``/healthz`` in time; the message ends with its log."""


def _log_text(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return ":\n" + log.read_text(errors="replace")[-4000:]


def wait_healthy(
    base_url: str, process: subprocess.Popen[bytes], log: Path | None = None, deadline_s: float = 30.0
) -> None:
    """Wait until ``base_url/healthz`` answers 200; raise :class:`CollectorNotHealthyError` (with the
    end of ``log``) if the process exits or ``deadline_s`` passes first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CollectorNotHealthyError(f"collector exited with {process.returncode}{_log_text(log)}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise CollectorNotHealthyError(f"collector not healthy after {deadline_s} s{_log_text(log)}")


@contextmanager
def collector_process(
    port: int,
    db_url: str,
    *extra_args: str,
    log: Path | None = None,
    stop_grace_s: float = 15.0,
    deadline_s: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A healthy collector on ``127.0.0.1:port`` writing to ``db_url`` (output appended to ``log``,
    or inherited without one). On exit it is sent SIGTERM and given ``stop_grace_s`` to finish
    (0: killed at once, as a crash would), then killed."""
    command = [
        sys.executable,
        "-m",
        "mlcanary.telemetry.collector",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db-url",
        db_url,
        "--log-level",
        "warning",
        *extra_args,
    ]
    if log is None:
        process = subprocess.Popen(command)
    else:
        with log.open("ab") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log, deadline_s)
        yield process
    finally:
        if process.poll() is None:
            if stop_grace_s > 0:
                process.terminate()
                try:
                    process.wait(stop_grace_s)
                except subprocess.TimeoutExpired:
                    process.kill()
            else:
                process.kill()
        process.wait(timeout=10)
