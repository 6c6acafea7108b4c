"""What each arm did since its release started, from the running sums: a tick's cost does not grow
with the window.

:func:`incremental_aggregate` returns the same :class:`~mlcanary.telemetry.aggregate.ArmAggregate`
per arm as the full recomputation :func:`~mlcanary.telemetry.aggregate.aggregate` (with all
latencies: ``max_latency_rows=None``), to float rounding for the sums, with two differences of
method, both within :data:`~mlcanary.telemetry.latency_histogram.RELATIVE_ACCURACY` (α = 1 %):

* latency percentiles come from the log-spaced histogram of every latency in the window, each within
  relative error α of ``numpy.percentile`` over the raw latencies;
* ``slow`` counts latencies in buckets above the reference arm's P95: between the exact counts above
  ``P95 · (1 + α) / (1 − α)`` and above ``P95 · (1 − α) / (1 + α)``.

How: :func:`~mlcanary.telemetry.rollup.refresh` first folds in what changed since the last tick. Then
each interval the judge reads — everything in ``[since, until)``, the burst window
``[window_start, until)``, the labels ``[since, min(until, label_cutoff))`` — is split into whole
aligned buckets, read from the ``rollup`` table (at most about 90 rows per arm, greedily the coarsest
span that fits; one query for the three intervals, each bucket read once), and its two ragged ends
(under 10 s each), summed from the log itself. So a tick reads the rows that arrived or changed
since the last one, plus at most about a minute of rows at the edges, and a few hundred rollup rows
— never the window. Labels are looked up only on the ends of the labelled interval (one
primary-key probe per request, deeper as the log grows): with ``label_since`` and
``label_cutoff`` on bucket edges, as :class:`~mlcanary.telemetry.metrics.StoreMetricsSource` gives
them, none.

Not covered here (they still read rows): the shadow phase (:mod:`mlcanary.telemetry.shadow`, pairs
joined in SQL), drift and paired agreement (:mod:`mlcanary.signals`, bounded samples of the logged
inputs).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import CompoundSelect, bindparam, select, union_all

from mlcanary.telemetry.aggregate import ArmAggregate
from mlcanary.telemetry.rollup import refresh
from mlcanary.telemetry.rollup_sums import Sums, compute_sums
from mlcanary.telemetry.rollup_tables import (
    INT_FIELDS,
    LABEL_FIELDS,
    SPANS,
    SUM_FIELDS,
    bucket_edge,
    epoch,
    rollup,
)
from mlcanary.telemetry.store import InferenceLogStore, inference_log

__all__ = ["cover", "incremental_aggregate"]

Interval = tuple[datetime, datetime]


def cover(start: int, end: int) -> list[tuple[int, int]]:
    """Aligned ``(span, bucket)`` pairs exactly covering ``[start, end)`` (multiples of 10 s), the
    coarsest span that fits first: at most about 2 × (5 + 9 + 5 + 23) + days pairs."""
    pieces: list[tuple[int, int]] = []
    at = start
    while at < end:
        span = next(s for s in reversed(SPANS) if at % s == 0 and at + s <= end)
        pieces.append((span, at))
        at += span
    return pieces


def _split(a: datetime, b: datetime) -> tuple[list[Interval], list[tuple[int, int]]]:
    """``[a, b)`` as ragged ends read from the log and whole buckets read from the sums."""
    if b <= a:
        return [], []
    first, last = bucket_edge(a, up=True), bucket_edge(b)
    if first >= last:
        return [(a, b)], []
    ends = [(a, first), (last, b)]
    return [(x, y) for x, y in ends if x < y], cover(int(epoch(first)), int(epoch(last)))


@functools.lru_cache(maxsize=16)
def _rollup_read(arms: int) -> CompoundSelect:
    """The rollup rows of given buckets of each span, for ``arms`` (arm, version) pairs; built once
    (building and keying the statement cost more than running it). One exact primary-key lookup
    per (arm, span): an OR of spans made PostgreSQL filter every rollup row of the model, a cost
    that grew with the window's buckets."""
    r = rollup
    columns = [
        r.c.arm,
        r.c.version,
        r.c.span,
        r.c.bucket,
        *(r.c[name] for name in SUM_FIELDS),
        r.c.latency_histogram,
    ]
    return union_all(
        *(
            select(*columns).where(
                r.c.log == bindparam("log"),
                r.c.model == bindparam("model"),
                r.c.arm == bindparam(f"arm_{i}"),
                r.c.version == bindparam(f"version_{i}"),
                r.c.span == span,
                r.c.bucket.in_(bindparam(f"buckets_{span}", expanding=True)),
            )
            for i in range(arms)
            for span in SPANS
        )
    )


class _Reader:
    """Sums over intervals for one model and its arms' versions."""

    def __init__(self, connection: Any, model: str, versions: dict[str, str]) -> None:
        self.connection, self.model, self.versions = connection, model, versions

    def sums(
        self, intervals: Sequence[Interval], *, histograms: Sequence[bool], labels: Sequence[bool]
    ) -> list[dict[str, Sums]]:
        """Each interval's sums per arm, with the latency histogram where ``histograms`` says so and
        the label sums (:data:`~mlcanary.telemetry.rollup_tables.LABEL_FIELDS`) where ``labels``
        does (0 elsewhere). A ragged end shared by intervals is read once, looking labels up only if
        one of them needs them: each is a primary-key probe per row, deeper as the log grows. The
        whole buckets of all the intervals are read in one query, each bucket once: the release
        window and the labelled window share nearly all of theirs."""
        totals: list[dict[str, Sums]] = [{arm: Sums() for arm in self.versions} for _ in intervals]
        users: dict[tuple[int, int], list[int]] = {}
        end_users: dict[Interval, list[int]] = {}
        for k, (a, b) in enumerate(intervals):
            ends, pieces = _split(a, b)
            for interval in ends:
                end_users.setdefault(interval, []).append(k)
            for piece in pieces:
                users.setdefault(piece, []).append(k)
        for interval, readers in end_users.items():
            found = compute_sums(
                self.connection,
                self.model,
                *interval,
                by_bucket=False,
                versions=self.versions,
                labels=any(labels[k] for k in readers),
                histograms=any(histograms[k] for k in readers),
            )
            for (arm, _version, _bucket), sums in found.items():
                for k in readers:
                    totals[k][arm].add(sums.values, sums.histogram if histograms[k] else None)
        if users:
            self._add_buckets(users, len(intervals), totals, histograms)
        for k, wanted in enumerate(labels):
            if not wanted:
                for arm_sums in totals[k].values():
                    arm_sums.values.update(dict.fromkeys(LABEL_FIELDS, 0))
        return totals

    def _add_buckets(
        self,
        users: dict[tuple[int, int], list[int]],
        count: int,
        totals: list[dict[str, Sums]],
        histograms: Sequence[bool],
    ) -> None:
        """Add each whole bucket ``(span, bucket)`` to the totals of the intervals ``users`` names."""
        by_span: dict[int, list[int]] = {span: [] for span in SPANS}
        for span, bucket in users:
            by_span[span].append(bucket)
        params: dict[str, Any] = {"log": inference_log.name, "model": self.model}
        params.update({f"buckets_{span}": buckets for span, buckets in by_span.items()})
        for i, (arm, version) in enumerate(self.versions.items()):
            params.update({f"arm_{i}": arm, f"version_{i}": version})
        rows_of: dict[str, list[Any]] = {}
        for row in self.connection.execute(_rollup_read(len(self.versions)), params).all():
            if self.versions.get(row[0]) == row[1]:
                rows_of.setdefault(row[0], []).append(row)
        width = len(SUM_FIELDS)
        for arm, rows in rows_of.items():
            # Summed as matrices, each row's histogram parsed in one go: per row, Python's loops
            # cost more than the query, and a longer window has more rows (coarser, but more).
            member = np.zeros((count, len(rows)))
            for j, row in enumerate(rows):
                member[users[(row[2], row[3])], j] = 1.0
            values = member @ np.array([row[4 : 4 + width] for row in rows], dtype=np.float64)
            for k, summed in enumerate(values.tolist()):
                totals[k][arm].add(dict(zip(SUM_FIELDS, summed, strict=True)))
                if histograms[k]:
                    totals[k][arm].histogram.add_json(row[-1] for j, row in enumerate(rows) if member[k, j])


def incremental_aggregate(
    store: InferenceLogStore,
    model: str,
    since: datetime,
    until: datetime,
    *,
    versions: dict[str, str],
    window_start: datetime | None = None,
    slow_reference: str | None = None,
    label_cutoff: datetime | None = None,
    label_since: datetime | None = None,
) -> dict[str | None, ArmAggregate]:
    """Per-arm :class:`ArmAggregate` of ``model`` in ``[since, until)`` from the running sums (see the
    module docstring); arguments as for :func:`~mlcanary.telemetry.aggregate.aggregate`, and the
    label sums count requests from ``label_since`` on (default ``since``). Arms without rows are
    absent. Raises SQLAlchemy's errors when the database fails."""
    refresh(store, model)
    with store.engine.connect() as connection:
        reader = _Reader(connection, model, dict(versions))
        core, window, labels = reader.sums(
            [
                (since, until),
                (max(window_start or since, since), until),
                (max(label_since or since, since), min(until, label_cutoff or until)),
            ],
            histograms=[True, False, False],
            labels=[False, False, True],
        )
    slow_above: float | None = None
    if slow_reference is not None:
        reference = core.get(slow_reference)
        p95 = reference.histogram.percentiles([95]) if reference is not None else None
        slow_above = p95[0] if p95 else math.inf
    found: dict[str | None, ArmAggregate] = {}
    for arm, sums in core.items():
        values = sums.values
        if not values["instances"]:
            continue
        fields = {name: values[name] for name in SUM_FIELDS if name != "probability_sum"}
        fields.update({name: labels[arm].values[name] for name in LABEL_FIELDS})
        fields = {name: int(v) if name in INT_FIELDS else float(v) for name, v in fields.items()}
        percentiles = sums.histogram.percentiles([50, 95, 99]) or [None, None, None]
        found[arm] = ArmAggregate(
            arm=arm,
            **fields,
            slow=0 if slow_above is None else sums.histogram.count_above(slow_above),
            window_responses=int(window[arm].values["responses"]),
            window_errors_5xx=int(window[arm].values["errors_5xx"]),
            mean_probability=values["probability_sum"] / values["probabilities"]
            if values["probabilities"]
            else None,
            latency_p50_ms=percentiles[0],
            latency_p95_ms=percentiles[1],
            latency_p99_ms=percentiles[2],
        )
    return found
