"""Folding labels into the running sums one instance at a time: a late label costs a few
primary-key lookups, whatever else its 10-second bucket holds.

A label is marked per instance (``rollup_label_marks``, written in the label's transaction, see
:mod:`mlcanary.telemetry.rollup_tables`). The sums of a bucket hold, for each of its instances, the
contribution of its *folded* label (``rollup_folded_labels``), not of whatever ``feedback`` says
now. :func:`fold_label_page` reads a page of marks in **one** statement — each mark's log row,
current label and folded label, by primary key — and returns, per ``(arm, version, bucket)``, the
change of the label sums: the instance's sums with the new label minus those with the folded one,
both from :func:`~mlcanary.telemetry.aggregate.stored_sums` (the arithmetic of a recomputation).
In the caller's transaction it records the label read as folded and deletes each mark whose
generation is still the one read (a label re-sent meanwhile keeps its mark: the next refresh folds
it from the label folded now). One statement, so on PostgreSQL the label, the mark's generation and
the folded label are one snapshot.

A label stored before its instance is logged finds no log row. Its mark is kept for
:data:`ORPHAN_GRACE_S`, then deleted: every refresh probes the kept ones (a primary-key lookup
each), so that cost is bounded by the labels of unknown requests of the last hour, not by how
many ever came. The write that logs the instance marks its stored label again
(:meth:`~mlcanary.telemetry.store.InferenceLogStore.write_rows`), so a label is never lost for
arriving early; the grace covers the one case that re-marking misses on PostgreSQL: a label that
commits while the write logging its request is between that lookup and its commit (so the write
did not see the label, and a refresh in between would not see the row).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    true,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from mlcanary.telemetry.aggregate import stored_sums
from mlcanary.telemetry.latency_histogram import LatencyHistogram
from mlcanary.telemetry.rollup_tables import (
    LABEL_FIELDS,
    SPANS,
    SUM_FIELDS,
    bucket_expression,
    rollup,
    rollup_folded_labels,
    rollup_label_marks,
)
from mlcanary.telemetry.store import feedback

__all__ = ["ORPHAN_GRACE_S", "LabelPage", "add_label_changes", "fold_label_page"]

#: How long the mark of a label whose instance was never logged is kept (seconds of the writer's clock).
ORPHAN_GRACE_S = 3_600.0
#: Label marks folded per write transaction (bounds memory and how long a refresh holds the lock).
LABELS_PER_WRITE = 2_000

Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class LabelPage:
    """One page of label marks folded in: ``deltas`` maps ``(arm, version, 10-s bucket)`` to the
    change of each of :data:`~mlcanary.telemetry.rollup_tables.LABEL_FIELDS`; ``last`` is the last
    mark key read (``None`` after the last page); ``folded`` counts the labels folded in."""

    deltas: dict[Key, dict[str, float]]
    last: tuple[str, int] | None
    folded: int


@functools.lru_cache(maxsize=8)
def _page_statement(dialect: str, table: Table, size: int) -> Select[Any]:
    """The marks after ``(:after_id, :after_index)`` with, for each, its log row's model, arm,
    version and bucket (NULL without a row), its current label and its label sums with the current
    and with the folded label."""
    m, f, fl, t = rollup_label_marks, feedback, rollup_folded_labels, table
    after = tuple_(m.c.request_id, m.c.instance_index) > tuple_(
        bindparam("after_id"), bindparam("after_index")
    )
    page = (
        select(m.c.request_id, m.c.instance_index, m.c.generation, m.c.marked_at)
        .where(after)
        .order_by(m.c.request_id, m.c.instance_index)
        .limit(size)
        .subquery("marked")
    )

    def same(other: Any) -> Any:
        return and_(other.c.request_id == page.c.request_id, other.c.instance_index == page.c.instance_index)

    in_log = fl.c.log == t.name
    if dialect == "postgresql":
        # Each lookup by primary key (LIMIT keeps it from being flattened into a join that might
        # hash a whole table): the cost is that of the marks, never of the log.
        logged: Any = (
            select(*(c for c in t.c if c.name != "features")).where(same(t)).limit(1).lateral("logged")
        )
        current: Any = select(f.c.label).where(same(f)).limit(1).lateral("current")
        folded: Any = select(fl.c.label).where(in_log, same(fl)).limit(1).lateral("folded")
        joined = page.outerjoin(logged, true()).outerjoin(current, true()).outerjoin(folded, true())
    else:
        # SQLite loops over the page's marks and probes each table's primary key.
        logged, current, folded = t, f, fl
        joined = page.outerjoin(t, same(t)).outerjoin(f, same(f)).outerjoin(fl, and_(in_log, same(fl)))
    new = stored_sums(logged, current.c.label)
    old = stored_sums(logged, folded.c.label)
    row = [
        logged.c.model,
        func.coalesce(logged.c.arm, "").label("arm"),
        func.coalesce(logged.c.version, "").label("version"),
        bucket_expression(logged.c.received_at, dialect).label("bucket"),
        current.c.label,
    ]
    keys = [page.c.request_id, page.c.instance_index, page.c.generation, page.c.marked_at]
    return (
        select(
            *keys,
            *row,
            *((new[name] - old[name]).label(name) for name in LABEL_FIELDS),
        )
        .select_from(joined)
        # One row per mark: the sums are aggregates, over the mark's one log row.
        .group_by(
            *keys, logged.c.model, logged.c.arm, logged.c.version, logged.c.received_at, current.c.label
        )
        .order_by(page.c.request_id, page.c.instance_index)
    )


def _insert(dialect: str) -> Any:
    return sqlite.insert if dialect == "sqlite" else postgresql.insert


def fold_label_page(
    connection: Any, model: str, table: Table, after: tuple[str, int], *, now: float | None = None
) -> LabelPage:
    """Fold in the label marks after the key ``after`` that belong to ``model``'s instances in
    ``table``, within the caller's write transaction (which must hold the model's refresh lock);
    see the module docstring. Marks of other models' instances are left for their refresh."""
    dialect, size = connection.dialect.name, LABELS_PER_WRITE
    rows = connection.execute(
        _page_statement(dialect, table, size), {"after_id": after[0], "after_index": after[1]}
    ).mappings()
    deltas: dict[Key, dict[str, float]] = {}
    taken: list[dict[str, Any]] = []
    folded: list[dict[str, Any]] = []
    unlabelled: list[dict[str, Any]] = []
    expired = (time.time() if now is None else now) - ORPHAN_GRACE_S
    count, last = 0, None
    for row in rows:
        count += 1
        rid, index = last = (row["request_id"], row["instance_index"])
        mark = {"rid": rid, "index": index, "gen": row["generation"]}
        if row["model"] is None:
            if row["marked_at"] < expired:
                taken.append(mark)
            continue
        if row["model"] != model:
            continue
        taken.append(mark)
        if row["label"] is None:
            unlabelled.append({"rid": rid, "index": index})
        else:
            folded.append(
                {
                    "log": table.name,
                    "model": model,
                    "request_id": rid,
                    "instance_index": index,
                    "label": int(row["label"]),
                }
            )
        change = deltas.setdefault(
            (row["arm"], row["version"], int(row["bucket"])), dict.fromkeys(LABEL_FIELDS, 0)
        )
        for name in LABEL_FIELDS:
            change[name] += row[name]
    _record(connection, table.name, folded, unlabelled, taken)
    return LabelPage(
        deltas=deltas, last=last if count >= size else None, folded=len(folded) + len(unlabelled)
    )


def _record(
    connection: Any,
    log: str,
    folded: list[dict[str, Any]],
    unlabelled: list[dict[str, Any]],
    taken: list[dict[str, Any]],
) -> None:
    """Store the labels read as folded and delete the marks still at the generation read."""
    dialect = connection.dialect.name
    if folded:
        connection.exec_driver_sql(_upsert_folded(dialect), folded)
    if unlabelled:
        connection.exec_driver_sql(_forget_folded(dialect), [{**key, "log": log} for key in unlabelled])
    if taken:
        connection.exec_driver_sql(_take_marks(dialect), taken)


def _compiled(dialect: str, statement: Any) -> str:
    """``statement`` as the driver's SQL with named parameters, run through ``exec_driver_sql``:
    SQLAlchemy compiles an ``INSERT … ON CONFLICT`` anew on every execution and processes every
    parameter of every row in Python, which cost more than the statements (hundreds of rows each
    refresh). Values passed must be plain ``str`` / ``int`` / ``float``."""
    if dialect == "sqlite":
        named: Any = sqlite.dialect(paramstyle="named")
    else:
        named = postgresql.dialect(paramstyle="pyformat")
    return str(statement.compile(dialect=named))


@functools.lru_cache(maxsize=4)
def _upsert_folded(dialect: str) -> str:
    fl = rollup_folded_labels
    stmt = _insert(dialect)(fl)
    return _compiled(
        dialect,
        stmt.on_conflict_do_update(
            index_elements=[fl.c.log, fl.c.request_id, fl.c.instance_index],
            set_={"label": stmt.excluded.label, "model": stmt.excluded.model},
        ),
    )


@functools.lru_cache(maxsize=4)
def _forget_folded(dialect: str) -> str:
    fl = rollup_folded_labels
    return _compiled(
        dialect,
        delete(fl).where(
            fl.c.log == bindparam("log"),
            fl.c.request_id == bindparam("rid"),
            fl.c.instance_index == bindparam("index"),
        ),
    )


@functools.lru_cache(maxsize=4)
def _take_marks(dialect: str) -> str:
    m = rollup_label_marks
    return _compiled(
        dialect,
        delete(m).where(
            m.c.request_id == bindparam("rid"),
            m.c.instance_index == bindparam("index"),
            m.c.generation == bindparam("gen"),
        ),
    )


@functools.lru_cache(maxsize=4)
def _add_statement(dialect: str) -> str:
    """Add the label fields of a row to the stored row with its key, or store it."""
    r = rollup
    stmt = _insert(dialect)(r)
    return _compiled(
        dialect,
        stmt.on_conflict_do_update(
            index_elements=[r.c.log, r.c.model, r.c.arm, r.c.version, r.c.span, r.c.bucket],
            set_={name: r.c[name] + stmt.excluded[name] for name in LABEL_FIELDS},
        ),
    )


def add_label_changes(connection: Any, log: str, model: str, deltas: dict[Key, dict[str, float]]) -> None:
    """Add the label changes of :attr:`LabelPage.deltas` to their 10-s buckets and every coarser
    bucket above them, in place (``tp = tp + change``): a label changes no count but its own, no
    histogram, so no stored row is read. A bucket without a row gets one holding only the change
    (it is marked: its instance's row was logged after the last recomputation, which comes next)."""
    empty = LatencyHistogram().to_json()
    zeros = dict.fromkeys(SUM_FIELDS, 0)
    params: list[dict[str, Any]] = []
    for span in SPANS:
        moved: dict[Key, dict[str, float]] = {}
        for (arm, version, bucket), change in deltas.items():
            total = moved.setdefault((arm, version, bucket // span * span), dict.fromkeys(LABEL_FIELDS, 0))
            for name in LABEL_FIELDS:
                total[name] += change[name]
        common = {"log": log, "model": model, "span": span, "latency_histogram": empty}
        for (arm, version, bucket), change in sorted(moved.items()):
            params.append({**zeros, **change, **common, "arm": arm, "version": version, "bucket": bucket})
    if params:
        connection.exec_driver_sql(_add_statement(connection.dialect.name), params)
