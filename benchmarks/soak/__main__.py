"""``python -m benchmarks.soak``: a soak of the local stack through a release (see the package)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import benchmarks.soak as package
from benchmarks.serving.cpu import wait_idle
from benchmarks.serving.machine import machine_facts
from benchmarks.serving.measure import say
from benchmarks.serving.report import replace_block
from benchmarks.soak.plan import FAILURE_SHARE, SOAK_MARKERS, STEPS, SoakPlan
from benchmarks.soak.report import memory_flat, render
from benchmarks.soak.run import run_soak, soak_settings
from mlcanary.runtime.env import quiet_defaults


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM / SIGHUP: unwind (SystemExit) so that every ``finally`` stops what it started."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(package.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--minutes", type=float, default=10.0, help="duration in minutes (default 10)")
    parser.add_argument("--out", type=Path, help="markdown file whose bench:soak block is rewritten")
    parser.add_argument("--rows", type=int, default=2000, help="synthetic training rows (default 2000)")
    parser.add_argument("--estimator", help="override model.estimator (default: the local profile's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replayed rows (default 0)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before starting, wait up to S seconds for other processes to use < 10%% of a core",
    )
    args = parser.parse_args(argv)
    try:
        plan = SoakPlan(rate=args.rate, minutes=args.minutes, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    quiet_defaults()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlcanary-soak-") as tmp:
        settings = soak_settings(plan, Path(tmp), args.rows, args.estimator)
        facts = machine_facts(settings, argparse.Namespace(quick=False, omp_threads=None))
        facts["command"] = f"python -m benchmarks.soak --rate {args.rate:g} --minutes {args.minutes:g}"
        facts["release"] = (
            f"steps {' → '.join(f'{s} %' for s in STEPS)}, bake {plan.bake_s:.0f} s each, a tick every "
            f"{plan.tick_interval_s} s; the candidate fails {FAILURE_SHARE:.0%} of its model calls "
            f"after {plan.healthy_calls:,}"
        )
        if args.wait_idle > 0:
            others = wait_idle(args.wait_idle)
            say(f"other processes use {others:.0%} of a core; starting")
        result = run_soak(plan, settings, Path(tmp))
    load1, load5, _ = os.getloadavg()
    facts["load average after the run (1 / 5 min)"] = f"{load1:.2f} / {load5:.2f}"
    result.facts = facts
    report = render(result, time.perf_counter() - started)
    print(report)
    if args.out is not None:
        replace_block(args.out, SOAK_MARKERS, report)
        say(f"wrote the soak block of {args.out}")
    return 0 if result.reconciliation.ok and memory_flat(result) else 1


if __name__ == "__main__":
    sys.exit(main())
