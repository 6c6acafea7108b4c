"""The shadow phase read from the logs: the candidate's answers to mirrored copies beside the
champion's answers to the originals, paired by request id.

``shadow_log`` holds the copies under the request id of the live request they copy, so one join on
``(request_id, instance_index)`` with ``inference_log`` pairs each candidate answer with the
champion's answer to the *same input*, in SQL (counts and sums: a tick costs the same at any
volume). :func:`measure_shadow` turns them into the judge's measurements: the champion's live arm,
the candidate's mirrored arm (its errors, latency, predictions and labels, through the one
aggregation of the log) and the pairs (:class:`~mlcanary.rollout.measurements.PairedScores`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, case, func, select

from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.measurements import ArmMetrics, Measurements, PairedScores
from mlcanary.rollout.state import ReleaseState
from mlcanary.rollout.stats import MeanSummary
from mlcanary.telemetry.aggregate import ArmAggregate, aggregate, arm_metrics
from mlcanary.telemetry.store import InferenceLogStore, inference_log, shadow_log

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PAIR_COLUMNS", "fetch_pairs", "measure_shadow", "paired_scores"]

PAIR_COLUMNS: tuple[str, ...] = (
    "request_id",
    "received_at",
    "champion_prediction",
    "champion_probability",
    "candidate_prediction",
    "candidate_probability",
    "candidate_status",
    "candidate_latency_ms",
)
"""Columns of :func:`fetch_pairs`."""


def _pair_scope(
    model: str, since: datetime, until: datetime, champion_version: str, candidate_version: str
) -> tuple[Any, list[ColumnElement[bool]]]:
    s, t = shadow_log, inference_log
    joined = s.join(t, and_(t.c.request_id == s.c.request_id, t.c.instance_index == s.c.instance_index))
    scope = [
        s.c.model == model,
        s.c.arm == CANDIDATE,
        s.c.version == candidate_version,
        s.c.received_at >= since,
        s.c.received_at < until,
        t.c.model == model,
        t.c.arm == CHAMPION,
        t.c.version == champion_version,
    ]
    return joined, scope


def paired_scores(
    store: InferenceLogStore,
    model: str,
    since: datetime,
    until: datetime,
    *,
    champion_version: str,
    candidate_version: str,
    live: int,
    mirrored: int,
) -> PairedScores:
    """The pairs of ``[since, until)`` (by the copy's arrival): instances both models predicted,
    those with the same label, and the candidate − champion probability over those with both.
    ``live`` and ``mirrored`` are passed through (the arms' answered requests)."""
    s, t = shadow_log, inference_log
    joined, scope = _pair_scope(model, since, until, champion_version, candidate_version)
    both = and_(s.c.prediction.is_not(None), t.c.prediction.is_not(None))
    scored = and_(s.c.probability.is_not(None), t.c.probability.is_not(None))
    diff = s.c.probability - t.c.probability

    def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def sum_if(condition: ColumnElement[bool], value: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, value), else_=0.0)), 0.0)

    stmt = (
        select(
            count_if(both).label("pairs"),
            count_if(and_(both, s.c.prediction == t.c.prediction)).label("agree"),
            count_if(scored).label("scored"),
            sum_if(scored, diff).label("diff_sum"),
            sum_if(scored, diff * diff).label("diff_sq_sum"),
            sum_if(scored, func.abs(diff)).label("abs_sum"),
        )
        .select_from(joined)
        .where(*scope)
    )
    with store.engine.connect() as connection:
        row = connection.execute(stmt).mappings().one()
    n = int(row["scored"])
    difference = MeanSummary.from_sums(n, float(row["diff_sum"]), float(row["diff_sq_sum"])) if n else None
    return PairedScores(
        live=live,
        mirrored=mirrored,
        pairs=int(row["pairs"]),
        agree=int(row["agree"]),
        probability_diff=difference,
        mean_abs_dp=float(row["abs_sum"]) / n if n else 0.0,
    )


def fetch_pairs(
    store: InferenceLogStore,
    model: str,
    since: datetime,
    until: datetime,
    *,
    champion_version: str,
    candidate_version: str,
    limit: int | None = None,
) -> pd.DataFrame:
    """The pairs of ``[since, until)`` as rows (:data:`PAIR_COLUMNS`), oldest first; with
    ``limit``, the most recent ones (for the report's plots)."""
    import pandas as pd

    s, t = shadow_log, inference_log
    joined, scope = _pair_scope(model, since, until, champion_version, candidate_version)
    stmt = (
        select(
            s.c.request_id,
            s.c.received_at,
            t.c.prediction,
            t.c.probability,
            s.c.prediction,
            s.c.probability,
            s.c.status_code,
            s.c.latency_ms,
        )
        .select_from(joined)
        .where(*scope)
        .order_by(s.c.received_at.desc())
    )
    if limit is not None:
        stmt = stmt.limit(max(0, int(limit)))
    with store.engine.connect() as connection:
        records = list(reversed(connection.execute(stmt).all()))
    frame = pd.DataFrame([tuple(r) for r in records], columns=list(PAIR_COLUMNS))
    frame["received_at"] = pd.to_datetime(frame["received_at"], utc=True)
    return frame


def _arm(found: ArmAggregate | None, version: str) -> ArmMetrics:
    return arm_metrics(found or ArmAggregate(arm=None), version)


def measure_shadow(
    store: InferenceLogStore,
    release: ReleaseState,
    *,
    window_start: datetime,
    now: datetime,
    max_latency_rows: int | None = None,
    label_cutoff: datetime | None = None,
) -> Measurements:
    """The shadow phase since the release started: the champion's live arm, the candidate's
    answers to mirrored copies ("slow" meaning slower than the champion's live P95) and their
    pairs. Raises SQLAlchemy's errors when the database is unreadable."""
    champion_version, candidate_version = release.champion_version, release.candidate_version
    common: dict[str, Any] = {
        "window_start": window_start,
        "max_latency_rows": max_latency_rows,
        "label_cutoff": label_cutoff,
    }
    live = aggregate(
        store, release.model, release.started_at, now, versions={CHAMPION: champion_version}, **common
    ).get(CHAMPION)
    mirrored = aggregate(
        store,
        release.model,
        release.started_at,
        now,
        versions={CANDIDATE: candidate_version},
        table=shadow_log,
        slow_above_ms=live.latency_p95_ms if live is not None else None,
        **common,
    ).get(CANDIDATE)
    champion, candidate = _arm(live, champion_version), _arm(mirrored, candidate_version)
    pairs = paired_scores(
        store,
        release.model,
        release.started_at,
        now,
        champion_version=champion_version,
        candidate_version=candidate_version,
        live=champion.requests,
        mirrored=candidate.requests,
    )
    return Measurements(
        start=release.started_at,
        end=now,
        window_start=window_start,
        champion=champion,
        candidate=candidate,
        agreement=pairs.agreement,
        paired=pairs,
        label_cutoff=label_cutoff,
    )
