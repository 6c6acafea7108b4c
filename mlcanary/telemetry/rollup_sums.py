"""Summing the inference log straight from its rows, per arm, version and 10-second bucket: what
the running sums are recomputed from (:mod:`mlcanary.telemetry.rollup`) and what a tick's ragged
window ends read (:mod:`mlcanary.telemetry.incremental`).

:func:`compute_sums` runs two grouped ``SELECT``s over a time range of the log (the additive sums of
:func:`~mlcanary.telemetry.aggregate.stored_sums`, then the latency histogram's bins), compiled once
per shape to SQL text. Labels come from ``feedback`` (the current ones) or, for a recomputed bucket,
from ``rollup_folded_labels`` (the ones the running sums hold; see
:mod:`mlcanary.telemetry.rollup_labels`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Dialect,
    Integer,
    Table,
    TextClause,
    and_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
    true,
)

from mlcanary.rollout.stats import LATENCY_FLOOR_MS
from mlcanary.telemetry.aggregate import stored_sums
from mlcanary.telemetry.latency_histogram import LOG_GAMMA, LatencyHistogram
from mlcanary.telemetry.log_tables import UTCDateTime, feedback, inference_log
from mlcanary.telemetry.rollup_tables import INT_FIELDS, SUM_FIELDS, bucket_expression, rollup_folded_labels

__all__ = ["Key", "Sums", "compute_sums"]

Key = tuple[str, str, int]
"""(arm, version, bucket) with '' for an unknown arm or version."""


class Sums:
    """One group's :data:`~mlcanary.telemetry.rollup_tables.SUM_FIELDS` and latency histogram."""

    __slots__ = ("histogram", "values")

    def __init__(self) -> None:
        self.values: dict[str, float] = dict.fromkeys(SUM_FIELDS, 0)
        self.histogram = LatencyHistogram()

    def add(
        self, values: Mapping[str, Any], histogram: LatencyHistogram | None = None, sign: int = 1
    ) -> None:
        mine = self.values
        for name in SUM_FIELDS:
            value = values[name]
            if value:
                mine[name] += sign * value
        if histogram is not None:
            self.histogram.add_scaled(histogram, sign)

    def add_sums(self, other: Sums, sign: int = 1) -> None:
        self.add(other.values, other.histogram, sign)

    @property
    def empty(self) -> bool:
        """Nothing counted: every count and the histogram are zero (a float sum without a count
        behind it is rounding). A row holding only a label's change is not empty."""
        return not any(self.values[name] for name in INT_FIELDS) and not any(self.histogram.counts.values())


@functools.lru_cache(maxsize=64)
def _statements(
    dialect: Dialect,
    table: Table,
    by_bucket: bool,
    versions: tuple[tuple[str, str], ...] | None,
    folded: bool,
    labels: bool = True,
) -> tuple[TextClause, TextClause]:
    """The two queries of :func:`compute_sums`, compiled once to SQL text with ``:model``,
    ``:since`` and ``:until`` left as parameters (rebuilding and re-keying the expression tree on
    every call cost more than running the query on a small bucket)."""
    t = table
    if folded:
        f: Any = rollup_folded_labels
        same_log = [f.c.log == table.name]
    else:
        f, same_log = feedback, []
    name = dialect.name
    scope = [
        t.c.model == literal_column(":model"),
        t.c.received_at >= literal_column(":since"),
        t.c.received_at < literal_column(":until"),
    ]
    if versions is not None:
        scope.append(func.coalesce(t.c.arm, "").in_([arm for arm, _ in versions]))
        scope.append(func.coalesce(t.c.version, "").in_([version for _, version in versions]))
    bucket = bucket_expression(t.c.received_at, name) if by_bucket else literal(0)
    keys = [func.coalesce(t.c.arm, "").label("arm"), func.coalesce(t.c.version, "").label("version")]
    joined: Any
    if not labels:
        sums = stored_sums(t, cast(null(), Integer))
        joined = t
    elif name == "postgresql":
        # Each row's label by its primary key (LIMIT keeps the lookup from being flattened into a
        # join): a plain outer join let PostgreSQL hash every label of the log — a cost growing with
        # the window — to label the few thousand rows of some buckets.
        label = (
            select(f.c.label)
            .where(*same_log, f.c.request_id == t.c.request_id, f.c.instance_index == t.c.instance_index)
            .limit(1)
            .lateral("labelled")
        )
        sums = stored_sums(t, label.c.label)
        joined = t.outerjoin(label, true())
    else:
        # SQLite joins by nested loops, through the labels' primary key.
        sums = stored_sums(t, f.c.label)
        joined = t.outerjoin(
            f, and_(*same_log, f.c.request_id == t.c.request_id, f.c.instance_index == t.c.instance_index)
        )
    group = [keys[0], keys[1], bucket] if by_bucket else [keys[0], keys[1]]
    stmt = (
        select(*keys, bucket.label("bucket"), *(expr.label(n) for n, expr in sums.items()))
        .select_from(joined)
        .where(*scope)
        .group_by(*group)
    )
    floored = func.greatest if name != "sqlite" else func.max
    index = cast(func.floor(func.ln(floored(t.c.latency_ms, LATENCY_FLOOR_MS)) / LOG_GAMMA), BigInteger)
    hist_stmt = (
        select(*keys, bucket.label("bucket"), index.label("bin"), func.count().label("n"))
        .where(*scope, t.c.instance_index == 0, t.c.latency_ms.is_not(None))
        .group_by(*group, index)
    )
    params = (bindparam("since", type_=UTCDateTime()), bindparam("until", type_=UTCDateTime()))

    def compiled(statement: Any) -> TextClause:
        sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        return text(sql).bindparams(*params)

    return compiled(stmt), compiled(hist_stmt)


def compute_sums(
    connection: Any,
    model: str,
    since: datetime,
    until: datetime,
    *,
    by_bucket: bool,
    versions: dict[str, str] | None = None,
    table: Table = inference_log,
    folded: bool = False,
    labels: bool = True,
    histograms: bool = True,
) -> dict[Key, Sums]:
    """Sums and histograms of ``model``'s rows in ``[since, until)`` straight from the log, per
    ``(arm, version, bucket)`` (bucket 0 unless ``by_bucket``); ``versions`` keeps those arms only.
    Labels are the current ones (``feedback``), or with ``folded`` the ones the running sums hold
    (``rollup_folded_labels``: what a recomputed bucket must agree with). Without ``labels`` the
    label sums (:data:`~mlcanary.telemetry.rollup_tables.LABEL_FIELDS`) are 0 and no label is looked
    up; without ``histograms`` the histograms are empty and not queried."""
    key_versions = tuple(sorted(versions.items())) if versions is not None else None
    sums_sql, hist_sql = _statements(connection.dialect, table, by_bucket, key_versions, folded, labels)
    params = {"model": model, "since": since, "until": until}
    found: dict[Key, Sums] = {}
    for row in connection.execute(sums_sql, params).mappings():
        key = (row["arm"], row["version"], int(row["bucket"]))
        if versions is not None and versions.get(key[0]) != key[1]:
            continue
        found.setdefault(key, Sums()).add(dict(row))
    if not histograms:
        return found
    # One row per (key, latency bin): thousands per refresh, so counted in place.
    counts: dict[int, int] | None = None
    last: Key | None = None
    for arm, version, bucket_start, bin_index, n in connection.execute(hist_sql, params).all():
        key = (arm, version, int(bucket_start))
        if key != last:
            last = key
            counts = found[key].histogram.counts if key in found else None
        if counts is not None:
            index = int(bin_index)
            counts[index] = counts.get(index, 0) + int(n)
    return found
