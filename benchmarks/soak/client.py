"""Start the soak's client process, wait for its first request, and read back what it saw."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.serving.plan import REPO_ROOT

#: How long the client may take past its last due send: in-flight requests (5 s timeout plus
#: grace) and the last labels (3 s delay plus the bounded wait).
_DRAIN_S = 30.0


@dataclass(frozen=True)
class ClientRecord:
    """One prediction the client got an HTTP answer for."""

    t_ns: int
    request_id: str
    status: int
    arm_served: str | None
    server_arm: str | None
    """Set when a model server answered (its ``x-mlcanary-server-arm``); None when Envoy did."""


@dataclass(frozen=True)
class ClientResult:
    """What the client process reported: the traffic report (``mlcanary traffic --json``'s shape)
    and one record per answered prediction."""

    report: dict[str, Any]
    records: list[ClientRecord]

    @property
    def run_id(self) -> str:
        return str(self.report["run_id"])


class ClientRun:
    """A running client process (its own process group)."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, log: Path, duration_s: float) -> None:
        self.proc = proc
        self.out = out
        self.log = log
        self.duration_s = duration_s

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self) -> ClientResult:
        """Wait for the client to finish its schedule and drain; its result."""
        try:
            code = self.proc.wait(timeout=self.duration_s + _DRAIN_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the client did not finish in time; see {self.log}") from None
        if code != 0 or not self.out.exists():
            raise RuntimeError(f"the client failed (exit {code}); see {self.log}")
        data = json.loads(self.out.read_text())
        return ClientResult(
            report=data["report"], records=[ClientRecord(*record) for record in data["records"]]
        )


@contextlib.contextmanager
def soak_client(work_dir: Path, config: dict[str, Any]) -> Iterator[ClientRun]:
    """Run :mod:`benchmarks.soak.client_worker` with ``config`` (url, collector_url, model, rate,
    duration_s, seed); yields once its first request is on the wire. The process group is killed
    on exit if it is still running (after an error, Ctrl-C or SIGTERM)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    out, ready = work_dir / "client.json", work_dir / "client.ready"
    path = work_dir / "client.config.json"
    path.write_text(json.dumps({**config, "out": str(out), "ready": str(ready)}))
    log_path = work_dir / "client.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.soak.client_worker", str(path)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60.0
            while not ready.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"the client exited with {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the client sent nothing within 60 s; see {log_path}")
                time.sleep(0.02)
            yield ClientRun(proc, out, log_path, float(config["duration_s"]))
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
