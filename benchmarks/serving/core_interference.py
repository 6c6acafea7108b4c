"""How much work on one CPU slows a fixed workload on another: the machine's share of what
mirroring costs the user's path when the candidate computes on the second core.

On a virtual machine two vCPUs may share one physical core (SMT siblings on the host) or one power
budget, so a candidate computing on "its own" core can still slow the champion's. The probe runs a
fixed workload (a NumPy matrix product and a Python loop, single-threaded) on ``user_cpu`` while a
spinner process on ``other_cpu`` is idle, busy 10 % of the time (1 ms of every 10) or busy all the
time; the three states rotate round by round so all see the same machine, and the median of each
is reported.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Final

from mlcanary.runtime.processes import cpu_seconds

#: What the spinner does: nothing, 1 ms busy in every 10 ms, busy all the time.
STATES: Final = ("idle", "10% busy", "busy")
_IDLE, _DUTY, _BUSY = range(3)


@dataclass(frozen=True)
class Interference:
    """Median milliseconds of the fixed workload on ``user_cpu`` per state of ``other_cpu``."""

    user_cpu: int
    other_cpu: int
    rounds: int
    median_ms: dict[str, float]
    spinner_cpu_s: dict[str, float]
    """CPU seconds the spinner used per state (shows it did what the state says)."""

    def slowdown(self, state: str) -> float:
        """The workload's median in ``state`` over its median with the other CPU idle, minus 1."""
        return self.median_ms[state] / self.median_ms["idle"] - 1.0


def _spin(state: multiprocessing.sharedctypes.Synchronized, cpu: int, ready: Any) -> None:  # type: ignore[type-arg]
    os.sched_setaffinity(0, {cpu})
    ready.set()
    while True:
        current = state.value
        if current == _IDLE:
            time.sleep(0.001)
        elif current == _BUSY:
            deadline = time.perf_counter() + 0.001
            while time.perf_counter() < deadline:
                pass
        else:
            deadline = time.perf_counter() + 0.001
            while time.perf_counter() < deadline:
                pass
            time.sleep(0.009)


def _workload() -> float:
    import numpy as np
    from threadpoolctl import threadpool_limits

    matrix = np.random.default_rng(0).random((200, 200))
    # One BLAS thread, as the model servers run (OMP_NUM_THREADS=1): a second thread would put
    # the workload itself on the other CPU.
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        for _ in range(20):
            matrix @ matrix
            total = 0
            for i in range(20_000):
                total += i
        return time.perf_counter() - started


def _cpu_seconds(pid: int) -> float:
    return cpu_seconds(pid) or 0.0


def probe(user_cpu: int = 0, other_cpu: int = 1, rounds: int = 30) -> Interference:
    """Run the workload ``rounds`` times per state, in this process pinned to ``user_cpu`` (its
    affinity is restored after), with the spinner on ``other_cpu``; the spinner is always stopped."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    context = multiprocessing.get_context("spawn")
    state = context.Value("i", _IDLE)
    ready = context.Event()
    spinner = context.Process(target=_spin, args=(state, other_cpu, ready), daemon=True)
    affinity = os.sched_getaffinity(0)
    timings: dict[str, list[float]] = {name: [] for name in STATES}
    spent = dict.fromkeys(STATES, 0.0)
    spinner.start()
    try:
        # The spawned spinner's own start (a new interpreter importing this module) must not count
        # as the first "idle" state's work.
        if not ready.wait(timeout=60):
            raise RuntimeError("the spinner process did not start within 60 s")
        os.sched_setaffinity(0, {user_cpu})
        _workload()  # warm-up: imports and caches
        for _ in range(rounds):
            for index, name in enumerate(STATES):
                state.value = index
                time.sleep(0.05)
                before = _cpu_seconds(spinner.pid or 0)
                timings[name].append(_workload())
                spent[name] += _cpu_seconds(spinner.pid or 0) - before
    finally:
        spinner.terminate()
        spinner.join(timeout=5)
        os.sched_setaffinity(0, affinity)
    return Interference(
        user_cpu=user_cpu,
        other_cpu=other_cpu,
        rounds=rounds,
        median_ms={name: statistics.median(values) * 1000 for name, values in timings.items()},
        spinner_cpu_s=spent,
    )


def report_interference(result: Interference) -> list[str]:
    """Markdown lines for the mirror block."""
    cells = " · ".join(
        f"CPU {result.other_cpu} {name}: {result.median_ms[name]:.2f} ms"
        + ("" if name == "idle" else f" ({result.slowdown(name):+.0%})")
        for name in STATES
    )
    return [
        "#### The machine's share: work on one core slows the other",
        "",
        f"`benchmarks/serving/core_interference.py`, right after the rotations above: a fixed "
        f"single-threaded workload (a NumPy matrix product and a Python loop) on CPU {result.user_cpu}, "
        f"the user's core, while a spinner on CPU {result.other_cpu} is idle, busy 1 ms in every 10, or "
        f"busy all the time (median of {result.rounds} rotations): {cells}.",
        "",
    ]
