"""``MetricsSource`` over the inference-log store: both arms measured over the same window.

Counts, sums and means are aggregated in SQL (portable to PostgreSQL), so a tick costs the same at
any traffic volume; only latency percentiles read latencies into Python, and at most
``max_latency_rows`` of the most recent ones per arm. Rows are selected by model, arm *and* version,
so traffic served before the release (or by another version on the same arm) never leaks in.

Drift and paired agreement need the models themselves; they are measured by an optional
``extras`` callable (see :mod:`mlcanary.rollout.evidence` / the monitor), so this module stays a
pure SQL adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from mlcanary.rollout.measurements import ArmMetrics, LabelOutcomes, Measurements, Percentiles
from mlcanary.rollout.model_outputs import ArmOutputs, unmeasured_metrics
from mlcanary.rollout.policy import LABEL_METRICS
from mlcanary.rollout.state import ReleaseState
from mlcanary.rollout.stats import LATENCY_FLOOR_MS, MeanSummary
from mlcanary.telemetry.store import InferenceLogStore, feedback, inference_log

_PROBABILITY_FLOOR = 1e-15
"""Probabilities are clipped here before taking logs (log loss), as scikit-learn does."""

Extras = Callable[[ReleaseState, datetime, datetime, Measurements], Measurements]


class StoreMetricsSource:
    """Measures a release from the inference log (see the module docstring)."""

    def __init__(
        self,
        store: InferenceLogStore,
        *,
        max_latency_rows: int = 50_000,
        extras: Extras | None = None,
        label_delay: timedelta = timedelta(0),
    ) -> None:
        self.store = store
        self.max_latency_rows = max_latency_rows
        self.extras = extras
        self.label_delay = label_delay

    def _where(self, model: str, arm: str, version: str, since: datetime, until: datetime) -> Any:
        t = inference_log
        return and_(
            t.c.model == model,
            t.c.arm == arm,
            t.c.version == version,
            t.c.received_at >= since,
            t.c.received_at < until,
        )

    def _latencies(self, connection: Any, where: Any) -> np.ndarray:
        t = inference_log
        stmt = (
            select(t.c.latency_ms)
            .where(where, t.c.instance_index == 0, t.c.latency_ms.is_not(None))
            .order_by(t.c.received_at.desc())
            .limit(self.max_latency_rows)
        )
        return np.asarray(connection.execute(stmt).scalars().all(), dtype=float)

    def _labels(
        self, connection: Any, model: str, arm: str, version: str, since: datetime, cutoff: datetime
    ) -> LabelOutcomes:
        """Outcomes of the labelled predictions among requests received before ``cutoff``."""
        t, f = inference_log, feedback
        if cutoff <= since:
            return LabelOutcomes()

        def count_if(condition: Any) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        def total(expression: Any) -> Any:
            return func.coalesce(func.sum(case((scored, expression), else_=0.0)), 0.0)

        scored = t.c.probability.is_not(None)
        brier = (t.c.probability - f.c.label) * (t.c.probability - f.c.label)
        p_label = case((f.c.label == 1, t.c.probability), else_=1.0 - t.c.probability)
        log_loss = -func.ln(case((p_label < _PROBABILITY_FLOOR, _PROBABILITY_FLOOR), else_=p_label))
        row = connection.execute(
            select(
                count_if(and_(f.c.label == 1, t.c.prediction == 1)),
                count_if(and_(f.c.label == 0, t.c.prediction == 1)),
                count_if(and_(f.c.label == 1, t.c.prediction == 0)),
                count_if(and_(f.c.label == 0, t.c.prediction == 0)),
                count_if(scored),
                total(brier),
                total(brier * brier),
                total(log_loss),
                total(log_loss * log_loss),
            )
            .select_from(
                t.join(f, and_(f.c.request_id == t.c.request_id, f.c.instance_index == t.c.instance_index))
            )
            .where(self._where(model, arm, version, since, cutoff), t.c.prediction.is_not(None))
        ).one()
        tp, fp, fn, tn, n_scored, b_sum, b_sq, l_sum, l_sq = row
        return LabelOutcomes(
            true_positives=int(tp),
            false_positives=int(fp),
            false_negatives=int(fn),
            true_negatives=int(tn),
            scored=int(n_scored),
            brier_sum=float(b_sum),
            brier_sq_sum=float(b_sq),
            log_loss_sum=float(l_sum),
            log_loss_sq_sum=float(l_sq),
        )

    def _arm(
        self,
        connection: Any,
        model: str,
        arm: str,
        version: str,
        since: datetime,
        until: datetime,
        window_start: datetime,
        slow_above: float,
        label_cutoff: datetime,
        latencies: np.ndarray | None = None,
    ) -> ArmMetrics:
        t = inference_log
        where = self._where(model, arm, version, since, until)
        head = t.c.instance_index == 0
        responded = and_(head, t.c.status_code.is_not(None))

        def count_if(condition: Any) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        timed = and_(head, t.c.latency_ms.is_not(None))
        floored = case((t.c.latency_ms < LATENCY_FLOOR_MS, LATENCY_FLOOR_MS), else_=t.c.latency_ms)
        log_latency = func.ln(floored)
        row = connection.execute(
            select(
                count_if(responded),
                count_if(and_(responded, t.c.status_code >= 500)),
                count_if(timed),
                func.coalesce(func.sum(case((timed, log_latency), else_=0.0)), 0.0),
                func.coalesce(func.sum(case((timed, log_latency * log_latency), else_=0.0)), 0.0),
                func.count(t.c.prediction),
                count_if(t.c.prediction == 1),
                func.avg(t.c.probability),
                count_if(and_(responded, t.c.received_at >= window_start)),
                count_if(and_(responded, t.c.received_at >= window_start, t.c.status_code >= 500)),
                count_if(and_(timed, t.c.latency_ms > slow_above)),
                count_if(and_(t.c.status_code >= 200, t.c.status_code < 300)),
                func.count(t.c.probability),
            ).where(where)
        ).one()
        labels = self._labels(connection, model, arm, version, since, min(until, label_cutoff))
        (requests, errors, n_timed, sum_log, sum_log_sq, preds, positives, mean_p, w_req, w_err, slow) = row[
            :11
        ]
        answered, with_probability = row[11:]
        if latencies is None:
            latencies = self._latencies(connection, where)
        percentiles = (
            Percentiles(*(float(v) for v in np.percentile(latencies, [50, 95, 99])))
            if latencies.size
            else None
        )
        summary = (
            MeanSummary.from_sums(int(n_timed), float(sum_log), float(sum_log_sq), log_scale=True)
            if n_timed and n_timed > 1
            else None
        )
        metrics = ArmMetrics(
            version=version,
            requests=int(requests),
            errors=int(errors),
            log_latency=summary,
            latency_ms=percentiles,
            slow=int(slow or 0),
            predictions=int(preds),
            positives=int(positives),
            mean_probability=None if mean_p is None else float(mean_p),
            labels=labels,
            window_requests=int(w_req),
            window_errors=int(w_err),
            answered=int(answered or 0),
            probabilities=int(with_probability or 0),
        )
        return metrics

    def measure(self, release: ReleaseState, *, window_start: datetime, now: datetime) -> Measurements:
        """Cumulative metrics of both arms since the release started (see the module docstring)."""
        problems: dict[str, str] = {}
        try:
            with self.store.engine.connect() as connection:
                model, since = release.model, release.started_at
                label_cutoff = now - self.label_delay
                champion_where = self._where(model, "champion", release.champion_version, since, now)
                champion_latencies = self._latencies(connection, champion_where)
                # "Slow" means slower than the champion's P95 over the same window, for both arms.
                p95 = float(np.percentile(champion_latencies, 95)) if champion_latencies.size else math.inf
                champion = self._arm(
                    connection,
                    model,
                    "champion",
                    release.champion_version,
                    since,
                    now,
                    window_start,
                    p95,
                    label_cutoff,
                    champion_latencies,
                )
                candidate = self._arm(
                    connection,
                    model,
                    "candidate",
                    release.candidate_version,
                    since,
                    now,
                    window_start,
                    p95,
                    label_cutoff,
                )
        except SQLAlchemyError as exc:
            reason = f"inference log unreadable: {type(exc).__name__}: {exc}"[:300]
            empty = ArmMetrics()
            problems = dict.fromkeys(
                (
                    "error_rate",
                    "latency",
                    "latency_p95",
                    "positive_rate",
                    "error_burst",
                    *sorted(LABEL_METRICS),
                ),
                reason,
            )
            return Measurements(
                start=release.started_at,
                end=now,
                window_start=window_start,
                champion=replace(empty, version=release.champion_version),
                candidate=replace(empty, version=release.candidate_version),
                problems=problems,
            )
        measurements = Measurements(
            start=release.started_at,
            end=now,
            window_start=window_start,
            champion=champion,
            candidate=candidate,
            label_cutoff=now - self.label_delay,
            problems=problems,
            unmeasured=unmeasured_metrics(
                [
                    ArmOutputs(name, arm.version, arm.answered, arm.predictions, arm.probabilities)
                    for name, arm in (("champion", champion), ("candidate", candidate))
                ]
            ),
        )
        if self.extras is not None:
            measurements = self.extras(release, window_start, now, measurements)
        return measurements
