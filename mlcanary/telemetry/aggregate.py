"""The full aggregation of the inference log: what each arm did over a window, summed in SQL.

:func:`aggregate` runs one grouped ``SELECT`` over ``inference_log`` (outer-joined to ``feedback``)
and returns an :class:`ArmAggregate` per arm. Everything is a count, sum or mean in portable SQL
(SQLite and PostgreSQL), computed in the database, but **over every row of the window**: its cost
grows linearly with the traffic in the window (about 6 s per million rows on SQLite). Latency
percentiles read latencies into Python, at most ``max_latency_rows`` of the most recent ones per arm.

The live canary's ticks read the running sums instead (:mod:`mlcanary.telemetry.incremental`,
equal to this to float rounding and 1 % for percentiles); this full recomputation is their
reference in tests and serves the shadow phase (:mod:`mlcanary.telemetry.shadow`).

Two kinds of rows are counted, and every field says which:

* **requests** are HTTP requests: the index-0 row of each ``request_id``, whatever the batch size;
  ``responses`` are those with a logged response, ``unpaired`` those without one (yet);
* **instances** are predicted rows (every index): predictions, positives, probabilities and labels.

Label outcomes (the confusion matrix at the serving threshold, Brier score and log-loss sums) cover
only instances received before ``label_cutoff``: a request younger than the label delay has had no
chance to get its label yet, and counting it would bias every label metric towards the arm with
more old traffic.

The metrics source (:mod:`mlcanary.telemetry.metrics`) turns two of these — champion and candidate,
each at its version — into the judge's measurements.

Adding a measurement: a field on :class:`ArmAggregate` and its SQL expression, under the same
name, in :func:`_sums`; if it is a sum, also its name in
:data:`~mlcanary.telemetry.rollup_tables.SUM_FIELDS` (a column of the running sums), else how
:func:`~mlcanary.telemetry.incremental.incremental_aggregate` derives it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Table, and_, case, func, literal, or_, select

from mlcanary.rollout.measurements import ArmMetrics, LabelOutcomes, Percentiles
from mlcanary.rollout.stats import LATENCY_FLOOR_MS, MeanSummary
from mlcanary.telemetry.rollup_tables import SUM_FIELDS
from mlcanary.telemetry.store import InferenceLogStore, feedback, inference_log

__all__ = ["ArmAggregate", "aggregate", "arm_metrics", "stored_sums"]

PROBABILITY_FLOOR = 1e-15
"""Probabilities are clipped here before taking logs (log loss), as scikit-learn does."""


@dataclass(frozen=True, slots=True)
class ArmAggregate:
    """What one arm did in ``[since, until)`` of ``received_at`` (see the module docstring).

    Requests (index-0 rows): ``requests`` all, ``responses`` with a logged response, ``unpaired``
    without one, ``errors_5xx`` / ``errors_4xx`` by status code, ``latency_samples`` with a known
    latency, ``log_latency_sum`` / ``log_latency_sum_sq`` the sums of ln(latency ms) over them
    (latencies below :data:`~mlcanary.rollout.stats.LATENCY_FLOOR_MS` raised to it), ``slow`` those
    slower than the reference P95 (0 without a reference), ``window_responses`` /
    ``window_errors_5xx`` the responses and 5xx at or after the window start.

    Instances (every row): ``instances``, ``answered`` (with a 2xx status), ``predictions`` (with a
    class label), ``positive_predictions`` (label 1), ``probabilities`` (with a positive-class
    probability), ``mean_probability`` (``None`` without probabilities).

    Labelled predictions among instances received before the label cutoff: the confusion-matrix
    cells ``true_positives`` … ``true_negatives``, and over the ``scored`` ones that also carry a
    probability p, ``brier_sum`` / ``brier_sq_sum`` of (p − y)² and ``log_loss_sum`` /
    ``log_loss_sq_sum`` of −ln(p if y = 1 else 1 − p), p clipped at :data:`PROBABILITY_FLOOR`
    (:attr:`labels` gives them as the judge's :class:`~mlcanary.rollout.measurements.LabelOutcomes`).

    Latency percentiles (milliseconds, linear interpolation) come from the most recent latencies
    read (all, or ``max_latency_rows``) and are ``None`` without any. ``arm`` is ``None`` for rows
    whose arm is unknown (events straight from KServe's agent).
    """

    arm: str | None
    requests: int = 0
    responses: int = 0
    unpaired: int = 0
    errors_5xx: int = 0
    errors_4xx: int = 0
    latency_samples: int = 0
    log_latency_sum: float = 0.0
    log_latency_sum_sq: float = 0.0
    slow: int = 0
    window_responses: int = 0
    window_errors_5xx: int = 0
    instances: int = 0
    answered: int = 0
    predictions: int = 0
    positive_predictions: int = 0
    probabilities: int = 0
    mean_probability: float | None = None
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    true_negatives: int = 0
    scored: int = 0
    brier_sum: float = 0.0
    brier_sq_sum: float = 0.0
    log_loss_sum: float = 0.0
    log_loss_sq_sum: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        """Share of logged responses with a 5xx status; ``None`` without responses."""
        return self.errors_5xx / self.responses if self.responses else None

    @property
    def labels(self) -> LabelOutcomes:
        """The label outcomes as the judge reads them."""
        return LabelOutcomes(**{f.name: getattr(self, f.name) for f in fields(LabelOutcomes)})

    @property
    def labeled(self) -> int:
        """Labelled predictions (received before the label cutoff)."""
        return self.labels.labeled

    @property
    def correct(self) -> int:
        """Labelled predictions that matched their label."""
        return self.labels.correct

    @property
    def log_latency(self) -> MeanSummary | None:
        """Mean and variance of ln(latency) for the judge; ``None`` with fewer than two samples."""
        if self.latency_samples < 2:
            return None
        return MeanSummary.from_sums(
            self.latency_samples, self.log_latency_sum, self.log_latency_sum_sq, log_scale=True
        )


def _sums(
    t: Table,
    window_start: datetime,
    slow_above: float | None,
    label_cutoff: datetime | None,
    label: ColumnElement[Any] | None = None,
) -> dict[str, ColumnElement[Any]]:
    """Field name of :class:`ArmAggregate` → its SQL aggregate (over the log outer-joined to feedback;
    ``label`` is the joined label column, ``feedback.label`` unless the caller joins it otherwise)."""
    label = feedback.c.label if label is None else label
    head = t.c.instance_index == 0
    responded = and_(head, t.c.response_received_at.is_not(None))
    timed = and_(head, t.c.latency_ms.is_not(None))
    floored = case((t.c.latency_ms < LATENCY_FLOOR_MS, LATENCY_FLOOR_MS), else_=t.c.latency_ms)
    log_latency = func.ln(floored)
    in_window = t.c.received_at >= window_start
    predicted = t.c.prediction.is_not(None)
    labelled = and_(predicted, label.is_not(None))
    if label_cutoff is not None:
        labelled = and_(labelled, t.c.received_at < label_cutoff)
    scored = and_(labelled, t.c.probability.is_not(None))
    brier = (t.c.probability - label) * (t.c.probability - label)
    p_label = case((label == 1, t.c.probability), else_=1.0 - t.c.probability)
    log_loss = -func.ln(case((p_label < PROBABILITY_FLOOR, PROBABILITY_FLOOR), else_=p_label))

    def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def sum_if(condition: ColumnElement[bool], value: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, value), else_=0.0)), 0.0)

    return {
        "requests": count_if(head),
        "responses": count_if(responded),
        "unpaired": count_if(and_(head, t.c.response_received_at.is_(None))),
        "errors_5xx": count_if(and_(responded, t.c.status_code >= 500)),
        "errors_4xx": count_if(and_(responded, t.c.status_code >= 400, t.c.status_code < 500)),
        "latency_samples": count_if(timed),
        "log_latency_sum": sum_if(timed, log_latency),
        "log_latency_sum_sq": sum_if(timed, log_latency * log_latency),
        "slow": literal(0) if slow_above is None else count_if(and_(timed, t.c.latency_ms > slow_above)),
        "window_responses": count_if(and_(responded, in_window)),
        "window_errors_5xx": count_if(and_(responded, in_window, t.c.status_code >= 500)),
        "instances": func.count(),
        "answered": count_if(and_(t.c.status_code >= 200, t.c.status_code < 300)),
        "predictions": func.count(t.c.prediction),
        "positive_predictions": count_if(t.c.prediction == 1),
        "probabilities": func.count(t.c.probability),
        "mean_probability": func.avg(t.c.probability),
        "true_positives": count_if(and_(labelled, label == 1, t.c.prediction == 1)),
        "false_positives": count_if(and_(labelled, label == 0, t.c.prediction == 1)),
        "false_negatives": count_if(and_(labelled, label == 1, t.c.prediction == 0)),
        "true_negatives": count_if(and_(labelled, label == 0, t.c.prediction == 0)),
        "scored": count_if(scored),
        "brier_sum": sum_if(scored, brier),
        "brier_sq_sum": sum_if(scored, brier * brier),
        "log_loss_sum": sum_if(scored, log_loss),
        "log_loss_sq_sum": sum_if(scored, log_loss * log_loss),
    }


def stored_sums(t: Table, label: ColumnElement[Any] | None = None) -> dict[str, ColumnElement[Any]]:
    """The sums the running totals keep (:data:`~mlcanary.telemetry.rollup_tables.SUM_FIELDS`): every
    additive field of :func:`_sums` over all labels, plus the sum of probabilities (for the mean);
    ``label`` as for :func:`_sums`."""
    sums = _sums(t, datetime(1970, 1, 1, tzinfo=UTC), None, None, label)
    kept = {name: sums[name] for name in SUM_FIELDS if name in sums}
    kept["probability_sum"] = func.coalesce(func.sum(t.c.probability), 0.0)
    return kept


_FLOAT_FIELDS = frozenset(f.name for f in fields(ArmAggregate) if str(f.type).startswith("float"))


def _value(name: str, raw: Any) -> Any:
    if raw is None:
        return None
    return float(raw) if name in _FLOAT_FIELDS else int(raw)


def _scope(
    t: Table, model: str, since: datetime, until: datetime, versions: Mapping[str, str] | None
) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [
        t.c.model == model,
        t.c.received_at >= since,
        t.c.received_at < until,
    ]
    if versions is not None:
        clauses.append(or_(*(and_(t.c.arm == arm, t.c.version == v) for arm, v in versions.items())))
    return clauses


def _latencies(
    connection: Any, t: Table, scope: list[ColumnElement[bool]], arm: str | None, limit: int | None
) -> np.ndarray:
    arm_clause = t.c.arm.is_(None) if arm is None else t.c.arm == arm
    stmt = (
        select(t.c.latency_ms)
        .where(*scope, arm_clause, t.c.instance_index == 0, t.c.latency_ms.is_not(None))
        .order_by(t.c.received_at.desc())
    )
    if limit is not None:
        stmt = stmt.limit(max(0, int(limit)))
    return np.asarray(connection.execute(stmt).scalars().all(), dtype=float)


def aggregate(
    store: InferenceLogStore,
    model: str,
    since: datetime,
    until: datetime,
    *,
    versions: Mapping[str, str] | None = None,
    window_start: datetime | None = None,
    slow_reference: str | None = None,
    max_latency_rows: int | None = None,
    label_cutoff: datetime | None = None,
    table: Table = inference_log,
    slow_above_ms: float | None = None,
) -> dict[str | None, ArmAggregate]:
    """Per-arm :class:`ArmAggregate` of ``model`` in ``[since, until)``, keyed by arm.

    ``versions`` (arm → version) keeps only those arms, each at its version, so traffic served by
    another version on the same arm never leaks in; ``None`` keeps every arm (unknown included).
    ``window_start`` starts the ``window_*`` counts (default: ``since``). ``slow_reference`` names the
    arm whose latency P95 defines ``slow`` for every arm (no such latencies: nothing is slow).
    ``max_latency_rows`` bounds the latencies read per arm for the percentiles (default: all).
    ``label_cutoff`` keeps the label outcomes to instances received before it (default: all).
    ``slow_above_ms`` sets the slow threshold directly instead (when ``slow_reference`` is None).
    ``table`` is the log summed: ``inference_log`` (live traffic) or ``shadow_log`` (the shadow
    phase's mirrored copies). Arms without rows are absent. Raises SQLAlchemy's errors when the
    database is unreadable.
    """
    t, f = table, feedback
    scope = _scope(t, model, since, until, versions)
    with store.engine.connect() as connection:
        if versions is not None:
            arms: list[str | None] = list(versions)
        else:
            arms = list(connection.execute(select(t.c.arm).where(*scope).distinct()).scalars().all())
        samples = {arm: _latencies(connection, t, scope, arm, max_latency_rows) for arm in arms}
        slow_above = slow_above_ms
        if slow_reference is not None:
            reference = samples.get(slow_reference)
            slow_above = (
                float(np.percentile(reference, 95)) if reference is not None and reference.size else math.inf
            )
        sums = _sums(t, window_start or since, slow_above, label_cutoff)
        joined = t.outerjoin(
            f, and_(f.c.request_id == t.c.request_id, f.c.instance_index == t.c.instance_index)
        )
        stmt = (
            select(t.c.arm, *(expr.label(name) for name, expr in sums.items()))
            .select_from(joined)
            .where(*scope)
            .group_by(t.c.arm)
        )
        rows = connection.execute(stmt).mappings().all()
    found: dict[str | None, ArmAggregate] = {}
    for row in rows:
        arm = row["arm"]
        sample = samples.get(arm)
        if sample is None:
            sample = np.empty(0)
        p50, p95, p99 = (
            (float(v) for v in np.percentile(sample, [50, 95, 99])) if sample.size else (None, None, None)
        )
        found[arm] = ArmAggregate(
            arm=arm,
            **{name: _value(name, row[name]) for name in sums},
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
        )
    return found


def arm_metrics(found: ArmAggregate, version: str) -> ArmMetrics:
    """The judge's view of one arm's aggregate: requests are the answered ones."""
    p50, p95, p99 = found.latency_p50_ms, found.latency_p95_ms, found.latency_p99_ms
    percentiles = (
        Percentiles(p50, p95, p99) if p50 is not None and p95 is not None and p99 is not None else None
    )
    return ArmMetrics(
        version=version,
        requests=found.responses,
        errors=found.errors_5xx,
        log_latency=found.log_latency,
        latency_ms=percentiles,
        slow=found.slow,
        predictions=found.predictions,
        positives=found.positive_predictions,
        mean_probability=found.mean_probability,
        labels=found.labels,
        window_requests=found.window_responses,
        window_errors=found.window_errors_5xx,
        answered=found.answered,
        probabilities=found.probabilities,
    )
