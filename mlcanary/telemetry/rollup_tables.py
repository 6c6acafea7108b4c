"""The tables of the inference log's running sums, and how a write marks what it changed.

``rollup`` holds, per log table, model, arm, version and aligned time bucket, the sums
:class:`~mlcanary.telemetry.aggregate.ArmAggregate` is made of (:data:`SUM_FIELDS`) and a latency
histogram (:mod:`mlcanary.telemetry.latency_histogram`). Buckets come in :data:`SPANS` (10 s, 1 min,
10 min, 1 h, 1 day, aligned to the Unix epoch): a bucket of one span is the sum of the buckets of the
span below it, so any window is covered by a few dozen rows whatever its length.

``rollup_dirty`` is the change log of the rows: every write to ``inference_log`` upserts one row per
10-second bucket it touched (a new random ``generation``), **in the same transaction as the data**. So a
bucket is marked exactly when its rows change, in commit order by construction: a transaction that
commits late (concurrent writers, a long batch) carries its marks with it, and no high-water mark or
safety margin is needed. :mod:`mlcanary.telemetry.rollup` recomputes marked buckets and removes a mark
only if its generation is still the one it read. Generations are random rather than counted so that a
mark deleted by one refresh and created again by a write cannot look unchanged to another refresh
that read the first one (a counter would restart at the same value).

Labels are marked per instance, not per bucket: a label upserts ``rollup_label_marks`` (same
transaction, same generation rule) and the refresh folds it in as the change of that one instance's
contribution, whatever its bucket holds (a day-late label would otherwise re-read a whole busy
bucket). For that the sums must know which label they hold: ``rollup_folded_labels`` is the label
each instance's contribution was computed with — derived data like the sums, rebuilt with them; a
recomputed bucket reads its labels from there, never from ``feedback``. A write that logs an
instance whose label is already stored marks that label again (its earlier mark may have been
dropped as an orphan, see :mod:`mlcanary.telemetry.rollup`).

``rollup_state`` has one row per (log, model) whose sums exist; without it the sums are (re)built
from the log first. Refreshes lock this row, so they are serialised on PostgreSQL as on SQLite.
"""

from __future__ import annotations

import functools
import math
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    cast,
    func,
)

__all__ = [
    "BUCKET_SECONDS",
    "FLOAT_FIELDS",
    "INT_FIELDS",
    "LABEL_FIELDS",
    "SPANS",
    "SUM_FIELDS",
    "bucket_edge",
    "bucket_expression",
    "bucket_of",
    "mark_changed",
    "mark_labels",
    "new_generation",
    "rollup",
    "rollup_dirty",
    "rollup_folded_labels",
    "rollup_folded_state",
    "rollup_label_marks",
    "rollup_metadata",
    "rollup_state",
]

rollup_metadata = MetaData()

BUCKET_SECONDS = 10
"""The finest bucket: what a write marks and a refresh recomputes from the log."""
SPANS: tuple[int, ...] = (BUCKET_SECONDS, 60, 600, 3600, 86400)
"""Bucket lengths in seconds, each a multiple of the one before."""

INT_FIELDS: tuple[str, ...] = (
    "requests",
    "responses",
    "unpaired",
    "errors_5xx",
    "errors_4xx",
    "latency_samples",
    "instances",
    "answered",
    "predictions",
    "positive_predictions",
    "probabilities",
    "true_positives",
    "false_positives",
    "false_negatives",
    "true_negatives",
    "scored",
)
FLOAT_FIELDS: tuple[str, ...] = (
    "log_latency_sum",
    "log_latency_sum_sq",
    "probability_sum",
    "brier_sum",
    "brier_sq_sum",
    "log_loss_sum",
    "log_loss_sq_sum",
)
SUM_FIELDS: tuple[str, ...] = INT_FIELDS + FLOAT_FIELDS
#: The sums of labelled instances (counted only before the label cutoff).
LABEL_FIELDS: tuple[str, ...] = (
    "true_positives",
    "false_positives",
    "false_negatives",
    "true_negatives",
    "scored",
    "brier_sum",
    "brier_sq_sum",
    "log_loss_sum",
    "log_loss_sq_sum",
)

#: Generations fit a 32-bit INTEGER column.
_GENERATIONS = 2**31 - 2

rollup_dirty = Table(
    "rollup_dirty",
    rollup_metadata,
    Column("log", String(32), nullable=False),
    Column("model", String(255), nullable=False),
    Column("bucket", BigInteger, nullable=False),
    Column("generation", Integer, nullable=False),
    PrimaryKeyConstraint("log", "model", "bucket", name="pk_rollup_dirty"),
)

rollup_label_marks = Table(
    "rollup_label_marks",
    rollup_metadata,
    Column("request_id", String(255), nullable=False),
    Column("instance_index", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    # The writer's clock (epoch seconds): how old a mark whose request was never logged is.
    Column("marked_at", Float, nullable=False),
    PrimaryKeyConstraint("request_id", "instance_index", name="pk_rollup_label_marks"),
)

rollup_folded_labels = Table(
    "rollup_folded_labels",
    rollup_metadata,
    Column("log", String(32), nullable=False),
    Column("model", String(255), nullable=False),
    Column("request_id", String(255), nullable=False),
    Column("instance_index", Integer, nullable=False),
    Column("label", Integer, nullable=False),
    PrimaryKeyConstraint("log", "request_id", "instance_index", name="pk_rollup_folded_labels"),
    # A rebuild resets one model's folded labels.
    Index("ix_rollup_folded_labels_model", "log", "model"),
)

rollup_folded_state = Table(
    "rollup_folded_state",
    rollup_metadata,
    # A (log, model) whose folded labels were set from its labels. Missing beside a rollup_state
    # row: a database from before the folded labels, whose sums must be rebuilt once.
    Column("log", String(32), nullable=False),
    Column("model", String(255), nullable=False),
    PrimaryKeyConstraint("log", "model", name="pk_rollup_folded_state"),
)

rollup_state = Table(
    "rollup_state",
    rollup_metadata,
    Column("log", String(32), nullable=False),
    Column("model", String(255), nullable=False),
    Column("refreshed_at", Float, nullable=True),
    PrimaryKeyConstraint("log", "model", name="pk_rollup_state"),
)

rollup = Table(
    "rollup",
    rollup_metadata,
    Column("log", String(32), nullable=False),
    Column("model", String(255), nullable=False),
    # '' stands for an unknown arm or version (a primary key has no NULLs).
    Column("arm", String(32), nullable=False),
    Column("version", String(64), nullable=False),
    Column("span", Integer, nullable=False),
    Column("bucket", BigInteger, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in INT_FIELDS),
    *(Column(name, Float, nullable=False) for name in FLOAT_FIELDS),
    Column("latency_histogram", Text, nullable=False),
    PrimaryKeyConstraint("log", "model", "arm", "version", "span", "bucket", name="pk_rollup"),
    # Refreshes and reads select buckets of one span across arms and versions.
    Index("ix_rollup_span_bucket", "log", "model", "span", "bucket"),
)


def epoch(moment: datetime) -> float:
    """Seconds since the Unix epoch of an aware datetime (naive ones are taken as UTC)."""
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).timestamp()


def bucket_of(moment: datetime, span: int = BUCKET_SECONDS) -> int:
    """Start (epoch seconds) of the ``span``-second bucket holding ``moment``."""
    return math.floor(epoch(moment)) // span * span


def bucket_edge(moment: datetime, *, up: bool = False) -> datetime:
    """The 10-s bucket edge at or before ``moment`` (at or after it with ``up``), aware UTC."""
    seconds = epoch(moment) / BUCKET_SECONDS
    return datetime.fromtimestamp((math.ceil(seconds) if up else math.floor(seconds)) * BUCKET_SECONDS, UTC)


def bucket_expression(column: Any, dialect: str) -> ColumnElement[Any]:
    """The 10-s bucket (epoch seconds) of a timestamp column, in SQL (must agree with ``bucket_of``)."""
    if dialect == "sqlite":
        # Stored as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'. SQLite parses fractions to the
        # millisecond, rounding: 09.9996 became 10 and its row fell into the next bucket while the
        # text comparisons of a time range kept it in this one. Only the whole seconds are parsed.
        seconds = cast(func.strftime("%s", func.substr(column, 1, 19)), BigInteger)
        return seconds // BUCKET_SECONDS * BUCKET_SECONDS
    return cast(func.floor(func.extract("epoch", column) / BUCKET_SECONDS), BigInteger) * BUCKET_SECONDS


def new_generation() -> int:
    """A fresh random generation for a mark (never 0)."""
    return secrets.randbelow(_GENERATIONS) + 1


def mark_changed(
    connection: Any, insert: Callable[[Table], Any], log: str, keys: Iterable[tuple[str, int]]
) -> None:
    """Mark ``(model, 10-s bucket)`` keys of ``log`` as changed, within the caller's transaction.

    Keys go in sorted order, so concurrent writers lock marks in the same order (no deadlocks).
    """
    generation = new_generation()
    params = [
        {"log": log, "model": model, "bucket": int(bucket), "generation": generation}
        for model, bucket in sorted(set(keys))
    ]
    if params:
        connection.execute(_mark_statement(insert), params)


def mark_labels(connection: Any, insert: Callable[[Table], Any], keys: Iterable[tuple[str, int]]) -> None:
    """Mark the labels of ``(request_id, instance_index)`` keys as changed, within the caller's
    transaction (sorted, like :func:`mark_changed`)."""
    generation = new_generation()
    now = time.time()
    params = [
        {"request_id": rid, "instance_index": int(index), "generation": generation, "marked_at": now}
        for rid, index in sorted(set(keys))
    ]
    if params:
        connection.execute(_label_mark_statement(insert), params)


@functools.lru_cache(maxsize=4)
def _label_mark_statement(insert: Callable[[Table], Any]) -> Any:
    stmt = insert(rollup_label_marks)
    m = rollup_label_marks
    return stmt.on_conflict_do_update(
        index_elements=[m.c.request_id, m.c.instance_index],
        set_={"generation": stmt.excluded.generation, "marked_at": stmt.excluded.marked_at},
    )


@functools.lru_cache(maxsize=4)
def _mark_statement(insert: Callable[[Table], Any]) -> Any:
    """The marks' upsert, built once per dialect (it runs in every write)."""
    stmt = insert(rollup_dirty)
    return stmt.on_conflict_do_update(
        index_elements=[rollup_dirty.c.log, rollup_dirty.c.model, rollup_dirty.c.bucket],
        set_={"generation": stmt.excluded.generation},
    )
