"""1. Latency added by the Envoy hop: direct and through-Envoy requests, interleaved."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from benchmarks.serving.measure import fmt, pct, say, signed
from benchmarks.serving.plan import Plan
from mlcanary.serving.headers import ARM_HEADER, ARM_SERVED_HEADER, SERVER_LATENCY_HEADER


@dataclass
class HopResult:
    n: int
    direct_ms: list[float]
    envoy_ms: list[float]
    direct_server_ms: list[float]
    envoy_server_ms: list[float]
    failed: int


def bench_hop(direct_url: str, front_door: str, path: str, bodies: Sequence[bytes], plan: Plan) -> HopResult:
    """Sequential keep-alive requests, interleaved direct / through Envoy, alternating who goes first."""
    headers = {"content-type": "application/json"}
    forced = {**headers, ARM_HEADER: "champion"}
    lat: dict[str, list[float]] = {"direct": [], "envoy": []}
    server: dict[str, list[float]] = {"direct": [], "envoy": []}
    failed = 0
    deadline = time.monotonic() + 300.0
    with (
        httpx.Client(base_url=direct_url, timeout=10.0, trust_env=False) as direct,
        httpx.Client(base_url=front_door, timeout=10.0, trust_env=False) as envoy,
    ):
        targets = {"direct": (direct, headers), "envoy": (envoy, forced)}
        for i in range(plan.hop_warmup + plan.hop_requests):
            if time.monotonic() > deadline:
                say("hop latency: time bound reached, reporting what was measured")
                break
            order = ("direct", "envoy") if i % 2 == 0 else ("envoy", "direct")
            body = bodies[i % len(bodies)]
            for name in order:
                client, hdrs = targets[name]
                t0 = time.perf_counter_ns()
                try:
                    response = client.post(path, content=body, headers=hdrs)
                except httpx.HTTPError:
                    failed += i >= plan.hop_warmup
                    continue
                elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
                if i < plan.hop_warmup:
                    continue
                if response.status_code != 200 or (
                    name == "envoy" and response.headers.get(ARM_SERVED_HEADER) != "champion"
                ):
                    failed += 1
                    continue
                lat[name].append(elapsed_ms)
                with contextlib.suppress(TypeError, ValueError):
                    server[name].append(float(response.headers.get(SERVER_LATENCY_HEADER)))
    return HopResult(
        n=len(lat["envoy"]),
        direct_ms=lat["direct"],
        envoy_ms=lat["envoy"],
        direct_server_ms=server["direct"],
        envoy_server_ms=server["envoy"],
        failed=failed,
    )


def report_hop(hop: HopResult) -> list[str]:
    rows = [
        "| path | requests | P50 ms | P95 ms | P99 ms | mean ms | server-side P50 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, values, srv in (
        ("direct to the champion server", hop.direct_ms, hop.direct_server_ms),
        ("through Envoy (`x-mlcanary-arm: champion`)", hop.envoy_ms, hop.envoy_server_ms),
    ):
        rows.append(
            f"| {label} | {len(values):,} | {fmt(pct(values, 50))} | {fmt(pct(values, 95))} | "
            f"{fmt(pct(values, 99))} | {fmt(float(np.mean(values)) if values else None)} | "
            f"{fmt(pct(srv, 50))} |"
        )
    delta = [pct(hop.envoy_ms, q) - pct(hop.direct_ms, q) for q in (50, 95, 99)]
    rows.append(
        f"| **added by the Envoy hop** | | **{signed(delta[0])}** | **{signed(delta[1])}** | "
        f"**{signed(delta[2])}** | **{signed(float(np.mean(hop.envoy_ms) - np.mean(hop.direct_ms)))}** | |"
    )
    return [
        "### 1. Latency added by the Envoy hop",
        "",
        "Single-instance V1 `:predict`, one request at a time over a keep-alive connection, measured "
        "at the client (Python httpx, whose own overhead is in both rows); direct and through-Envoy "
        "requests interleaved one by one, so both see the same machine state. The server-side column "
        "is the model server's own `x-mlcanary-latency-ms` (parse, validate, predict, encode).",
        "",
        *rows,
        "",
        f"Non-200 (or wrong-arm) replies: {hop.failed}.",
        "",
    ]
