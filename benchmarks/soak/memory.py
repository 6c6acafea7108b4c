"""Resident memory of every process of the soak, sampled from ``/proc``, and whether it stayed flat.

A process is sampled as its whole tree (the pid and its descendants), so a wrapper that forks or
execs is counted with its child. The verdict is pure (:func:`memory_trend`): a least-squares slope
over the samples after the warm-up, in MiB per minute, against :data:`FLAT_MIB_PER_MIN`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from mlcanary.runtime.process_tree import descendants

MIB: Final = 1024 * 1024
FLAT_MIB_PER_MIN: Final = 0.5
"""A process is flat when its RSS grows by at most this after the warm-up (30 MiB an hour)."""
MIN_FIT_SAMPLES: Final = 5
"""Fewer samples after the warm-up than this give no slope (and no verdict)."""


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (``VmRSS``), None if it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return 0  # a zombie or a kernel thread has no VmRSS line


def tree_rss(pid: int) -> int | None:
    """RSS of ``pid`` and its live descendants; None if ``pid`` has gone."""
    own = rss_bytes(pid)
    if own is None:
        return None
    return own + sum(rss_bytes(child) or 0 for child, _ in descendants(pid))


@dataclass
class MemorySampler:
    """Samples ``pids()`` (name → pid, asked again every time: a process may come and go) every
    ``interval_s`` seconds on a daemon thread, from :meth:`start` until :meth:`stop`."""

    pids: Callable[[], Mapping[str, int]]
    interval_s: float = 2.0
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self, t0: float | None = None) -> None:
        """Sample from now on; times are seconds after ``t0`` (monotonic; default now)."""
        self._t0 = time.monotonic() if t0 is None else t0
        self.sample()
        self._thread = threading.Thread(target=self._run, name="soak-memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sample()

    def sample(self) -> None:
        now = time.monotonic() - self._t0
        for name, pid in self.pids().items():
            rss = tree_rss(pid)
            if rss is not None:
                self.samples.setdefault(name, []).append((now, rss))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


@dataclass(frozen=True)
class MemoryTrend:
    """One process's RSS over the soak: first, last and largest sample, and the slope after the
    warm-up (None with too few samples there)."""

    name: str
    start_mib: float
    end_mib: float
    max_mib: float
    seconds: float
    slope_mib_per_min: float | None

    @property
    def flat(self) -> bool | None:
        if self.slope_mib_per_min is None:
            return None
        return self.slope_mib_per_min <= FLAT_MIB_PER_MIN


def memory_trend(
    name: str, samples: Sequence[tuple[float, int]], warmup_s: float, ready_s: float = 0.0
) -> MemoryTrend:
    """The trend of ``samples`` (seconds since the start, RSS bytes); the slope is fitted to the
    samples from ``warmup_s`` after the process was ready (``ready_s``, e.g. a model server started
    mid-soak, which loads its model first) or after its own first sample, whichever is later."""
    if not samples:
        raise ValueError(f"no memory samples for {name}")
    t = np.array([s[0] for s in samples], dtype=float)
    mib = np.array([s[1] for s in samples], dtype=float) / MIB
    settled = t >= max(t[0], ready_s) + warmup_s
    slope = None
    if np.count_nonzero(settled) >= MIN_FIT_SAMPLES and np.ptp(t[settled]) > 0:
        slope = float(np.polyfit(t[settled] / 60.0, mib[settled], 1)[0])
    return MemoryTrend(
        name=name,
        start_mib=float(mib[0]),
        end_mib=float(mib[-1]),
        max_mib=float(mib.max()),
        seconds=float(t[-1] - t[0]),
        slope_mib_per_min=slope,
    )
