"""The soak's markdown report: the run, the verdicts, the release, the requests per phase, the
reconciliation and the memory of every process."""

from __future__ import annotations

import itertools
from collections import Counter

from benchmarks.serving.measure import fmt
from benchmarks.serving.report import report_header
from benchmarks.soak.memory import FLAT_MIB_PER_MIN, MemoryTrend, memory_trend
from benchmarks.soak.run import CLIENT, SoakResult

_MARK = {True: "✓", False: "✗", None: "—"}


def trends(result: SoakResult) -> list[MemoryTrend]:
    warmup = result.plan.warmup_s
    return [
        memory_trend(name, samples, warmup, result.ready_s.get(name, 0.0))
        for name, samples in sorted(result.memory.items())
    ]


def memory_flat(result: SoakResult) -> bool:
    """Every judged process flat (the client keeps one record per request by design: not judged)."""
    return all(t.flat is not False for t in trends(result) if t.name != CLIENT)


def _phases(result: SoakResult) -> list[str]:
    bounds = [*result.release.phases, (2**63 - 1, "")]
    rows = [
        "| phase | from (s) | answered | 2xx | candidate's own 5xx | other failures |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    t0 = bounds[0][0]
    for i, ((start, label), (stop, _)) in enumerate(itertools.pairwise(bounds)):
        # The client's first answers may come just before the driver notes its start.
        inside = [r for r in result.client.records if (i == 0 or start <= r.t_ns) and r.t_ns < stop]
        ok = sum(1 for r in inside if 200 <= r.status < 300)
        own = sum(1 for r in inside if r.status >= 500 and r.server_arm == "candidate")
        other = len(inside) - ok - own
        at = (start - t0) / 1e9
        rows.append(f"| {label} | {at:.0f} | {len(inside):,} | {ok:,} | {own:,} | {other:,} |")
    return rows


def _release(result: SoakResult) -> list[str]:
    log = result.release
    holds = Counter(t.action for t in log.ticks)
    rows = ["| at (s) | action | candidate % | reason |", "|--:|---|--:|---|"]
    rows += [
        f"| {t.t_s:.0f} | {t.action} | {t.traffic} | {t.reason} |" for t in log.ticks if t.action != "hold"
    ]
    lines = [
        f"Release of v{result.versions[1]} beside v{result.versions[0]}: {log.outcome}. "
        f"{len(log.ticks) - 1} ticks ({holds['hold']} holds)"
        + ("; **rolled back by hand at the deadline**" if log.rolled_back_by_hand else "")
        + (f"; {len(log.errors)} failed ticks: {'; '.join(log.errors[:3])}" if log.errors else "")
        + ".",
        "",
        *rows,
    ]
    return lines


def _per_arm(result: SoakResult) -> list[str]:
    """The run's requests per arm as the client, Envoy and the inference log counted them."""
    counts = result.counts
    prefix = f"{counts.run_id}-"
    rows = [
        "| arm | client: answered by its server | of which 5xx | Envoy access log | inference-log rows |",
        "|---|--:|--:|--:|--:|",
    ]
    for arm in ("champion", "candidate"):
        served = [r for r in counts.records if r.server_arm == arm]
        envoy = sum(
            1
            for line in counts.access_log
            if line.get("upstream_cluster") == arm and str(line.get("request_id") or "").startswith(prefix)
        )
        stored = sum(1 for row in counts.store_rows.values() if row.arm == arm)
        errors = sum(1 for r in served if r.status >= 500)
        rows.append(f"| {arm} | {len(served):,} | {errors:,} | {envoy:,} | {stored:,} |")
    return rows


def _reconciliation(result: SoakResult) -> list[str]:
    rows = ["| equation | expected | observed | | note |", "|---|--:|--:|:-:|---|"]
    for line in result.reconciliation.lines:
        rows.append(
            f"| {line.name} | {line.expected:,} | {line.observed:,} | {_MARK[line.ok]} | {line.note} |"
        )
    loggers = [
        "| payload logger | enqueued | sent | dropped | failed | pending | read |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for arm, stats in result.counts.loggers.items():
        if stats is None:
            loggers.append(f"| {arm} | — | — | — | — | — | never read |")
            continue
        when = "after the drain" if stats.get("final") else "last reading before the rollback stopped it"
        loggers.append(
            f"| {arm} | {stats['enqueued']:,} | {stats['sent']:,} | {stats['dropped']:,} | "
            f"{stats['failed']:,} | {stats['pending']:,} | {when} |"
        )
    warned = ", ".join(f"{n} {k}" for k, n in result.candidate_log_warnings.items() if n) or "none"
    peaks = ", ".join(f"{arm} {n:,}" for arm, n in result.peak_pending.items())
    caught = "not within the wait" if result.catch_up_s is None else f"{result.catch_up_s:.0f} s"
    return [
        *rows,
        "",
        *loggers,
        "",
        f"Payload-logger warnings in the candidate server's log (drops, failed or undelivered events at its "
        f"stop): {warned}. Largest backlog seen in the payload loggers' queues (events): {peaks}; every "
        f"live queue was delivered {caught} after the client's end (counters read after that).",
    ]


def _memory(result: SoakResult) -> list[str]:
    rows = [
        "| process | sampled (s) | RSS start (MiB) | end | max | slope after warm-up (MiB/min) | flat |",
        "|---|--:|--:|--:|--:|--:|:-:|",
    ]
    for t in trends(result):
        flat = "not judged" if t.name == CLIENT else _MARK[t.flat]
        rows.append(
            f"| {t.name} | {t.seconds:.0f} | {fmt(t.start_mib, 1)} | {fmt(t.end_mib, 1)} | "
            f"{fmt(t.max_mib, 1)} | {fmt(t.slope_mib_per_min, 2)} | {flat} |"
        )
    return rows


def render(result: SoakResult, elapsed_s: float) -> str:
    rec, plan = result.reconciliation, result.plan
    report = result.client.report
    failures = rec.failures
    other = "; ".join(f"{k}: {n}" for k, n in failures.other_kinds.items()) or "none"
    verdicts = [
        f"- **Client requests failed outside the candidate's own faults: {failures.other}** ({other}); "
        f"the candidate's own 5xx: {failures.candidate} of {int(report['sent']):,} sent "
        f"({report['achieved_rps']:.1f} req/s achieved, {int(report['late']):,} sent late, max lag "
        f"{report['max_lag_ms']:.0f} ms).",
        f"- **Acknowledged events lost: {rec.lost}** (predictions answered by a model server missing "
        f"from the inference log, and labels acknowledged but not stored)"
        + (f": {', '.join(rec.lost_ids)}" if rec.lost_ids else "")
        + f"; every count reconciled: {'yes' if all(line.ok for line in rec.lines) else '**no**'}.",
        f"- **Memory flat: {'yes' if memory_flat(result) else 'no'}** (flat = RSS slope after a "
        f"{plan.warmup_s:.0f}-s warm-up ≤ {FLAT_MIB_PER_MIN} MiB/min, fitted to samples every "
        f"{plan.sample_s:g} s).",
    ]
    lines = [
        *report_header(result.facts, elapsed_s, result.cpu),
        "### Verdicts",
        "",
        *verdicts,
        "",
        "### The release",
        "",
        *_release(result),
        "",
        "### Client requests per phase",
        "",
        *_phases(result),
        "",
        "Transport errors and shed requests have no answer and no time: they count in the verdict above.",
        "",
        "### Reconciliation",
        "",
        *_per_arm(result),
        "",
        *_reconciliation(result),
        "",
        "### Memory",
        "",
        *_memory(result),
    ]
    return "\n".join(lines).rstrip() + "\n"
