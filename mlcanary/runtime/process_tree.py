"""Process trees from Linux ``/proc``: the live :func:`descendants` of a process and
:func:`stop_groups` (SIGTERM, then SIGKILL, checked by start time so a reused pid is never
signalled). ``down`` uses them for the flow runs a Prefect worker starts in sessions of their own."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from mlcanary.runtime.processes import proc_stat_fields

__all__ = ["descendants", "stop_groups"]


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start ticks) of every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = proc_stat_fields(int(entry.name))
        if fields is None or fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        ticks[int(entry.name)] = int(fields[19])
    found: list[tuple[int, int]] = []
    queue = list(children.get(pid, []))
    while queue:
        child = queue.pop()
        found.append((child, ticks[child]))
        queue.extend(children.get(child, []))
    return found


def _same_process(pid: int, start_ticks: int) -> bool:
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == start_ticks


def stop_groups(processes: list[tuple[int, int]], grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``, the process groups of ``processes`` still alive
    (checked by start time, so a reused pid is never signalled)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [(pid, start) for pid, start in processes if _same_process(pid, start)]
        if not alive:
            return
        for pid, _ in alive:
            fields = proc_stat_fields(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if fields is not None and int(fields[2]) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_same_process(p, s) for p, s in alive):
            time.sleep(0.1)
