"""Facts about the machine and the run, for the report's header."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.provenance import commit, run_text

if TYPE_CHECKING:
    from mlcanary.config import Settings


def machine_facts(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    from mlcanary.serving.local.envoy import find_envoy_binary

    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    nproc = run_text(["nproc"]) or str(len(os.sched_getaffinity(0)))
    envoy = run_text([str(find_envoy_binary()), "--version"]) or "unknown"
    if "version:" in envoy:
        envoy = envoy.split("version:", 1)[1].strip()
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    load1, load5, _ = os.getloadavg()
    command = "python -m benchmarks.serving" + (" --quick" if args.quick else "")
    if args.omp_threads is not None:
        command += f" --omp-threads {args.omp_threads}"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{nproc} × {cpu_model} (nproc {nproc})",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB" if mem_kb else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "envoy": envoy,
        "commit": commit(),
        "load average before the run (1 / 5 min)": f"{load1:.2f} / {load5:.2f}",
        "model": (
            f"{settings.model.estimator}, trained on {settings.data.synthetic.rows:,} synthetic rows; "
            "requests carry one instance each"
        ),
        "OMP_NUM_THREADS seen by the model servers": os.environ.get("OMP_NUM_THREADS")
        or "1 (LocalBackend's default when the environment does not set it)",
        "command": command,
    }
