"""4. Throughput of the whole stack: concurrent keep-alive connections through the front door."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from benchmarks.serving.cpu import stack_pids, tree_cpu
from benchmarks.serving.measure import fmt, pct, say
from benchmarks.serving.plan import Plan
from mlcanary.rollout.arms import ARMS
from mlcanary.serving.headers import ARM_SERVED_HEADER

if TYPE_CHECKING:
    from mlcanary.serving.local.backend import LocalBackend


@dataclass
class ThroughputResult:
    duration_s: float
    concurrency: int
    latencies_ms: list[float]
    ok: int
    failed: int
    arms: dict[str, int]
    cpu_s: dict[str, float]
    errors: list[str]

    @property
    def rps(self) -> float:
        return (self.ok + self.failed) / self.duration_s


async def _throughput(
    url: str, path: str, bodies: Sequence[bytes], plan: Plan, concurrency: int, pids: dict[str, int]
) -> ThroughputResult:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    arms: dict[str, int] = {}
    ok = failed = 0
    errors: list[str] = []
    measuring = False
    cpu_before: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0, trust_env=False) as client:
        start = time.monotonic()
        warm_end = start + plan.throughput_warmup_s
        end = warm_end + plan.throughput_s

        async def worker(k: int) -> None:
            nonlocal ok, failed
            i = k
            while True:
                t0 = time.monotonic()
                if t0 >= end:
                    return
                try:
                    response = await client.post(path, content=bodies[i % len(bodies)], headers=headers)
                    status = response.status_code
                    arm = response.headers.get(ARM_SERVED_HEADER) or "?"
                except httpx.HTTPError as exc:
                    status, arm = 0, "?"
                    if len(errors) < 5:
                        errors.append(repr(exc))
                t1 = time.monotonic()
                i += concurrency
                if not measuring or t1 > end:
                    continue
                if status == 200:
                    ok += 1
                    latencies.append((t1 - t0) * 1000.0)
                    arms[arm] = arms.get(arm, 0) + 1
                else:
                    failed += 1

        async def clock() -> None:
            nonlocal measuring, cpu_before
            await asyncio.sleep(max(0.0, warm_end - time.monotonic()))
            cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
            cpu_before["benchmark client"] = sum(os.times()[:2])
            measuring = True

        await asyncio.gather(clock(), *(worker(k) for k in range(concurrency)))
        cpu_after = {name: tree_cpu(pid) for name, pid in pids.items()}
        cpu_after["benchmark client"] = sum(os.times()[:2])
        duration = time.monotonic() - warm_end
    # Envoy and the other processes keep working briefly after ``end``: CPU is over ``duration``.
    cpu = {name: cpu_after[name] - cpu_before.get(name, cpu_after[name]) for name in cpu_after}
    return ThroughputResult(
        duration_s=min(duration, plan.throughput_s),
        concurrency=concurrency,
        latencies_ms=latencies,
        ok=ok,
        failed=failed,
        arms=arms,
        cpu_s=cpu,
        errors=errors,
    )


def _sink_stats(backend: LocalBackend) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = {}
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        for arm in ARMS:
            try:
                body = client.get(backend.arm_url(arm) + "/metrics/payload-logger").json()
            except (httpx.HTTPError, ValueError):
                continue
            stats[arm] = {
                k: int(v) for k, v in body.items() if isinstance(v, int) and not isinstance(v, bool)
            }
    return stats


SINK_COUNTERS = ("enqueued", "sent", "dropped", "failed")


@dataclass
class ThroughputRun:
    results: list[ThroughputResult]
    sink: dict[str, dict[str, int]]  # per arm: counter deltas over all levels, and ``pending`` after


def bench_throughput(
    backend: LocalBackend, model: str, path: str, bodies: Sequence[bytes], plan: Plan
) -> ThroughputRun:
    status = backend.set_traffic(model, 20)
    if status.traffic != {"champion": 80, "candidate": 20}:
        raise RuntimeError(f"set_traffic(20) did not take: {status}")
    pids = stack_pids(backend.state_dir)
    sink_before = _sink_stats(backend)
    results = []
    for concurrency in plan.concurrencies:
        say(f"  {concurrency} connections")
        results.append(
            asyncio.run(_throughput(backend.front_door_url, path, bodies, plan, concurrency, pids))
        )
        time.sleep(1.0)  # let the payload loggers catch up between levels
    sink_after = _sink_stats(backend)
    sink = {
        arm: {k: after.get(k, 0) - sink_before.get(arm, {}).get(k, 0) for k in SINK_COUNTERS}
        | {"pending": after.get("pending", 0)}
        for arm, after in sink_after.items()
    }
    return ThroughputRun(results, sink)


def report_throughput(run: ThroughputRun, cores: int) -> list[str]:
    results = run.results
    rows = [
        "| connections | achieved req/s | requests | failed | P50 ms | P95 ms | P99 ms | max ms | "
        "served by arm |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        lat = result.latencies_ms
        served = sum(result.arms.values()) or 1
        arms = ", ".join(
            f"{arm} {count / served:.1%}" for arm, count in sorted(result.arms.items(), reverse=True)
        )
        rows.append(
            f"| {result.concurrency} | **{fmt(result.rps, 0)}** | {result.ok + result.failed:,} | "
            f"{result.failed} | {fmt(pct(lat, 50))} | {fmt(pct(lat, 95))} | {fmt(pct(lat, 99))} | "
            f"{fmt(max(lat) if lat else None)} | {arms} |"
        )
    errors = [e for result in results for e in result.errors]
    names = sorted(results[-1].cpu_s, key=lambda name: -results[-1].cpu_s[name])
    header = " | ".join(f"{r.concurrency} connections" for r in results)
    cpu_rows = [f"| process | {header} |", "| --- |" + " ---: |" * len(results)]
    for name in names:
        cells = " | ".join(f"{r.cpu_s.get(name, 0.0) / r.duration_s:.0%}" for r in results)
        cpu_rows.append(f"| {name} | {cells} |")
    cells = " | ".join(f"**{sum(r.cpu_s.values()) / r.duration_s:.0%}**" for r in results)
    cpu_rows.append(f"| all of the above (the machine is {cores * 100}%) | {cells} |")
    sink = "; ".join(
        f"{arm}: " + ", ".join(f"{k} {v:,}" for k, v in counters.items())
        for arm, counters in run.sink.items()
    )
    error_lines = [f"Transport errors: {errors[:5]}", ""] if errors else []
    return [
        "### 4. Throughput of the whole stack",
        "",
        "Concurrent keep-alive connections (one `httpx.AsyncClient` in the benchmark process, each "
        "connection sending its next request as soon as the last is answered) through the front door "
        f"at 80/20, {results[0].duration_s:g} s per level after a warm-up; single-instance predictions. "
        "Every request is also payload-logged by the model server to the collector, which writes it to "
        f"SQLite. **The client runs on the same {cores} cores as the stack**, so this is what the stack "
        "serves while sharing the machine with its load generator, not its ceiling.",
        "",
        *rows,
        "",
        *error_lines,
        "Payload logger over all levels (counter deltas; `pending` = still queued 1 s after the last "
        f"level): {sink or 'no counters available'}.",
        "",
        "CPU used during each measured window, as a share of one core (from `/proc/<pid>/stat`):",
        "",
        *cpu_rows,
        "",
    ]
