"""The collector as a real process (``python -m mlcanary.telemetry.collector``) for integration tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(
    base_url: str, process: subprocess.Popen[bytes], log: Path, deadline_s: float = 30.0
) -> None:
    """Wait until ``/healthz`` answers 200; fail with the log if the process exits or time runs out."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"collector exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"collector not healthy after {deadline_s} s:\n{log.read_text(errors='replace')}")


@contextmanager
def collector(port: int, db_url: str, log: Path, *extra_args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A healthy collector process on ``127.0.0.1:port`` writing to ``db_url``; killed on exit."""
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
    with log.open("ab") as sink:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
