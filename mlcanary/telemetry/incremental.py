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
— never the window.

Not covered here (they still read rows): the shadow phase (:mod:`mlcanary.telemetry.shadow`, pairs
joined in SQL), drift and paired agreement (:mod:`mlcanary.signals`, bounded samples of the logged
inputs).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CompoundSelect, bindparam, select, union_all

from mlcanary.telemetry.aggregate import ArmAggregate
from mlcanary.telemetry.rollup import refresh
from mlcanary.telemetry.rollup_sums import Sums, compute_sums
from mlcanary.telemetry.rollup_tables import (
    BUCKET_SECONDS,
    INT_FIELDS,
    LABEL_FIELDS,
    SPANS,
    SUM_FIELDS,
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
    first = math.ceil(epoch(a) / BUCKET_SECONDS) * BUCKET_SECONDS
    last = math.floor(epoch(b) / BUCKET_SECONDS) * BUCKET_SECONDS
    if first >= last:
        return [(a, b)], []
    to_moment = datetime.fromtimestamp
    ends = [(a, to_moment(first, UTC)), (to_moment(last, UTC), b)]
    return [(x, y) for x, y in ends if x < y], cover(first, last)


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
    """Sums over intervals for one model and its arms' versions, reusing each ragged end read."""

    def __init__(self, connection: Any, model: str, versions: dict[str, str]) -> None:
        self.connection, self.model, self.versions = connection, model, versions
        self._ends: dict[Interval, dict[str, Sums]] = {}

    def _end(self, interval: Interval) -> dict[str, Sums]:
        if interval not in self._ends:
            found = compute_sums(
                self.connection, self.model, *interval, by_bucket=False, versions=self.versions
            )
            self._ends[interval] = {arm: sums for (arm, _v, _b), sums in found.items()}
        return self._ends[interval]

    def sums(self, intervals: Sequence[Interval], *, histograms: Sequence[bool]) -> list[dict[str, Sums]]:
        """Each interval's sums per arm (with the latency histogram where ``histograms`` says so).
        The whole buckets of all the intervals are read in one query, each bucket once: the
        release window and the labelled window share nearly all of theirs."""
        totals: list[dict[str, Sums]] = [{arm: Sums() for arm in self.versions} for _ in intervals]
        users: dict[tuple[int, int], list[int]] = {}
        for k, (a, b) in enumerate(intervals):
            ends, pieces = _split(a, b)
            for interval in ends:
                for arm, sums in self._end(interval).items():
                    totals[k][arm].add(sums.values, sums.histogram if histograms[k] else None)
            for piece in pieces:
                users.setdefault(piece, []).append(k)
        if not users:
            return totals
        by_span: dict[int, list[int]] = {span: [] for span in SPANS}
        for span, bucket in users:
            by_span[span].append(bucket)
        params: dict[str, Any] = {"log": inference_log.name, "model": self.model}
        params.update({f"buckets_{span}": buckets for span, buckets in by_span.items()})
        for i, (arm, version) in enumerate(self.versions.items()):
            params.update({f"arm_{i}": arm, f"version_{i}": version})
        for row in self.connection.execute(_rollup_read(len(self.versions)), params).mappings():
            arm = row["arm"]
            if self.versions.get(arm) != row["version"]:
                continue
            pairs = None
            for k in users[(row["span"], row["bucket"])]:
                sums = totals[k][arm]
                sums.add(row)
                if histograms[k]:
                    # Straight into the total: parsing each row into its own histogram first cost
                    # more than the query at 10M requests (one row per piece, each ~100 bins).
                    pairs = pairs if pairs is not None else json.loads(row["latency_histogram"] or "[]")
                    sums.histogram.add_pairs(pairs)
        return totals


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
) -> dict[str | None, ArmAggregate]:
    """Per-arm :class:`ArmAggregate` of ``model`` in ``[since, until)`` from the running sums (see the
    module docstring); arguments as for :func:`~mlcanary.telemetry.aggregate.aggregate`. Arms
    without rows are absent. Raises SQLAlchemy's errors when the database fails."""
    refresh(store, model)
    with store.engine.connect() as connection:
        reader = _Reader(connection, model, dict(versions))
        core, window, labels = reader.sums(
            [
                (since, until),
                (max(window_start or since, since), until),
                (since, min(until, label_cutoff or until)),
            ],
            histograms=[True, False, False],
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
