"""Who used the CPU during a phase: this benchmark (and every process it started) or others.

Read from ``/proc`` with the project's own helpers (:func:`mlcanary.runtime.processes.cpu_seconds`,
:func:`mlcanary.runtime.process_tree.descendants`, pidfiles through
:func:`mlcanary.runtime.processes.find_running`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks.serving.measure import say
from mlcanary.runtime.process_tree import descendants
from mlcanary.runtime.processes import cpu_seconds, find_running, proc_stat_fields

STACK_PROCESSES = ("envoy", "model-champion", "model-candidate", "collector")


def ours() -> set[int]:
    """This process and every live descendant (the stack's processes, the client worker)."""
    return {os.getpid(), *(pid for pid, _ in descendants(os.getpid()))}


@dataclass
class CpuShare:
    """CPU seconds used during one phase by this benchmark (and the stack it started) and by others."""

    seconds: float
    ours: float
    others: float


def machine_busy_seconds(stat: str | None = None) -> float:
    """CPU seconds every CPU of the machine spent busy so far (user, nice, system, irq, softirq),
    from the first line of ``/proc/stat`` (or ``stat``, its text); 0.0 where it cannot be read."""
    if stat is None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                stat = handle.readline()
        except OSError:
            return 0.0
    fields = stat.split()
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def core_busy_seconds(cpus: Iterable[int]) -> float:
    """CPU seconds the CPUs ``cpus`` spent busy so far (the ``cpuN`` lines of ``/proc/stat``, counted
    as :func:`machine_busy_seconds` counts the machine); 0.0 where ``/proc/stat`` cannot be read."""
    wanted = {f"cpu{n}" for n in cpus}
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            lines = [line for line in handle if line.split(" ", 1)[0] in wanted]
    except OSError:
        return 0.0
    return sum(machine_busy_seconds("cpu " + line.split(" ", 1)[1]) for line in lines)


@contextlib.contextmanager
def cpu_phase(name: str, record: dict[str, CpuShare]) -> Iterator[None]:
    """Record in ``record[name]`` how the machine's CPU was used while the body ran.

    Ours = this process and every descendant alive at both ends (the stack's processes and the
    client are started from here); others = the rest of what the machine's CPUs were busy with
    (``/proc/stat``), so processes that started and ended within the phase (another engineer's
    test run) count too.
    """
    busy_before, mine, t0 = machine_busy_seconds(), ours(), time.monotonic()
    before = {pid: cpu_seconds(pid) or 0.0 for pid in mine}
    yield
    elapsed, busy = time.monotonic() - t0, machine_busy_seconds() - busy_before
    used = 0.0
    for pid in mine & ours():
        after = cpu_seconds(pid)
        if after is not None:
            used += max(0.0, after - before[pid])
    record[name] = CpuShare(elapsed, used, max(0.0, busy - used))


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


SIDE_PROCESSES = ("model-candidate", "collector")
"""What mirroring adds (the candidate computing the copies, the collector storing their events):
in a cluster, other pods; with ``--pin-candidate``, the last CPU."""


def core_split(
    client: int,
    stack: Mapping[str, int],
    children: Callable[[int], Iterable[int]],
) -> dict[int, Literal["path", "side"]]:
    """Which side of the split each process goes to: ``"side"`` for the candidate's server and the
    collector (:data:`SIDE_PROCESSES`) and their descendants, ``"path"`` for the user's path — the
    ``client`` process itself and the other stack processes (Envoy, the champion) with theirs.

    The stack's processes are the client's own children (the benchmark starts them), so the client
    is placed alone, never with its descendants, and a process under a side root is never moved
    onto the user's path: otherwise the candidate would compute every copy on the champion's core.
    """

    def tree(root: int) -> list[int]:
        found, queue = [], [root]
        while queue:
            pid = queue.pop()
            found.append(pid)
            queue.extend(children(pid))
        return found

    split: dict[int, Literal["path", "side"]] = {client: "path"}
    for name, pid in stack.items():
        if name not in SIDE_PROCESSES:
            split.update((member, "path") for member in tree(pid))
    for name, pid in stack.items():
        if name in SIDE_PROCESSES:
            split.update((member, "side") for member in tree(pid))
    return split


def tree_waited(pid: int) -> dict[int, float]:
    """Thread id → seconds it was ready to run but waited for a CPU, for every thread of ``pid``
    and its descendants (the run-queue delay of ``/proc/<pid>/task/<tid>/schedstat``). Compare two
    readings thread by thread (:func:`waited_between`): a thread that exited takes its count along."""
    found: dict[int, float] = {}
    for member in (pid, *(child for child, _ in descendants(pid))):
        for task in _tasks(member):
            try:
                with open(f"/proc/{member}/task/{task}/schedstat", encoding="ascii") as handle:
                    found[task] = int(handle.read().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                continue
    return found


def waited_between(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """Seconds waited between two :func:`tree_waited` readings, by the threads present in both."""
    return sum(max(0.0, after[tid] - before[tid]) for tid in after.keys() & before.keys())


def pin_candidate(state_dir: Path) -> str | None:
    """Split the cores as a cluster would (:func:`split_cores`) between this process (the client)
    and the stack recorded in ``state_dir``. Returns what was done, for the report, or None on a
    single core or without a candidate."""
    pids = stack_pids(state_dir)
    if "model-candidate" not in pids:
        return None
    return split_cores(os.getpid(), pids)


def split_cores(client: int, stack: Mapping[str, int]) -> str | None:
    """Pin the user's path (the ``client`` process, Envoy, the champion) to all but the last CPU
    this process may use, and what mirroring adds (the candidate's model server computing the
    copies, the collector storing their events; in a cluster, other pods) to the last one, as
    :func:`core_split` assigns them. Threads started later inherit it. Returns what was done, for
    the report, or None on a single core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    where = {"side": {cpus[-1]}, "path": set(cpus[:-1])}
    children = _children_map()
    for pid, part in core_split(client, stack, lambda pid: children.get(pid, [])).items():
        pin_tasks(pid, where[part])
    return (
        f"the user's path (client, Envoy, champion) on CPU {', '.join(map(str, cpus[:-1]))}; "
        f"the candidate's server and the collector on CPU {cpus[-1]}"
    )


def unpin(state_dir: Path) -> None:
    """Undo :func:`pin_candidate`: this process, its descendants and the stack back on every CPU
    (the benchmark's later phases measure the stack sharing the machine)."""
    every = set(range(os.cpu_count() or 1))
    children = _children_map()
    queue = [os.getpid(), *stack_pids(state_dir).values()]
    while queue:
        pid = queue.pop()
        pin_tasks(pid, every)
        queue.extend(children.get(pid, []))


def pin_tasks(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (affinity is per thread; uvicorn's and Envoy's
    already run); a process or thread that is gone is skipped."""
    for task in _tasks(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(task, cpus)


def _children_map() -> dict[int, list[int]]:
    """Parent pid → its live children's pids, from one pass over ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        fields = proc_stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _tasks(pid: int) -> list[int]:
    """Every thread of ``pid`` (affinity is per thread; uvicorn's and Envoy's already run)."""
    try:
        return [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]
