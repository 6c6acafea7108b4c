"""Continuous traffic from a separate client process while a measurement runs, and what it saw."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving.plan import CLIENT_MAX_REQUESTS, CLIENT_MAX_S, REPO_ROOT


@dataclass
class Traffic:
    """What the client process saw: one row per request, sorted by the time the response arrived."""

    t_send: np.ndarray
    t_recv: np.ndarray
    status: np.ndarray
    arm: list[str | None]
    routes_version: list[str | None]
    errors: list[str]

    @classmethod
    def load(cls, path: Path) -> Traffic:
        data = json.loads(path.read_text())
        records = data["records"]
        return cls(
            t_send=np.array([r[0] for r in records], dtype=np.int64),
            t_recv=np.array([r[1] for r in records], dtype=np.int64),
            status=np.array([r[2] for r in records], dtype=np.int64),
            arm=[r[3] for r in records],
            routes_version=[r[4] for r in records],
            errors=list(data["errors"]),
        )

    def __len__(self) -> int:
        return len(self.t_recv)

    def failed(self, start_ns: int | None = None, end_ns: int | None = None) -> int:
        mask = self._window(start_ns, end_ns)
        return int(np.count_nonzero(self.status[mask] != 200))

    def _window(self, start_ns: int | None, end_ns: int | None) -> np.ndarray:
        mask = np.ones(len(self), dtype=bool)
        if start_ns is not None:
            mask &= self.t_recv >= start_ns
        if end_ns is not None:
            mask &= self.t_recv < end_ns
        return mask

    def indices(self, start_ns: int | None = None, end_ns: int | None = None) -> np.ndarray:
        return np.flatnonzero(self._window(start_ns, end_ns))

    @property
    def rps(self) -> float:
        if len(self) < 2:
            return float("nan")
        return len(self) / ((self.t_recv[-1] - self.t_recv[0]) / 1e9)


@contextlib.contextmanager
def client_process(
    work_dir: Path, url: str, path: str, bodies: Sequence[bytes], threads: int, label: str
) -> Iterator[dict[str, Any]]:
    """Run :func:`client_worker` in its own process group while the body runs.

    Yields a dict that holds ``traffic`` (a :class:`Traffic`) once the body has finished. The
    process is stopped with SIGTERM (SIGKILL to its group if it does not exit) in every case.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    out, ready = work_dir / f"{label}.json", work_dir / f"{label}.ready"
    config = work_dir / f"{label}.config.json"
    config.write_text(
        json.dumps(
            {
                "url": url,
                "path": path,
                "threads": threads,
                "bodies": [b.decode() for b in bodies],
                "out": str(out),
                "ready": str(ready),
                "max_s": CLIENT_MAX_S,
                "max_requests": CLIENT_MAX_REQUESTS,
            }
        )
    )
    log = open(work_dir / f"{label}.log", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.serving.client_worker", str(config)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    result: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60.0
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"client worker exited with {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"client worker got no answer within 60 s; see {log.name}")
            time.sleep(0.02)
        yield result
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"client worker failed (exit {proc.returncode}); see {log.name}")
        result["traffic"] = Traffic.load(out)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
