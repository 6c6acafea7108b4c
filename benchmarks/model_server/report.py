"""The report: goals beside our figure, the reference's figure from the same run, and the ratio."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.block_bootstrap import Interval, percentile_difference
from benchmarks.model_server.checks import Verdict
from benchmarks.model_server.cli_timing import CliTiming
from benchmarks.model_server.http_client import Samples
from benchmarks.model_server.plan import Plan
from benchmarks.serving.cpu import CpuShare
from benchmarks.serving.measure import fmt, pct, signed

HELP_GOAL_S = 0.5
STATUS_GOAL_S = 2.0
HOP_MARGIN_MS = 0.1


@dataclass
class Results:
    facts: dict[str, str]
    plan: Plan
    load_before: str
    sequential: dict[str, Samples] = field(default_factory=dict)
    closed: dict[int, dict[str, Samples]] = field(default_factory=dict)
    hop: dict[str, Samples] = field(default_factory=dict)
    hop_ready: dict[str, Samples] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    cli: list[CliTiming] = field(default_factory=list)
    load: dict[str, str] = field(default_factory=dict)
    cpu: dict[str, CpuShare] = field(default_factory=dict)
    elapsed_s: float = 0.0


def _rate(samples: Samples) -> float:
    return len(samples.latencies_ms) / samples.seconds if samples.seconds else float("nan")


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _header(results: Results) -> list[str]:
    rows = ["| | |", "| --- | --- |", *[f"| {key} | {value} |" for key, value in results.facts.items()]]
    rows.append(f"| load average before the run (1 / 5 min) | {results.load_before} |")
    rows.append(
        "| load average after each phase (1 / 5 min) | "
        + " · ".join(f"{phase} {value}" for phase, value in results.load.items())
        + " |"
    )
    shares = " · ".join(f"{name} {share.others / share.seconds:.0%}" for name, share in results.cpu.items())
    rows.append(f"| CPU used by other processes during each phase (share of one core) | {shares} |")
    rows.append(f"| benchmark wall time | {results.elapsed_s:.0f} s (training and process starts included) |")
    return ["### Run", "", *rows, ""]


def _servers(results: Results) -> list[str]:
    seq = results.sequential
    if "kserve" not in seq:
        return _ours_alone(results)
    lines = [
        "### 1. Our model server beside KServe's Python model server",
        "",
        "Same MLflow version, one process each, V1 single-row requests from the same client. "
        "Ratio = ours / KServe's (for throughput higher is better, for latency lower is better).",
        "",
        "| goal | ours | KServe | ratio | |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for q, label in ((50, "P50"), (99, "P99")):
        ours, ref = pct(seq["ours"].latencies_ms, q), pct(seq["kserve"].latencies_ms, q)
        lines.append(
            f"| {label} at 1 connection no worse than KServe's | {fmt(ours)} ms | {fmt(ref)} ms | "
            f"{ours / ref:.2f}× | {_met(ours <= ref)} |"
        )
    for connections, level in results.closed.items():
        ours, ref = _rate(level["ours"]), _rate(level["kserve"])
        lines.append(
            f"| throughput at {connections} connections ≥ 1.5× KServe's | {ours:,.0f} req/s | "
            f"{ref:,.0f} req/s | {ours / ref:.2f}× | {_met(ours >= 1.5 * ref)} |"
        )
    checked = {name: v for name, v in results.verdicts.items() if name in ("ours", "kserve")}
    ok = all(v.wrong == 0 for v in checked.values())
    lines.append(
        "| every answer identical to a direct `predict_proba` of the same row | "
        + " | ".join(f"{v.checked - v.wrong:,} of {v.checked:,}" for v in checked.values())
        + f" | | {_met(ok)} |"
    )
    return [*lines, "", *_server_rows(results), ""]


def _ours_alone(results: Results) -> list[str]:
    """The micro smoke: our server only (KServe not started), its answers checked."""
    verdict = results.verdicts["ours"]
    lines = [
        "### 1. Our model server (KServe's not started in this run: no ratios)",
        "",
        f"Answers identical to a direct `predict_proba` of the same row: {verdict.checked - verdict.wrong:,} "
        f"of {verdict.checked:,}.",
        "",
    ]
    return [*lines, *_server_rows(results), ""]


def _server_rows(results: Results) -> list[str]:
    lines = [
        "| server | connections | requests | non-200 | req/s | P50 ms | P95 ms | P99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    levels: list[tuple[int, dict[str, Samples]]] = [(1, results.sequential), *results.closed.items()]
    for connections, level in levels:
        for name, s in level.items():
            bad = sum(1 for status in s.statuses if status != 200)
            rate = fmt(_rate(s), 0) if s.seconds else "—"
            lines.append(
                f"| {name} | {connections} | {len(s.latencies_ms):,} | {bad} | {rate} | "
                f"{fmt(pct(s.latencies_ms, 50))} | {fmt(pct(s.latencies_ms, 95))} | "
                f"{fmt(pct(s.latencies_ms, 99))} |"
            )
    for name, verdict in results.verdicts.items():
        if name != "hop" and verdict.first_problem:
            lines.append(f"\nFirst wrong answer from {name}: `{verdict.first_problem}`")
    return lines


def _hop_table(hop: dict[str, Samples]) -> tuple[list[str], dict[str, tuple[float, float]]]:
    direct = hop["direct"].latencies_ms
    lines = [
        "| path | requests | non-200 | P50 ms | P99 ms | added P50 ms | added P99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    added: dict[str, tuple[float, float]] = {}
    for name, samples in hop.items():
        values = samples.latencies_ms
        bad = sum(1 for status in samples.statuses if status != 200)
        p50, p99 = pct(values, 50), pct(values, 99)
        added[name] = (p50 - pct(direct, 50), p99 - pct(direct, 99))
        cells = ("", "") if name == "direct" else (signed(added[name][0]), signed(added[name][1]))
        lines.append(
            f"| {name} | {len(values):,} | {bad} | {fmt(p50)} | {fmt(p99)} | {cells[0]} | {cells[1]} |"
        )
    return lines, added


#: Consecutive rotations (one request per path each) resampled together: the machine's state is
#: shared by neighbouring requests, so single requests are not independent samples.
HOP_BLOCK = 50


def hop_interval(hop: dict[str, Samples], q: float) -> Interval | None:
    """Our Envoy's ``q``-th percentile minus the minimal Envoy's, with its 95 % interval from
    resampling blocks of :data:`HOP_BLOCK` rotations; None with fewer than two blocks."""
    ours, ref = hop["our Envoy"].latencies_ms, hop["minimal Envoy"].latencies_ms
    count = min(len(ours), len(ref)) // HOP_BLOCK
    if count < 2:
        return None
    cut = [slice(i * HOP_BLOCK, (i + 1) * HOP_BLOCK) for i in range(count)]
    return percentile_difference([ref[s] for s in cut], [ours[s] for s in cut], q)


def _interval_text(interval: Interval | None) -> str:
    return "—" if interval is None else f"[{interval.low:+.2f}, {interval.high:+.2f}] ms"


def _hop_verdict(diff: float, interval: Interval | None) -> str:
    """Met when even the interval's top is within the margin, missed when even its bottom is over
    it; otherwise this run cannot tell (the point estimate is shown beside)."""
    if interval is None:
        return _met(diff <= HOP_MARGIN_MS)
    if interval.high <= HOP_MARGIN_MS:
        return _met(True)
    if interval.low > HOP_MARGIN_MS:
        return _met(False)
    return "not resolved by this run"


def _hop(results: Results) -> list[str]:
    lines = [
        "### 2. The Envoy hop beside a minimal Envoy",
        "",
        "Our model server called directly, through our Envoy (the local stack's bootstrap and routes, "
        "100 % to the champion, both access logs on) and through a minimal Envoy (one static route and "
        "cluster, no access log, no runtime, no admin), the three paths interleaved request by request "
        "over one keep-alive connection each, from the same client. First the front door as users "
        "see it (single-row `:predict`), then the same three paths to the server's readiness route "
        "(`GET /v2/health/ready`, well under a millisecond), where the proxy's own cost is not "
        "buried under the model's jitter. The goal table gives each difference a 95 % interval "
        f"(`benchmarks/block_bootstrap.py`: blocks of {HOP_BLOCK} consecutive rotations resampled): "
        "a goal is met when the whole interval is within the margin, missed when the whole interval "
        "is over it, and not resolved by the run otherwise.",
        "",
        "**Single-row predictions**",
        "",
    ]
    table, predict = _hop_table(results.hop)
    lines += [*table, ""]
    rows: list[tuple[str, dict[str, tuple[float, float]]]] = [("predict", predict)]
    if results.hop_ready:
        table, ready = _hop_table(results.hop_ready)
        lines += ["**Readiness route (the proxy's own cost)**", "", *table, ""]
        rows.append(("readiness", ready))
    lines += [
        "| goal | requests | ours | minimal Envoy | difference | 95 % interval | |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    hops = {"predict": results.hop, "readiness": results.hop_ready}
    for what, added in rows:
        ours, ref = added["our Envoy"], added["minimal Envoy"]
        for i, (label, q) in enumerate((("P50", 50), ("P99", 99))):
            diff = ours[i] - ref[i]
            interval = hop_interval(hops[what], q)
            lines.append(
                f"| hop within +{HOP_MARGIN_MS} ms of a minimal Envoy at {label} | {what} | "
                f"{signed(ours[i])} ms | {signed(ref[i])} ms | {signed(diff)} ms | "
                f"{_interval_text(interval)} | {_hop_verdict(diff, interval)} |"
            )
    verdict = results.verdicts.get("hop")
    if verdict is not None:
        lines.append(
            f"\nPrediction answers checked on the three paths: {verdict.checked - verdict.wrong:,} of "
            f"{verdict.checked:,} identical to a direct `predict_proba`."
        )
    return [*lines, ""]


def _cli(results: Results) -> list[str]:
    if not results.cli:
        return []
    lines = [
        "### The CLI",
        "",
        "Wall time of the command as a user runs it (a fresh process; the median of the runs), "
        "against the state directory of this run (MLflow on SQLite, one registered version; no stack "
        "running). Bytecode cached: what a user's shell sees from the second call on (the first "
        "call of a fresh install writes it). None: every module compiled on each call, as where "
        "`PYTHONDONTWRITEBYTECODE=1` forbids caching it (for reference; the goals are for the former). "
        "Wall time grows with the machine's load; CPU time (user + system of the process) much less, "
        "and is close to what an idle machine's wall time would be.",
        "",
        "| command | bytecode | runs | wall s | CPU s | goal | wall | CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for timing in results.cli:
        goal = HELP_GOAL_S if "--help" in timing.argv else STATUS_GOAL_S
        note = "" if timing.ok else " (exit status ≠ 0)"
        verdicts = (
            (_met(timing.seconds < goal), _met(timing.cpu_seconds < goal))
            if timing.bytecode
            else ("(reference)", "(reference)")
        )
        command = f"`{' '.join(timing.argv)}`{note}"
        bytecode = "cached" if timing.bytecode else "none"
        lines.append(
            f"| {command} | {bytecode} | {timing.runs} | {timing.seconds:.2f} | {timing.cpu_seconds:.2f} | "
            f"< {goal:g} s | {verdicts[0]} | {verdicts[1]} |"
        )
    return [*lines, ""]


def render(results: Results) -> str:
    """The model-server block: the run, the servers, the Envoy hop."""
    lines = [*_header(results), *_servers(results), *_hop(results)]
    return "\n".join(lines).rstrip() + "\n"


def render_cli(results: Results) -> str:
    """The CLI block: the run and the CLI's answer times."""
    lines = [*_header(results), *_cli(results)]
    return "\n".join(lines).rstrip() + "\n"
