"""3. Rollback latency: ``LocalBackend.rollback()`` from 50/50 under continuous traffic."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.serving.client import Traffic, client_process
from benchmarks.serving.cpu import stack_pids
from benchmarks.serving.measure import dist, fmt, now_ns, pct, say
from benchmarks.serving.plan import Plan

if TYPE_CHECKING:
    from mlcanary.serving.local.backend import LocalBackend


@dataclass
class RollbackOutcome:
    confirm_ms: float  # call → Envoy confirmed 100/0 (LocalBackend's own measurement)
    apply_ms: float
    return_ms: float  # call → rollback() returned (candidate server stopped too)
    last_candidate_ms: float | None  # call → last candidate response; after it, all champion
    first_champion_only_ms: float | None  # call → first response after which all are champion
    stale_after_confirm: int
    failed: int
    requests: int
    redeploy_s: float
    restarted: bool  # the deploy before it had to start a candidate server


def bench_rollbacks(
    backend: LocalBackend,
    model: str,
    versions: tuple[str, str],
    work_dir: Path,
    path: str,
    bodies: Sequence[bytes],
    plan: Plan,
) -> list[RollbackOutcome]:
    outcomes: list[RollbackOutcome] = []
    champion, candidate = versions
    for rep in range(plan.rollbacks):
        pid_before = stack_pids(backend.state_dir).get("model-candidate")
        t0 = time.perf_counter()
        status = backend.deploy(model, champion, candidate, 50)
        redeploy_s = time.perf_counter() - t0
        restarted = stack_pids(backend.state_dir).get("model-candidate") != pid_before
        if status.traffic != {"champion": 50, "candidate": 50}:
            raise RuntimeError(f"deploy at 50/50 did not take: {status}")
        say(f"rollback {rep + 1}/{plan.rollbacks} (candidate ready after {redeploy_s:.1f} s)")
        with client_process(
            work_dir, backend.front_door_url, path, bodies, plan.flip_clients, f"rollback-{rep}"
        ) as run:
            time.sleep(plan.rollback_settle_s)
            call_ns = now_ns()
            after = backend.rollback(model)
            return_ns = now_ns()
            change = backend.last_change
            time.sleep(plan.rollback_settle_s)
        traffic: Traffic = run["traffic"]
        if (
            change is None
            or change.action != "rollback"
            or after.traffic != {"champion": 100, "candidate": 0}
        ):
            raise RuntimeError(f"rollback did not end at 100/0: {after} / {change}")
        confirm_ns = call_ns + int(change.elapsed_ms * 1e6)
        idx = traffic.indices(call_ns, None)
        cand = [j for j in idx if traffic.arm[j] == "candidate"]
        last_cand = (int(traffic.t_recv[cand[-1]]) - call_ns) / 1e6 if cand else None
        later = [j for j in idx if not cand or traffic.t_recv[j] > traffic.t_recv[cand[-1]]]
        first_only = (int(traffic.t_recv[later[0]]) - call_ns) / 1e6 if later else None
        stale = sum(1 for j in cand if traffic.t_send[j] > confirm_ns)
        outcomes.append(
            RollbackOutcome(
                confirm_ms=change.elapsed_ms,
                apply_ms=change.apply_ms,
                return_ms=(return_ns - call_ns) / 1e6,
                last_candidate_ms=last_cand,
                first_champion_only_ms=first_only,
                stale_after_confirm=stale,
                failed=traffic.failed(),
                requests=len(traffic),
                redeploy_s=redeploy_s,
                restarted=restarted,
            )
        )
    return outcomes


def report_rollbacks(outcomes: Sequence[RollbackOutcome], clients: int) -> list[str]:
    rows = [
        "| measured from the `rollback()` call to … | median ms | P95 ms | max ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for what, values in (
        ("**Envoy reports 100/0 (confirm)**", [o.confirm_ms for o in outcomes]),
        ("(inside it: file rename → confirm)", [o.apply_ms for o in outcomes]),
        ("the last response from the candidate arrived", [o.last_candidate_ms for o in outcomes]),
        (
            "**the first response after which every response is champion**",
            [o.first_champion_only_ms for o in outcomes],
        ),
        ("`rollback()` returned (candidate server stopped as well)", [o.return_ms for o in outcomes]),
    ):
        med, p95, worst = dist(values)
        rows.append(f"| {what} | {med} | {p95} | {worst} |")
    requests = sum(o.requests for o in outcomes)
    failed = sum(o.failed for o in outcomes)
    stale = sum(o.stale_after_confirm for o in outcomes)
    redeploy = [o.redeploy_s for o in outcomes if o.restarted]
    return [
        "### 3. Rollback latency",
        "",
        f"{len(outcomes)} rollbacks, each from 50/50 with the candidate freshly deployed, under "
        f"continuous traffic from a separate client process ({clients} keep-alive connections).",
        "",
        *rows,
        "",
        f"- Requests during the rollbacks: {requests:,}, **{failed} failed**; {stale} request(s) sent "
        "after the confirm were served by the candidate.",
        (
            f"- Bringing the candidate back at 50/50 after a rollback (`deploy`: start one model "
            f"server, wait until ready, confirm the weights) took {fmt(pct(redeploy, 50), 1)} s median "
            f"over {len(redeploy)} start(s) (max {fmt(max(redeploy), 1)} s)."
            if redeploy
            else "- (No rollback needed a fresh candidate server.)"
        ),
        "",
    ]
