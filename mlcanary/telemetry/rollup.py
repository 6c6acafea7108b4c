"""Keeping the inference log's running sums up to date: recompute what changed, never the window.

The tables and the change marks are in :mod:`mlcanary.telemetry.rollup_tables`. :func:`refresh`
brings the sums of one model up to date; its cost is that of the labels since the last refresh (a
few primary-key lookups each), of the rows in the marked 10-second buckets (the traffic since the
last refresh, plus the other rows of their buckets) and of re-adding the few coarser buckets above
them, not that of the window:

0. fold the marked labels in, each as the change of its own instance's contribution
   (:mod:`mlcanary.telemetry.rollup_labels`), in write transactions that lock the model's
   ``rollup_state`` row; the marks of the buckets they touch get a new generation (see 3);
1. read the bucket marks ``(bucket, generation)``; group them into runs of consecutive buckets;
2. per run, one grouped ``SELECT`` over the log (outer-joined to the *folded* labels, the ones the
   sums hold) in the run's time range gives each ``(arm, version, bucket)``'s sums and latency
   histogram (:func:`~mlcanary.telemetry.rollup_sums.compute_sums`);
3. in one write transaction that first locks the model's ``rollup_state`` row (refreshes are
   serialised): delete each mark *only if its generation is unchanged* — a write that committed
   after step 1, or a concurrent refresh's step 0 that folded a label of the bucket after step 2
   read it, bumped it and keeps its bucket marked for the next refresh — replace the rows of the
   buckets still marked (bumped or not: the sums are then at least as new as step 2's reading, what
   a tick right after needs), and add the difference (new − old) to each coarser bucket above
   them. Counts and histograms stay exact; float sums collect rounding of the order of 1e-16 per
   change (a :func:`rebuild` resets it).

So the sums of every bucket are those of its rows with their folded labels, and a label written
while a bucket is read is added once, by its own mark. A model without a ``rollup_state`` row (a
new model, a database from before the running sums, or after :func:`rebuild`), or without a
``rollup_folded_state`` row (a database from before the folded labels), first has its folded
labels reset to the current ones and every bucket of its log marked, in one transaction, so the
sums are always recomputable from the log and never trusted blindly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    delete,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from mlcanary.telemetry.latency_histogram import LatencyHistogram
from mlcanary.telemetry.rollup_labels import add_label_changes, fold_label_page
from mlcanary.telemetry.rollup_sums import Key, Sums, compute_sums
from mlcanary.telemetry.rollup_tables import (
    BUCKET_SECONDS,
    FLOAT_FIELDS,
    SPANS,
    SUM_FIELDS,
    bucket_expression,
    new_generation,
    rollup,
    rollup_dirty,
    rollup_folded_labels,
    rollup_folded_state,
    rollup_label_marks,
    rollup_state,
)
from mlcanary.telemetry.store import InferenceLogStore, feedback, inference_log

__all__ = ["rebuild", "refresh"]

#: Marks folded in per write transaction (bounds memory and how long refreshes hold the lock).
_MARKS_PER_WRITE = 2_000
#: Marked buckets closer than this share one query of the log; a query spans at most an hour.
_RUN_GAP_S = 60
_RUN_LONGEST_S = 3_600
_CHUNK = 400


def _moment(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


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
    """Mark every bucket of ``model``'s log (and of its existing sums) and set its folded labels to
    the current labels of its logged instances, in one transaction that records the state row: the
    recomputation that follows then agrees with the folded labels, and labels written later carry
    marks. Marks that exist get a new generation, so a refresh that read one before this reset
    keeps it for the next refresh instead of folding in its older reading."""
    t, f, fl = table, feedback, rollup_folded_labels
    with store.engine.begin() as connection:
        _lock_state(connection, log, model)
        dialect = connection.dialect.name
        connection.execute(delete(fl).where(fl.c.log == log, fl.c.model == model))
        labelled = (
            select(literal(log), t.c.model, t.c.request_id, t.c.instance_index, f.c.label)
            .select_from(
                t.join(f, and_(f.c.request_id == t.c.request_id, f.c.instance_index == t.c.instance_index))
            )
            .where(t.c.model == model)
        )
        columns = ["log", "model", "request_id", "instance_index", "label"]
        connection.execute(fl.insert().from_select(columns, labelled))
        state = _insert(dialect)(rollup_folded_state).values(log=log, model=model)
        connection.execute(state.on_conflict_do_nothing())
        bucket = bucket_expression(t.c.received_at, dialect)
        generation = literal(new_generation())
        sources = [
            select(literal(log), literal(model), bucket, generation).where(t.c.model == model).distinct(),
            select(literal(log), literal(model), rollup.c.bucket, generation)
            .where(rollup.c.log == log, rollup.c.model == model, rollup.c.span == BUCKET_SECONDS)
            .distinct(),
        ]
        columns = ["log", "model", "bucket", "generation"]
        for source in sources:
            stmt = _insert(dialect)(rollup_dirty).from_select(columns, source)
            connection.execute(
                stmt.on_conflict_do_update(
                    index_elements=[rollup_dirty.c.log, rollup_dirty.c.model, rollup_dirty.c.bucket],
                    set_={"generation": stmt.excluded.generation},
                )
            )


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
    _add_delta(connection, log, model, delta, SPANS[1:])


def _add_delta(connection: Any, log: str, model: str, delta: dict[Key, Sums], spans: Sequence[int]) -> None:
    """Add ``delta`` (keyed by 10-s bucket) to the stored buckets of each of ``spans`` above them."""
    for span in spans:
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


def _fold_labels(store: InferenceLogStore, log: str, model: str, table: Table) -> int:
    """Fold the marked labels of ``model``'s instances into its sums, a page per write transaction
    (:func:`~mlcanary.telemetry.rollup_labels.fold_label_page`); returns how many were folded."""
    marks = rollup_label_marks
    with store.engine.connect() as connection:
        if connection.execute(select(marks.c.generation).limit(1)).first() is None:
            return 0  # nothing to fold: no lock taken
    folded, after = 0, ("", -1)
    while True:
        with store.engine.begin() as connection:
            _lock_state(connection, log, model)
            page = fold_label_page(connection, model, table, after)
            add_label_changes(connection, log, model, page.deltas)
            _bump_marks(connection, log, model, sorted({key[2] for key in page.deltas}))
        folded += page.folded
        if page.last is None:
            return folded
        after = page.last


def _bump_marks(connection: Any, log: str, model: str, buckets: list[int]) -> None:
    """Give the existing marks of ``buckets`` a new generation: a concurrent refresh that read one
    of them (and the folded labels) before this transaction keeps it for the next refresh, which
    recomputes the bucket with the labels folded now, instead of trusting its older reading."""
    d = rollup_dirty
    generation = new_generation()
    for start in range(0, len(buckets), _CHUNK):
        chunk = buckets[start : start + _CHUNK]
        connection.execute(
            update(d)
            .where(d.c.log == log, d.c.model == model, d.c.bucket.in_(chunk))
            .values(generation=generation)
        )


def refresh(store: InferenceLogStore, model: str, *, table: Table = inference_log) -> int:
    """Bring ``model``'s running sums up to date with its log (see the module docstring); returns
    how many 10-s buckets were recomputed (labels folded in per instance do not count). Raises
    SQLAlchemy's errors when the database fails, ``ValueError`` for a log other than
    ``inference_log`` (only its writes and labels are marked)."""
    if table is not inference_log:
        raise ValueError(f"running sums are kept for inference_log only, not {table.name!r}")
    log = table.name
    engine = store.engine
    with engine.connect() as connection:
        known = connection.execute(
            select(rollup_state.c.log).where(rollup_state.c.log == log, rollup_state.c.model == model)
        ).first()
        folded = rollup_folded_state
        known = (
            known
            and connection.execute(
                select(folded.c.log).where(folded.c.log == log, folded.c.model == model)
            ).first()
        )
    if not known:
        _mark_all(store, log, model, table)
    # Labels first, then the bucket marks are read: the buckets recomputed below see the labels
    # just folded, and this refresh's own bumps (see _bump_marks) cannot look like a concurrent change.
    _fold_labels(store, log, model, table)
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
                rows.update(
                    compute_sums(connection, model, since, until, by_bucket=True, table=table, folded=True)
                )
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
