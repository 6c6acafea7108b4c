"""``python -m benchmarks.model_server``: our model server beside KServe's, our Envoy beside a
minimal one, and the CLI's answer times (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import benchmarks.model_server as package
from benchmarks.model_server.checks import Verdict, check, direct_truth
from benchmarks.model_server.cli_timing import cli_timings
from benchmarks.model_server.http_client import Samples, Target, closed_loop, sequential
from benchmarks.model_server.plan import CLI_MARKERS, CLI_ONLY, FULL, MARKERS, MICRO, QUICK, SMOKE, Plan
from benchmarks.model_server.report import Results, render, render_cli
from benchmarks.model_server.servers import (
    HOST,
    Fleet,
    start_kserve,
    start_minimal_envoy,
    start_our_envoy,
    start_ours,
)
from benchmarks.serving.cpu import CpuShare, cpu_phase
from benchmarks.serving.machine import machine_facts
from benchmarks.serving.measure import say
from benchmarks.serving.report import replace_block
from benchmarks.serving.setup import bench_settings, instances, predict_bodies
from mlcanary.runtime.env import quiet_defaults

if TYPE_CHECKING:
    from mlcanary.config import Settings


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f}"


COMMANDS = {"full": "", "quick": " --quick", "smoke": " --smoke", "micro": " --micro", "cli": " --only cli"}


def run(args: argparse.Namespace, plan: Plan) -> Results:
    """Train one version, then measure what ``plan`` asks for: the servers and the Envoy hop (when
    it sends requests), the CLI (when it has CLI runs)."""
    from mlcanary.registry.mlflow_registry import registry_from_settings
    from mlcanary.training import train

    started = time.perf_counter()
    cpu: dict[str, CpuShare] = {}
    with tempfile.TemporaryDirectory(prefix="mlcanary-bench-ms-") as tmp:
        state_dir = Path(tmp) / "state"
        settings = bench_settings(state_dir, plan.rows, plan.estimator)
        facts = machine_facts(settings, args)
        facts["command"] = "python -m benchmarks.model_server" + COMMANDS[plan.name]
        say(f"training one version ({settings.model.estimator}, {plan.rows} rows) in {state_dir}")
        version = train(settings, registry_from_settings(settings)).version
        facts.pop("load average before the run (1 / 5 min)", None)
        facts.pop("OMP_NUM_THREADS seen by the model servers", None)
        facts["model"] = (
            f"{settings.model.estimator}, version {version} of {plan.rows:,} synthetic rows, "
            "in this run's MLflow registry (SQLite)"
        )
        results = Results(facts=facts, plan=plan, load_before=_load())
        if plan.sequential:
            _measure_servers(results, settings, version, state_dir, cpu)
        if plan.cli_runs:
            say("timing the CLI")
            with cpu_phase("CLI", cpu):
                results.cli = cli_timings(state_dir, settings.model.name, plan.cli_runs, plan.all_help)
                results.load["CLI"] = _load()
    results.cpu = cpu
    results.elapsed_s = time.perf_counter() - started
    return results


def _measure_servers(
    results: Results, settings: Settings, version: str, state_dir: Path, cpu: dict[str, CpuShare]
) -> None:
    """Our model server (beside KServe's when the plan says so), then the Envoy hop."""
    import mlflow
    from mlflow.sklearn import load_model

    from mlcanary.testing.ports import free_ports

    plan, facts = results.plan, results.facts
    model, tracking_uri = settings.model.name, settings.tracking_uri
    rows = instances(settings, plan.distinct_rows)
    bodies = predict_bodies(rows)
    mlflow.set_tracking_uri(tracking_uri)
    truth = direct_truth(load_model(f"models:/{model}/{version}"), rows)
    facts["OMP_NUM_THREADS seen by the model servers"] = "1 (set by the benchmark for both)"
    facts["model"] = (
        f"{settings.model.estimator} (the `local` profile's fraud model), version {version} of "
        f"{plan.rows:,} synthetic rows, loaded by both servers from the same MLflow registry; "
        "requests carry one instance each"
    )
    path = f"/v1/models/{model}:predict"
    ours_port, kserve_port, envoy_port, admin_port, minimal_port, spare = free_ports(6, HOST)
    fleet = Fleet(state_dir)
    try:
        say("starting our model server" + (" and KServe's (one process each)" if plan.kserve else ""))
        start_ours(fleet, ours_port, tracking_uri, model, version)
        targets = [Target("ours", ours_port, path)]
        if plan.kserve:
            start_kserve(fleet, kserve_port, tracking_uri, model, version)
            targets.append(Target("kserve", kserve_port, path))
        fleet.wait_ready()
        say(f"sequential, 1 connection ({plan.sequential} requests each, interleaved)")
        with cpu_phase("sequential", cpu):
            results.sequential = asyncio.run(sequential(targets, bodies, plan.sequential))
            results.load["sequential"] = _load()
        for connections in plan.connections:
            say(f"closed loop, {connections} connections ({plan.rounds} × {plan.window_s:g} s each)")
            with cpu_phase(f"{connections} connections", cpu):
                level: dict[str, Samples] = {target.name: Samples() for target in targets}
                for round_ in range(plan.rounds):
                    for target in targets if round_ % 2 == 0 else targets[::-1]:
                        got = asyncio.run(closed_loop(target, bodies, connections, plan.window_s))
                        level[target.name].extend(got)
                results.closed[connections] = level
                results.load[f"{connections} connections"] = _load()
        say("checking every answer against a direct predict_proba")
        for target in targets:
            verdict = Verdict()
            verdict.add(check(target.name, results.sequential[target.name], truth))
            for level in results.closed.values():
                verdict.add(check(target.name, level[target.name], truth))
            results.verdicts[target.name] = verdict
        say("starting our Envoy and a minimal Envoy in front of our model server")
        start_our_envoy(fleet, envoy_port, admin_port, ours_port, spare)
        start_minimal_envoy(fleet, minimal_port, ours_port)
        direct = Target("direct", ours_port, path)
        via_ours = Target("our Envoy", envoy_port, path)
        via_minimal = Target("minimal Envoy", minimal_port, path)
        say(f"Envoy hop ({plan.hop} requests per path, interleaved)")
        with cpu_phase("Envoy hop", cpu):
            results.hop = asyncio.run(sequential([direct, via_ours, via_minimal], bodies, plan.hop))
            results.load["Envoy hop"] = _load()
        ready = "/v2/health/ready"
        cheap = [
            Target("direct", ours_port, ready, method="GET"),
            Target("our Envoy", envoy_port, ready, method="GET"),
            Target("minimal Envoy", minimal_port, ready, method="GET"),
        ]
        ready_count = plan.hop_ready or plan.hop
        say(f"Envoy hop to a cheap upstream route ({ready_count} requests per path, interleaved)")
        with cpu_phase("Envoy hop (readiness)", cpu):
            results.hop_ready = asyncio.run(sequential(cheap, bodies, ready_count))
        hop_verdict = Verdict()
        for samples in results.hop.values():
            hop_verdict.add(check("ours", samples, truth))
        results.verdicts["hop"] = hop_verdict
    finally:
        say("stopping every process started")
        fleet.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(package.__doc__ or "").split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer requests (about half the time)")
    size.add_argument("--smoke", action="store_true", help="a few requests of each kind: checks, not figures")
    size.add_argument("--micro", action="store_true", help="the smoke in seconds: no KServe, a small model")
    size.add_argument("--only", choices=["cli"], help="measure one part alone (cli: the CLI's answer times)")
    parser.add_argument(
        "--out", type=Path, help="markdown file whose bench:model-server / bench:cli blocks are rewritten"
    )
    args = parser.parse_args(argv)
    args.omp_threads = None
    args.quick = args.quick or args.smoke or args.micro
    quiet_defaults()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    chosen = ((args.only == "cli", CLI_ONLY), (args.smoke, SMOKE), (args.micro, MICRO), (args.quick, QUICK))
    plan = next((plan for flag, plan in chosen if flag), FULL)
    results = run(args, plan)
    blocks = []
    if plan.sequential:
        blocks.append((MARKERS, render(results)))
    if results.cli:
        blocks.append((CLI_MARKERS, render_cli(results)))
    for markers, report in blocks:
        print(report)
        if args.out is not None:
            replace_block(args.out, markers, report)
            say(f"wrote the {markers[0].split(':')[1]} block of {args.out}")
    wrong = sum(verdict.wrong for verdict in results.verdicts.values())
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
