"""``python -m benchmarks.serving``: the serving benchmarks of the local stack (see the package)."""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import benchmarks.serving as package
from benchmarks.serving.client import Traffic, client_process
from benchmarks.serving.core_interference import probe as probe_interference
from benchmarks.serving.core_interference import report_interference
from benchmarks.serving.cpu import CpuShare, cpu_phase, pin_candidate, stack_pids, unpin, wait_idle
from benchmarks.serving.flips import FlipOutcome, analyse_flips, atomic_write_ms, do_flips, report_flips
from benchmarks.serving.hop import bench_hop, report_hop
from benchmarks.serving.machine import machine_facts
from benchmarks.serving.measure import say
from benchmarks.serving.mirror import (
    MIRROR_MARKERS,
    SHARES,
    MirrorArm,
    bench_mirror,
    pooled,
    report_mirror,
    report_repeats,
    report_sink,
)
from benchmarks.serving.plan import FULL, QUICK, SERVING_MARKERS
from benchmarks.serving.report import replace_block, report_header
from benchmarks.serving.rollbacks import bench_rollbacks, report_rollbacks
from benchmarks.serving.setup import bench_settings, instances, predict_bodies, train_versions
from benchmarks.serving.sink import sink_for_candidate
from benchmarks.serving.throughput import bench_throughput, report_throughput
from mlcanary.runtime.env import quiet_defaults


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM / SIGHUP: unwind (SystemExit) so that every ``finally`` stops what it started."""
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> tuple[str, str]:
    """The serving report and the mirroring report (``--only mirror``: the latter alone)."""
    from mlcanary.serving.local.backend import LocalBackend
    from mlcanary.serving.local.stack import down, up

    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    rng = random.Random(args.seed)
    cpu: dict[str, CpuShare] = {}
    with tempfile.TemporaryDirectory(prefix="mlcanary-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        work_dir = Path(tmp) / "client"
        settings = bench_settings(state_dir, args.rows, args.estimator)
        facts = machine_facts(settings, args)
        model = settings.model.name
        say(
            f"training @champion and @candidate ({settings.model.estimator}, {args.rows} rows) in {state_dir}"
        )
        versions = train_versions(settings)
        bodies = predict_bodies(instances(settings))
        path = f"/v1/models/{model}:predict"
        try:
            say("bringing the local stack up (collector, Envoy, champion, candidate)")
            t0 = time.perf_counter()
            info = up(settings, candidate_percent=0)
            up_s = time.perf_counter() - t0
            facts["stack up"] = (
                f"{up_s:.1f} s (`mlcanary.serving.local.stack.up`: collector, Envoy and both model servers "
                f"ready); champion v{versions[0]}, candidate v{versions[1]}"
            )
            backend = LocalBackend(settings)
            if info.candidate_url is None:
                raise RuntimeError("the stack came up without a candidate")

            if args.wait_idle > 0:
                others = wait_idle(args.wait_idle)
                say(f"other processes use {others:.0%} of a core; measuring")
            pinned = None
            if args.pin_candidate:
                pinned = pin_candidate(state_dir)
                facts["cores (mirroring)"] = pinned or "not pinned: a single core"
                say(f"pinned: {pinned}")
            if args.no_log:
                facts["payload log (mirroring)"] = (
                    "off for the measured requests and their copies (`--no-log`)"
                )

            def rotations(
                phase: str, pids: dict[str, int], shares: tuple[float, ...]
            ) -> list[list[MirrorArm]]:
                """``args.repeat`` runs of the mirroring rotation, each its own CPU phase."""
                runs = []
                for repeat in range(args.repeat):
                    name = phase if args.repeat == 1 else f"{phase}, run {repeat + 1}"
                    say(f"{name} ({plan.mirror_requests} requests per share, blocks of {plan.mirror_block})")
                    with cpu_phase(name, cpu):
                        runs.append(
                            bench_mirror(
                                backend,
                                model,
                                info.front_door_url,
                                path,
                                bodies,
                                plan,
                                pids=pids,
                                log=not args.no_log,
                                shares=shares,
                            )
                        )
                return runs

            runs = rotations("mirroring", stack_pids(state_dir), SHARES)
            mirror = pooled(runs)
            sink_lines: list[str] = []
            if args.sink:
                port = settings.serving.candidate_port
                with sink_for_candidate(state_dir, port, model, versions[1]) as sink_pid:
                    pids = {**stack_pids(state_dir), "sink": sink_pid}
                    sink_runs = rotations("mirroring to the sink", pids, (0.0, 1.0))
                sink_lines = [
                    *report_sink(pooled(sink_runs), pinned is not None),
                    *report_repeats(sink_runs, "sink"),
                ]
            if pinned:
                say("the machine's share: a fixed workload on the user's core, the other core idle or busy")
                sink_lines += report_interference(probe_interference())
            cores = os.cpu_count() or 1
            mirror_lines = [
                *report_header(facts, time.perf_counter() - started, cpu),
                *report_mirror(mirror, cores, pinned),
                *report_repeats(runs),
                *sink_lines,
            ]
            mirror_report = "\n".join(mirror_lines).rstrip() + "\n"
            if args.only == "mirror":
                return "", mirror_report
            if pinned:
                unpin(state_dir)
            write_ms = atomic_write_ms(state_dir / "fsync-probe")
            say(f"Envoy hop latency ({plan.hop_requests} requests each way)")
            with cpu_phase("hop latency", cpu):
                hop = bench_hop(info.champion_url, info.front_door_url, path, bodies, plan)

            say(
                f"weight flips ({plan.flips} via LocalBackend.set_traffic, "
                f"{plan.flips} via EnvoyProxy.set_weights)"
            )
            flip_results: dict[str, tuple[list[FlipOutcome], Traffic]] = {}
            for method in ("LocalBackend.set_traffic", "EnvoyProxy.set_weights"):
                backend.set_traffic(model, 0)
                label = "flips-" + method.split(".")[0]
                with (
                    cpu_phase(f"flips via {method.split('.')[0]}", cpu),
                    client_process(
                        work_dir, info.front_door_url, path, bodies, plan.flip_clients, label
                    ) as run_,
                ):
                    flips = do_flips(backend, model, method, plan.flips, plan, rng)
                    time.sleep(plan.flip_gap_s)
                traffic: Traffic = run_["traffic"]
                flip_results[method] = (analyse_flips(flips, traffic), traffic)

            say(f"throughput ({plan.concurrencies} connections, {plan.throughput_s:g} s each)")
            with cpu_phase("throughput", cpu):
                throughput = bench_throughput(backend, model, path, bodies, plan)

            say(f"rollback latency ({plan.rollbacks} rollbacks from 50/50)")
            with cpu_phase("rollbacks (with redeploys)", cpu):
                rollbacks = bench_rollbacks(backend, model, versions, work_dir, path, bodies, plan)
        finally:
            say("taking the stack down")
            down(settings)
    lines = [
        *report_header(facts, time.perf_counter() - started, cpu),
        *report_hop(hop),
        *report_flips(flip_results, plan, write_ms),
        *report_rollbacks(rollbacks, plan.flip_clients),
        *report_throughput(throughput, cores),
    ]
    return "\n".join(lines).rstrip() + "\n", mirror_report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(package.__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer requests and repetitions (about half the time)"
    )
    parser.add_argument(
        "--out", type=Path, help="markdown file whose bench:serving and bench:mirror blocks are rewritten"
    )
    parser.add_argument(
        "--only", choices=["mirror"], help="measure only this part (mirror: the shadow phase's mirroring)"
    )
    parser.add_argument("--rows", type=int, default=2000, help="synthetic training rows (default 2000)")
    parser.add_argument("--estimator", help="override model.estimator (default: the local profile's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flip timing jitter (default 0)")
    parser.add_argument(
        "--omp-threads",
        type=int,
        help="set OMP_NUM_THREADS for the stack's processes (default: inherit the environment as is)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before measuring, wait up to S seconds for other processes to use < 10%% of a core",
    )
    parser.add_argument(
        "--pin-candidate",
        action="store_true",
        help="mirroring with the cluster's layout: the candidate's server and the collector on the last "
        "CPU, the user's path (client, Envoy, champion) on the others",
    )
    parser.add_argument(
        "--no-log",
        action="store_true",
        help="mirroring with the payload log off for its requests (a diagnostic: what the log costs)",
    )
    parser.add_argument(
        "--sink",
        action="store_true",
        help="with --only mirror: then replace the candidate by a server answering at once and "
        "measure again (what the user's path pays for the copy itself)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the mirroring rotation (and the sink's, with --sink) N times in the same stack: the "
        "tables pool them, and a table gives each run's added latency apart (default 1)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.sink and args.only != "mirror":
        parser.error("--sink stops the candidate: use it with --only mirror")
    quiet_defaults()
    if args.omp_threads is not None:
        if args.omp_threads < 1:
            parser.error("--omp-threads must be >= 1")
        os.environ["OMP_NUM_THREADS"] = str(args.omp_threads)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    report, mirror_report = run(args)
    print(report + mirror_report)
    if args.out is not None:
        if report:
            replace_block(args.out, SERVING_MARKERS, report)
        replace_block(args.out, MIRROR_MARKERS, mirror_report)
        say(f"wrote the {'serving and ' if report else ''}mirror blocks of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
