"""Who used the CPU during a phase: this benchmark (and every process it started) or others.

Read from ``/proc`` with the project's own helpers (:func:`mlcanary.runtime.processes.cpu_seconds`,
:func:`mlcanary.runtime.process_tree.descendants`, pidfiles through
:func:`mlcanary.runtime.processes.find_running`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.serving.measure import say
from mlcanary.runtime.process_tree import descendants
from mlcanary.runtime.processes import cpu_seconds, find_running

STACK_PROCESSES = ("envoy", "model-champion", "model-candidate", "collector")


def cpu_table() -> dict[int, float]:
    """pid → CPU seconds so far, for every process on the machine."""
    table: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            used = cpu_seconds(int(entry.name))
            if used is not None:
                table[int(entry.name)] = used
    return table


def ours() -> set[int]:
    """This process and every live descendant (the stack's processes, the client worker)."""
    return {os.getpid(), *(pid for pid, _ in descendants(os.getpid()))}


@dataclass
class CpuShare:
    """CPU seconds used during one phase by this benchmark (and the stack it started) and by others."""

    seconds: float
    ours: float
    others: float


@contextlib.contextmanager
def cpu_phase(name: str, record: dict[str, CpuShare]) -> Iterator[None]:
    """Record in ``record[name]`` how the machine's CPU was used while the body ran.

    Ours = this process and every descendant alive at either end (the stack's processes and the
    client are started from here); others = every other process alive at both ends of the phase.
    """
    before, mine, t0 = cpu_table(), ours(), time.monotonic()
    yield
    after, elapsed = cpu_table(), time.monotonic() - t0
    mine |= ours()
    used = {True: 0.0, False: 0.0}
    for pid, cpu in after.items():
        if pid in before:
            used[pid in mine] += max(0.0, cpu - before[pid])
    record[name] = CpuShare(elapsed, used[True], used[False])


def wait_idle(timeout_s: float, threshold: float = 0.10, sample_s: float = 3.0) -> float:
    """Wait (up to ``timeout_s``) until other processes use under ``threshold`` of a core.

    Returns the last measured share of one core used by others.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        record: dict[str, CpuShare] = {}
        with cpu_phase("idle check", record):
            time.sleep(sample_s)
        share = record["idle check"].others / record["idle check"].seconds
        if share < threshold or time.monotonic() + sample_s > deadline:
            return share
        say(f"other processes use {share:.0%} of a core; waiting for the machine to be idle")
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))


def stack_pids(state_dir: Path) -> dict[str, int]:
    """Pidfile name → pid of the stack's running processes."""
    found: dict[str, int] = {}
    for name in STACK_PROCESSES:
        process = find_running(state_dir, name)
        if process is not None:
            found[name] = process.pid
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (the wheel's ``envoy`` script execs, but be safe)."""
    total = cpu_seconds(pid) or 0.0
    for child, _ in descendants(pid):
        total += cpu_seconds(child) or 0.0
    return total


def pin_candidate(state_dir: Path) -> str | None:
    """Split the cores as a cluster would: the user's path (this process's client, Envoy, the
    champion) on all but the last CPU; what mirroring adds (the candidate's model server computing
    the copies, and the collector storing their events) on the last one — in a cluster those are
    other pods. Threads started later inherit it. Returns what was done, for the report, or None on
    a single core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    side, path = {cpus[-1]}, set(cpus[:-1])
    pids = stack_pids(state_dir)
    if "model-candidate" not in pids:
        return None
    off_path = [pids.pop(name) for name in ("model-candidate", "collector") if name in pids]

    def pin(pid: int, where: set[int]) -> None:
        for member in (pid, *(child for child, _ in descendants(pid))):
            for task in _tasks(member):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.sched_setaffinity(task, where)

    for pid in off_path:
        pin(pid, side)
    for pid in (os.getpid(), *pids.values()):
        pin(pid, path)
    return (
        f"the user's path (client, Envoy, champion) on CPU {', '.join(map(str, sorted(path)))}; "
        f"the candidate's server and the collector on CPU {cpus[-1]}"
    )


def _tasks(pid: int) -> list[int]:
    """Every thread of ``pid`` (affinity is per thread; uvicorn's and Envoy's already run)."""
    try:
        return [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]
