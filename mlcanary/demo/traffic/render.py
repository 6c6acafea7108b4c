"""The closing summary of a traffic run as a table: one row per arm, plus a total."""

from __future__ import annotations

from rich.table import Table

from mlcanary.demo.traffic.report import ArmReport, TrafficReport
from mlcanary.rollout.arms import ARMS


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_summary(report: TrafficReport) -> Table:
    """A per-arm table (plus an ``unknown`` row when present and a total row) for the closing summary."""
    plan = report.plan
    title = (
        f"traffic to {plan.model} via {plan.front_door_url}: {report.sent}/{report.planned} sent "
        f"in {report.duration_s:.1f} s ({report.achieved_rps:.1f} req/s of {plan.rps:g} target)"
    )
    notes = [f"shed {report.shed}", f"late {report.late} (max lag {report.max_lag_ms:.0f} ms)"]
    if report.errors:
        notes.append("errors " + ", ".join(f"{kind} {n}" for kind, n in sorted(report.errors.items())))
    if plan.collector_url is not None:
        notes.append(
            f"feedback sent {report.feedback_sent}, failed {report.feedback_failed}, "
            f"dropped {report.feedback_dropped}"
        )
    table = Table(title=title, caption="; ".join(notes))
    for column in ("arm", "requests", "share", "ok", "4xx", "5xx", "transport"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for column in ("p50 ms", "p95 ms", "p99 ms", "positive rate", "mean p"):
        table.add_column(column, justify="right")

    def add(name: str, arm: ArmReport, share: float | None, *, end_section: bool = False) -> None:
        table.add_row(
            name,
            str(arm.requests),
            "-" if share is None else f"{share:.1%}",
            str(arm.ok),
            str(arm.client_errors_4xx),
            str(arm.server_errors_5xx),
            str(arm.transport_errors),
            _ms(arm.latency_p50_ms),
            _ms(arm.latency_p95_ms),
            _ms(arm.latency_p99_ms),
            _rate(arm.positive_rate),
            _rate(arm.mean_probability),
            end_section=end_section,
        )

    names = list(report.arms)
    for i, name in enumerate(names):
        add(
            name,
            report.arms[name],
            report.share(name) if name in ARMS else None,
            end_section=i == len(names) - 1,
        )
    add("total", report.total, None)
    return table
