"""Keeping the inference log's running sums up to date: recompute what changed, never the window.

The tables and the change marks are in :mod:`mlcanary.telemetry.rollup_tables`. :func:`refresh`
brings the sums of one model up to date; its cost is that of the rows in the marked 10-second
buckets (the traffic and labels since the last refresh, plus the other rows of their buckets) and
of re-adding the few coarser buckets above them, not that of the window:

1. read the marks ``(bucket, generation)``; group them into runs of consecutive buckets;
2. per run, one grouped ``SELECT`` over the log (outer-joined to ``feedback``) in the run's time
   range gives each ``(arm, version, bucket)``'s sums and latency histogram;
3. in one write transaction that first locks the model's ``rollup_state`` row (refreshes are
   serialised): delete each mark *only if its generation is unchanged* — a write that committed
   after step 1 bumped it and keeps its bucket marked for the next refresh — replace the rows of the
   buckets still marked (bumped or not: the sums are then at least as new as step 2's reading, what
   a tick right after needs), and add the difference (new − old) to each coarser bucket above
   them. Counts and histograms stay exact; float sums collect rounding of the order of 1e-16 per
   change (a :func:`rebuild` resets it).

A model without a ``rollup_state`` row (a new model, a database from before the running sums, or
after :func:`rebuild`) first has every bucket of its log marked, so the sums are always recomputable
from the log and never trusted blindly. Late labels need no special case: a label marks its
instance's bucket, whose label sums are recomputed from ``feedback`` like any other change.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Dialect,
    Table,
    TextClause,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite

from mlcanary.rollout.stats import LATENCY_FLOOR_MS
from mlcanary.telemetry.aggregate import stored_sums
from mlcanary.telemetry.latency_histogram import LOG_GAMMA, LatencyHistogram
from mlcanary.telemetry.rollup_tables import (
    BUCKET_SECONDS,
    FLOAT_FIELDS,
    SPANS,
    SUM_FIELDS,
    rollup,
    rollup_dirty,
    rollup_state,
)
from mlcanary.telemetry.store import InferenceLogStore, UTCDateTime, feedback, inference_log

__all__ = ["Sums", "compute_sums", "rebuild", "refresh"]

#: Marks folded in per write transaction (bounds memory and how long refreshes hold the lock).
_MARKS_PER_WRITE = 2_000
#: Marked buckets closer than this share one query of the log; a query spans at most an hour.
_RUN_GAP_S = 60
_RUN_LONGEST_S = 3_600
_CHUNK = 400

Key = tuple[str, str, int]
"""(arm, version, bucket) with '' for an unknown arm or version."""


class Sums:
    """One group's :data:`~mlcanary.telemetry.rollup_tables.SUM_FIELDS` and latency histogram."""

    __slots__ = ("histogram", "values")

    def __init__(self) -> None:
        self.values: dict[str, float] = dict.fromkeys(SUM_FIELDS, 0)
        self.histogram = LatencyHistogram()

    def add(self, values: dict[str, Any], histogram: LatencyHistogram | None = None, sign: int = 1) -> None:
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
        return not self.values["instances"] and not any(self.histogram.counts.values())


def _moment(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def bucket_expression(column: Any, dialect: str) -> ColumnElement[Any]:
    """The 10-s bucket (epoch seconds) of a timestamp column, in SQL (must agree with ``bucket_of``)."""
    if dialect == "sqlite":
        # Stored as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'. SQLite parses fractions to the
        # millisecond, rounding: 09.9996 became 10 and its row fell into the next bucket while the
        # text comparisons of a time range kept it in this one. Only the whole seconds are parsed.
        seconds = cast(func.strftime("%s", func.substr(column, 1, 19)), BigInteger)
        return seconds // BUCKET_SECONDS * BUCKET_SECONDS
    return cast(func.floor(func.extract("epoch", column) / BUCKET_SECONDS), BigInteger) * BUCKET_SECONDS


@functools.lru_cache(maxsize=64)
def _statements(
    dialect: Dialect, table: Table, by_bucket: bool, versions: tuple[tuple[str, str], ...] | None
) -> tuple[TextClause, TextClause]:
    """The two queries of :func:`compute_sums`, compiled once to SQL text with ``:model``,
    ``:since`` and ``:until`` left as parameters (rebuilding and re-keying the expression tree on
    every call cost more than running the query on a small bucket)."""
    t, f = table, feedback
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
    if name == "postgresql":
        # Each row's label by its primary key (LIMIT keeps the lookup from being flattened into a
        # join): a plain outer join let PostgreSQL hash every label of the log — a cost growing with
        # the window — to label the few thousand rows of some buckets.
        label = (
            select(f.c.label)
            .where(f.c.request_id == t.c.request_id, f.c.instance_index == t.c.instance_index)
            .limit(1)
            .lateral("labelled")
        )
        sums = stored_sums(t, label.c.label)
        joined = t.outerjoin(label, true())
    else:
        # SQLite joins by nested loops, through feedback's primary key.
        sums = stored_sums(t)
        joined = t.outerjoin(
            f, and_(f.c.request_id == t.c.request_id, f.c.instance_index == t.c.instance_index)
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
) -> dict[Key, Sums]:
    """Sums and histograms of ``model``'s rows in ``[since, until)`` straight from the log, per
    ``(arm, version, bucket)`` (bucket 0 unless ``by_bucket``); ``versions`` keeps those arms only."""
    key_versions = tuple(sorted(versions.items())) if versions is not None else None
    sums_sql, hist_sql = _statements(connection.dialect, table, by_bucket, key_versions)
    params = {"model": model, "since": since, "until": until}
    found: dict[Key, Sums] = {}
    for row in connection.execute(sums_sql, params).mappings():
        key = (row["arm"], row["version"], int(row["bucket"]))
        if versions is not None and versions.get(key[0]) != key[1]:
            continue
        found.setdefault(key, Sums()).add(dict(row))
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


def _runs(buckets: Sequence[int], *, gap: int, longest: int) -> Iterator[list[int]]:
    """Sorted buckets in runs: a new run starts after a gap over ``gap`` seconds or once a run
    would span ``longest`` seconds (so one query reads a bounded stretch of the log)."""
    run: list[int] = []
    for bucket in buckets:
        if run and (bucket - run[-1] > gap or bucket - run[0] >= longest):
            yield run
            run = []
        run.append(bucket)
    if run:
        yield run


def _insert(dialect: str) -> Any:
    return sqlite.insert if dialect == "sqlite" else postgresql.insert


def _lock_state(connection: Any, log: str, model: str) -> None:
    stmt = _insert(connection.dialect.name)(rollup_state).values(
        log=log, model=model, refreshed_at=time.time()
    )
    connection.execute(
        stmt.on_conflict_do_update(
            index_elements=[rollup_state.c.log, rollup_state.c.model],
            set_={"refreshed_at": stmt.excluded.refreshed_at},
        )
    )


def _mark_all(store: InferenceLogStore, log: str, model: str, table: Table) -> None:
    """Mark every bucket of ``model``'s log (and of its existing sums), then record the state row."""
    with store.engine.begin() as connection:
        _lock_state(connection, log, model)
        dialect = connection.dialect.name
        bucket = bucket_expression(table.c.received_at, dialect)
        sources = [
            select(literal(log), literal(model), bucket, literal(0)).where(table.c.model == model).distinct(),
            select(literal(log), literal(model), rollup.c.bucket, literal(0))
            .where(rollup.c.log == log, rollup.c.model == model, rollup.c.span == BUCKET_SECONDS)
            .distinct(),
        ]
        columns = ["log", "model", "bucket", "generation"]
        for source in sources:
            stmt = _insert(dialect)(rollup_dirty).from_select(columns, source)
            connection.execute(stmt.on_conflict_do_nothing())


def _row(log: str, model: str, span: int, key: Key, sums: Sums) -> dict[str, Any]:
    arm, version, bucket = key
    row: dict[str, Any] = {"log": log, "model": model, "arm": arm, "version": version}
    row.update(span=span, bucket=bucket, latency_histogram=sums.histogram.to_json())
    for name in SUM_FIELDS:
        row[name] = float(sums.values[name]) if name in FLOAT_FIELDS else int(sums.values[name])
    return row


def _replace(
    connection: Any, log: str, model: str, span: int, buckets: set[int], rows: dict[Key, Sums]
) -> None:
    r = rollup
    ordered = sorted(buckets)
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        connection.execute(
            delete(r).where(r.c.log == log, r.c.model == model, r.c.span == span, r.c.bucket.in_(chunk))
        )
    params = [_row(log, model, span, key, sums) for key, sums in sorted(rows.items()) if key[2] in buckets]
    if params:
        connection.execute(r.insert(), params)


def _read(connection: Any, log: str, model: str, span: int, buckets: Sequence[int]) -> dict[Key, Sums]:
    """The stored rows of ``span``-second ``buckets`` (every arm and version)."""
    r = rollup
    found: dict[Key, Sums] = {}
    for start in range(0, len(buckets), _CHUNK):
        chunk = list(buckets[start : start + _CHUNK])
        rows = connection.execute(
            select(r).where(r.c.log == log, r.c.model == model, r.c.span == span, r.c.bucket.in_(chunk))
        ).mappings()
        for row in rows:
            key = (row["arm"], row["version"], row["bucket"])
            found.setdefault(key, Sums()).add(dict(row), LatencyHistogram.from_json(row["latency_histogram"]))
    return found


def _fold_in(connection: Any, log: str, model: str, fresh: set[int], computed: dict[Key, Sums]) -> None:
    """Replace the ``fresh`` 10-s buckets with their ``computed`` sums and add the difference to
    every coarser bucket above them (reading only those ancestors, never their siblings)."""
    old = _read(connection, log, model, BUCKET_SECONDS, sorted(fresh))
    _replace(connection, log, model, BUCKET_SECONDS, fresh, computed)
    delta: dict[Key, Sums] = {}
    for sign, source in ((-1, old), (1, computed)):
        for key, sums in source.items():
            if key[2] in fresh:
                delta.setdefault(key, Sums()).add_sums(sums, sign)
    for span in SPANS[1:]:
        moved: dict[Key, Sums] = {}
        for (arm, version, bucket), sums in delta.items():
            moved.setdefault((arm, version, bucket // span * span), Sums()).add_sums(sums)
        parents = sorted({key[2] for key in moved})
        stored = _read(connection, log, model, span, parents)
        for key, sums in moved.items():
            stored.setdefault(key, Sums()).add_sums(sums)
        kept = {key: sums for key, sums in stored.items() if not sums.empty}
        _replace(connection, log, model, span, set(parents), kept)
        delta = moved


def _take_marks(connection: Any, log: str, model: str, read: dict[int, int]) -> set[int]:
    """Delete the marks still at the generation read (locking them first on PostgreSQL, so a writer
    cannot bump one in between); returns the buckets still marked when this transaction began,
    which the caller folds in. A mark bumped since stays for the next refresh — its bucket is folded
    in anyway, from this refresh's reading, so a tick never reads sums older than that reading. A
    mark that is gone was folded in by a concurrent refresh from a newer reading: left alone."""
    d = rollup_dirty
    present: set[int] = set()
    buckets = sorted(read)
    for start in range(0, len(buckets), _CHUNK):
        chunk = buckets[start : start + _CHUNK]
        scope = [d.c.log == log, d.c.model == model, d.c.bucket.in_(chunk)]
        current = connection.execute(select(d.c.bucket, d.c.generation).where(*scope).with_for_update()).all()
        same = [bucket for bucket, generation in current if read.get(bucket) == generation]
        if same:
            connection.execute(delete(d).where(d.c.log == log, d.c.model == model, d.c.bucket.in_(same)))
        present.update(bucket for bucket, _generation in current)
    return present


def refresh(store: InferenceLogStore, model: str, *, table: Table = inference_log) -> int:
    """Bring ``model``'s running sums up to date with its log (see the module docstring); returns
    how many 10-s buckets were recomputed. Raises SQLAlchemy's errors when the database fails."""
    log = table.name
    engine = store.engine
    with engine.connect() as connection:
        known = connection.execute(
            select(rollup_state.c.log).where(rollup_state.c.log == log, rollup_state.c.model == model)
        ).first()
    if known is None:
        _mark_all(store, log, model, table)
    with engine.connect() as connection:
        marks = dict(
            connection.execute(
                select(rollup_dirty.c.bucket, rollup_dirty.c.generation).where(
                    rollup_dirty.c.log == log, rollup_dirty.c.model == model
                )
            ).all()
        )
    recomputed = 0
    ordered = sorted(marks)
    for start in range(0, len(ordered), _MARKS_PER_WRITE):
        chunk = ordered[start : start + _MARKS_PER_WRITE]
        rows: dict[Key, Sums] = {}
        with engine.connect() as connection:
            for run in _runs(chunk, gap=_RUN_GAP_S, longest=_RUN_LONGEST_S):
                since, until = _moment(run[0]), _moment(run[-1] + BUCKET_SECONDS)
                rows.update(compute_sums(connection, model, since, until, by_bucket=True, table=table))
        with engine.begin() as connection:
            _lock_state(connection, log, model)
            marked = _take_marks(connection, log, model, {bucket: marks[bucket] for bucket in chunk})
            _fold_in(connection, log, model, marked, rows)
        recomputed += len(marked)
    return recomputed


def rebuild(store: InferenceLogStore, model: str | None = None, *, table: Table = inference_log) -> int:
    """Recompute the running sums of ``model`` (every model when None) from the log; returns the
    number of 10-s buckets recomputed. Safe while writers run: changes go on being marked."""
    log = table.name
    with store.engine.begin() as connection:
        models = (
            [model]
            if model is not None
            else sorted(connection.execute(select(table.c.model).distinct()).scalars().all())
        )
        for name in models:
            connection.execute(
                delete(rollup_state).where(rollup_state.c.log == log, rollup_state.c.model == name)
            )
    return sum(refresh(store, name, table=table) for name in models)
