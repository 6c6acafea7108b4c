"""Wall time of CLI commands as a user runs them: ``mlcanary --help``, every ``--help``, ``status``.

Each command runs in a fresh process, as from a user's shell: ``PYTHONDONTWRITEBYTECODE`` is
removed from its environment so an unmeasured first run caches the bytecode, as Python does on a
user's first call. A machine whose environment forbids writing bytecode pays for compiling every
module on every call; :func:`cli_timings` also times ``--help`` and ``status`` that way (no
bytecode at all: an empty ``PYTHONPYCACHEPREFIX`` and ``PYTHONDONTWRITEBYTECODE=1``), shown apart.
Each run's CPU time (user + system, from ``getrusage``) is recorded beside its wall time: on a
shared machine the wall time grows with the load average, the CPU time much less, and on an idle
one the two are close (a CLI call is one thread that does not wait).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CliTiming:
    argv: tuple[str, ...]
    seconds: float  # median wall time of the runs
    runs: int
    ok: bool
    bytecode: bool = True  # False: every module compiled from source on each run
    cpu_seconds: float = 0.0  # median CPU time (user + system) of the runs: what load inflates least


def command_names() -> list[tuple[str, ...]]:
    """Every command and sub-command of the CLI (read from the typer app, not by running it)."""
    import typer.main

    from mlcanary.cli.main import app

    found: list[tuple[str, ...]] = []

    def walk(group: Any, prefix: tuple[str, ...]) -> None:
        # typer ships its own copy of click: duck-type the group rather than isinstance-check it.
        ctx = group.context_class(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None or getattr(command, "hidden", False):
                continue
            found.append((*prefix, name))
            if hasattr(command, "list_commands"):
                walk(command, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return found


def time_command(
    args: tuple[str, ...], env: Mapping[str, str], cwd: Path, runs: int, *, bytecode: bool = True
) -> CliTiming:
    binary = str(Path(sys.executable).with_name("mlcanary"))
    times, cpu = [], []
    ok = True
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [binary, *args], env=dict(env), cwd=cwd, capture_output=True, timeout=120, check=False
        )
        times.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        ok = ok and done.returncode == 0
    return CliTiming(
        ("mlcanary", *args), statistics.median(times), runs, ok, bytecode, statistics.median(cpu)
    )


def cli_timings(state_dir: Path, model: str, runs: int, all_help: bool) -> list[CliTiming]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["MLCANARY_STATE_DIR"] = str(state_dir)
    cwd = state_dir.parent
    # Once unmeasured, so every command starts from a warm page cache and cached bytecode.
    time_command(("--help",), env, cwd, 1)
    time_command(("status", model), env, cwd, 1)
    results = [time_command(("--help",), env, cwd, runs)]
    if all_help:
        results += [time_command((*names, "--help"), env, cwd, 1) for names in command_names()]
    results.append(time_command(("status", model), env, cwd, runs))
    results.append(time_command(("status", model, "--json"), env, cwd, runs))
    with tempfile.TemporaryDirectory(prefix="mlcanary-no-bytecode-") as empty:
        cold = {**env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": empty}
        for args in (("--help",), ("status", "--help"), ("status", model)):
            results.append(time_command(args, cold, cwd, min(runs, 3), bytecode=False))
    return results
