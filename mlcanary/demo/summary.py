"""The releases of a demo side by side: :class:`ReleaseRecord`, :func:`summary_rows` and their
display text, shared by the terminal summary and the HTML report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlcanary.rollout.durations import human_duration
from mlcanary.rollout.measurements import ArmMetrics, Measurements
from mlcanary.rollout.state import Decision, ReleaseState

#: Keys of :func:`summary_rows`, in display order, with their column headings.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("release", "release"),
    ("outcome", "outcome"),
    ("duration_s", "duration"),
    ("ticks", "ticks"),
    ("traffic", "final candidate traffic"),
    ("champion_requests", "champion requests"),
    ("candidate_requests", "candidate requests"),
    ("champion_error_rate", "champion 5xx rate"),
    ("candidate_error_rate", "candidate 5xx rate"),
    ("champion_p95_ms", "champion P95"),
    ("candidate_p95_ms", "candidate P95"),
    ("reason", "final reason"),
)

DEFAULT_MAX_POINTS_PER_ARM = 4000


@dataclass
class ReleaseRecord:
    """One release as the report shows it.

    ``title`` heads its section (e.g. ``"v2 logistic regression: promoted"``); ``release`` is the
    final state; ``ticks`` holds what each monitor tick measured and decided, oldest first.
    ``initial_traffic`` is the candidate percent set when the canary started (the policy's first
    step); when ``None`` it is inferred from the first tick if that tick held.
    """

    title: str
    release: ReleaseState
    ticks: list[tuple[Measurements, Decision]]
    initial_traffic: int | None = None


def last_tick(record: ReleaseRecord) -> tuple[Measurements, Decision] | None:
    return record.ticks[-1] if record.ticks else None


def duration_s(record: ReleaseRecord) -> float | None:
    last = last_tick(record)
    if last is None:
        return None
    return max(0.0, (last[1].at - record.release.started_at).total_seconds())


def final_reason(record: ReleaseRecord) -> str:
    if record.release.reason is not None:
        return record.release.reason
    last = last_tick(record)
    return last[1].reason if last is not None else ""


def summary_rows(records: Sequence[ReleaseRecord]) -> list[dict[str, Any]]:
    """One dict per release, in order, with the keys of :data:`SUMMARY_COLUMNS` plus ``model``,
    ``champion_version`` and ``candidate_version``.

    Numbers are raw (not formatted) and come from the final tick's cumulative measurements:
    ``*_requests`` (int), ``*_error_rate`` (fraction, ``None`` without requests), ``*_p95_ms``
    (``None`` without latencies). ``duration_s`` runs from the release start to the last decision
    (``None`` without ticks); ``ticks`` counts the ticks given; ``outcome`` is the final phase;
    ``reason`` the release's final reason (else the last decision's, else ``""``).
    """
    rows: list[dict[str, Any]] = []
    for record in records:
        release = record.release
        last = last_tick(record)
        champion = last[0].champion if last is not None else ArmMetrics()
        candidate = last[0].candidate if last is not None else ArmMetrics()
        rows.append(
            {
                "release": record.title,
                "model": release.model,
                "champion_version": release.champion_version,
                "candidate_version": release.candidate_version,
                "outcome": release.phase.value,
                "duration_s": duration_s(record),
                "ticks": len(record.ticks),
                "traffic": release.traffic,
                "champion_requests": champion.requests,
                "candidate_requests": candidate.requests,
                "champion_error_rate": champion.error_rate,
                "candidate_error_rate": candidate.error_rate,
                "champion_p95_ms": champion.latency_ms.p95 if champion.latency_ms else None,
                "candidate_p95_ms": candidate.latency_ms.p95 if candidate.latency_ms else None,
                "reason": final_reason(record),
            }
        )
    return rows


def format_summary_value(key: str, value: Any) -> str:
    """A :func:`summary_rows` value as display text (unescaped): durations humanised, rates as
    percentages, latencies in ms, ``"—"`` for ``None``."""
    if value is None:
        return "—"
    if key == "duration_s":
        return human_duration(float(value))
    if key.endswith("_error_rate"):
        return f"{100 * float(value):.2f} %"
    if key.endswith("_ms"):
        return f"{float(value):.1f} ms"
    if key == "traffic":
        return f"{value} %"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
