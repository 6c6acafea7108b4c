"""The inference log: one row per predicted instance, plus ground-truth feedback, in SQL.

SQLite (WAL) under the state directory by default, PostgreSQL by URL; the code is dialect-neutral
apart from the upsert statement, which both dialects spell ``INSERT ... ON CONFLICT``.

Pairing happens in the database, not in memory. A request half and a response half of the same
inference (same ``ce-id``) are written as *partial rows* with the same primary key
``(request_id, instance_index)``; each write merges its columns into whatever is already there. So
either half may arrive first, a half is durable the moment its write commits, a collector restart
loses nothing, and re-delivering a half is a no-op. A row is *paired* once both halves have been seen
(``request_received_at`` and ``response_received_at`` both set); a request whose response never came
stays a row with ``status_code`` NULL and no prediction.

Every write also marks what it changed for the running sums (:mod:`mlcanary.telemetry.rollup`), in
its own transaction: a log write marks the 10-second buckets its rows leave and enter, and the
stored labels of instances it logs for the first time (a label may come before its request); a
label marks its instance (``rollup_label_marks``), never its bucket, so folding it in costs that
one instance. See :mod:`mlcanary.telemetry.rollup_tables`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from mlcanary.telemetry.log_records import Feedback, InferenceRow, PendingCounts, WriteResult
from mlcanary.telemetry.log_tables import LOG_COLUMNS, feedback, inference_log, metadata, shadow_log
from mlcanary.telemetry.rollup_tables import bucket_of, mark_changed, mark_labels, rollup_metadata

if TYPE_CHECKING:
    import pandas as pd

# Large IN (...) lists are split so SQLite's bound-parameter limit is never reached.
_CHUNK = 500


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class InferenceLogStore:
    """The inference-log database behind one SQLAlchemy URL (SQLite or PostgreSQL).

    Construction connects, creates the tables and indexes if missing and, for a SQLite file,
    creates its parent directory. Every SQLite connection runs in WAL mode with
    ``synchronous=<sqlite_synchronous>`` and a ``busy_timeout``: in WAL mode, ``NORMAL`` keeps every
    committed write across a crash of the process (what the collector's acknowledgements promise);
    only a power loss or OS crash may drop the last commits, which ``FULL`` prevents at some
    throughput cost. ``busy_timeout_ms`` bounds how long a statement waits for a lock another
    connection holds (SQLite's ``busy_timeout``, PostgreSQL's ``lock_timeout``) before it fails with
    an ``OperationalError``, so a locked database is an error the caller can report, never a hang.
    PostgreSQL connections are checked before each use (``pool_pre_ping``): after a server restart
    the pool reconnects by itself instead of handing out dead connections. Any failure to reach
    or write the database raises SQLAlchemy's ``SQLAlchemyError`` (``OperationalError`` for an
    unreachable, locked or full database). The store is safe to share between threads; every
    method runs in its own transaction. Time arguments are aware datetimes (naive ones are taken
    as UTC) and windows are half-open: ``since <= received_at < until``.
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = 10_000,
        sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        echo: bool = False,
    ) -> None:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {backend!r} in {url!r}: use sqlite:/// or postgresql://")
        self._dialect = backend
        self._statements: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if backend == "sqlite":
            database = parsed.database
            if database in (None, "", ":memory:"):
                # One shared connection, or every pooled connection would see its own empty database.
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        self._engine = create_engine(url, **kwargs)
        if backend == "sqlite":
            self._install_sqlite_pragmas(busy_timeout_ms, sqlite_synchronous)
        else:
            self._install_postgresql_lock_timeout(busy_timeout_ms)
        metadata.create_all(self._engine)
        rollup_metadata.create_all(self._engine)

    def _install_postgresql_lock_timeout(self, busy_timeout_ms: int) -> None:
        @event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"SET lock_timeout = {int(busy_timeout_ms)}")
            finally:
                cursor.close()
            # SET is transactional in PostgreSQL: commit it, or the pool's reset would undo it.
            dbapi_connection.commit()

    def _install_sqlite_pragmas(self, busy_timeout_ms: int, synchronous: str) -> None:
        @event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute(f"PRAGMA synchronous = {synchronous}")
            finally:
                cursor.close()

    @property
    def engine(self) -> Engine:
        """The underlying SQLAlchemy engine (for diagnostics and tests)."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> InferenceLogStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """Run a trivial query; raises SQLAlchemy's error when the database is unreachable."""
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # ---- writing -------------------------------------------------------------------------------

    def _insert(self) -> Any:
        return sqlite.insert if self._dialect == "sqlite" else postgresql.insert

    def write_rows(self, rows: Iterable[InferenceRow]) -> WriteResult:
        """Merge ``rows`` into the log in one transaction and report how many rows are now paired.

        Idempotent on ``(request_id, instance_index)``: writing the same rows again changes nothing
        (see :class:`InferenceRow` for the merge rules). After the merge, rows of a touched request
        that still lack a response take the response-level columns (status, latency, response
        time, and arm/version when unknown) from index 0 — this completes batch requests whose
        response carried no per-instance predictions, such as an error.
        """
        rows = list(rows)
        written = paired = 0
        live = [row for row in rows if not row.shadow]
        with self._engine.begin() as connection:
            # The running sums (mlcanary.telemetry.rollup) follow live rows: the buckets a row leaves
            # (an earlier half moves it) and enters are marked in this same transaction.
            changed, logged = self._buckets_of(connection, sorted({row.request_id for row in live}))
            changed |= {(row.model, bucket_of(row.received_at)) for row in live}
            for table, shadow in ((inference_log, False), (shadow_log, True)):
                result = self._merge(connection, table, [row for row in rows if row.shadow == shadow])
                written, paired = written + result.rows, paired + result.paired
            new = {(row.request_id, row.instance_index) for row in live} - logged
            if new:
                # A label stored before its instance was logged is marked again now that it can be
                # folded in (label marks before bucket marks: the order a refresh locks them in).
                mark_labels(connection, self._insert(), self._labels_of(connection, new))
            mark_changed(connection, self._insert(), inference_log.name, changed)
        return WriteResult(rows=written, paired=paired)

    def _buckets_of(
        self, connection: Any, request_ids: Sequence[str]
    ) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
        """``(model, 10-s bucket)`` of the live rows already logged under ``request_ids``, and
        their ``(request_id, instance_index)`` keys."""
        t = inference_log
        stmt = self._statement(
            "buckets_of",
            lambda: select(t.c.model, t.c.received_at, t.c.request_id, t.c.instance_index).where(
                t.c.request_id.in_(bindparam("ids", expanding=True))
            ),
        )
        found: set[tuple[str, int]] = set()
        keys: set[tuple[str, int]] = set()
        for chunk in _chunks(request_ids):
            for model, received_at, request_id, index in connection.execute(stmt, {"ids": list(chunk)}):
                found.add((model, bucket_of(received_at)))
                keys.add((request_id, index))
        return found, keys

    def _labels_of(self, connection: Any, keys: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Those of ``keys`` that have a stored label."""
        f = feedback
        stmt = self._statement(
            "labels_of",
            lambda: select(f.c.request_id, f.c.instance_index).where(
                f.c.request_id.in_(bindparam("ids", expanding=True))
            ),
        )
        found: set[tuple[str, int]] = set()
        for chunk in _chunks(sorted({rid for rid, _ in keys})):
            found |= {(rid, index) for rid, index in connection.execute(stmt, {"ids": list(chunk)})}
        return found & keys

    def _statement(self, key: str, build: Callable[[], Any]) -> Any:
        """A statement built once per store: re-building and re-keying SQLAlchemy expressions cost
        more than executing them on one event (the collector's hot path)."""
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = build()
        return stmt

    def _merge(self, connection: Any, t: Table, rows: list[InferenceRow]) -> WriteResult:
        """Merge ``rows`` into the log table ``t`` within the caller's transaction."""
        # Rows sharing a key (both halves in one call) go in successive statements, so each merges
        # into the previous one instead of a single INSERT naming the same key twice.
        layers: list[dict[tuple[str, int], InferenceRow]] = []
        for row in rows:
            key = (row.request_id, row.instance_index)
            layer = next((layer for layer in layers if key not in layer), None)
            if layer is None:
                layer = {}
                layers.append(layer)
            layer[key] = row
        if not layers:
            return WriteResult(rows=0, paired=0)
        # A fixed key order makes concurrent writers lock rows in the same order (no deadlocks on
        # PostgreSQL), and index 0 first serialises the two halves of one request.
        batches = [[layer[key].to_params() for key in sorted(layer)] for layer in layers]
        request_ids = sorted({key[0] for layer in layers for key in layer})
        upsert = self._statement(f"upsert:{t.name}", lambda: self._upsert(t))
        for params in batches:
            connection.execute(upsert, params)
        paired = 0
        propagate = self._statement(
            f"propagate:{t.name}", lambda: self._propagate_response(t, bindparam("ids", expanding=True))
        )
        count = self._statement(
            f"paired:{t.name}",
            lambda: (
                select(func.count())
                .select_from(t)
                .where(
                    t.c.request_id.in_(bindparam("ids", expanding=True)),
                    t.c.request_received_at.is_not(None),
                    t.c.response_received_at.is_not(None),
                )
            ),
        )
        for chunk in _chunks(request_ids):
            connection.execute(propagate, {"ids": list(chunk)})
            paired += connection.execute(count, {"ids": list(chunk)}).scalar_one()
        return WriteResult(rows=sum(len(params) for params in batches), paired=int(paired))

    def _upsert(self, t: Table) -> Any:
        """INSERT ... ON CONFLICT merging a partial row into the stored one (see InferenceRow)."""
        stmt = self._insert()(t)
        new = stmt.excluded

        def newer(name: str) -> ColumnElement[Any]:
            return func.coalesce(new[name], t.c[name])

        def first(name: str) -> ColumnElement[Any]:
            return func.coalesce(t.c[name], new[name])

        upsert = stmt.on_conflict_do_update(
            index_elements=[t.c.request_id, t.c.instance_index],
            set_={
                "received_at": case(
                    (new.received_at < t.c.received_at, new.received_at), else_=t.c.received_at
                ),
                "request_received_at": first("request_received_at"),
                "response_received_at": first("response_received_at"),
                # The request's ce-time is the moment of inference; a response's is only a fallback.
                "event_time": case(
                    (new.request_received_at.is_not(None), newer("event_time")), else_=first("event_time")
                ),
                "model": first("model"),
                "arm": newer("arm"),
                "version": newer("version"),
                "source": first("source"),
                "protocol": first("protocol"),
                "status_code": newer("status_code"),
                "latency_ms": newer("latency_ms"),
                "features": newer("features"),
                "prediction": newer("prediction"),
                "probability": newer("probability"),
            },
        )
        return upsert

    @staticmethod
    def _propagate_response(t: Table, request_ids: Any) -> Any:
        head = t.alias("head")

        def from_head(name: str) -> Any:
            return (
                select(head.c[name])
                .where(head.c.request_id == t.c.request_id, head.c.instance_index == 0)
                .scalar_subquery()
            )

        has_response_head = (
            select(head.c.request_id)
            .where(
                head.c.request_id == t.c.request_id,
                head.c.instance_index == 0,
                head.c.response_received_at.is_not(None),
            )
            .exists()
        )
        return (
            update(t)
            .where(
                t.c.request_id.in_(request_ids),
                t.c.instance_index > 0,
                t.c.response_received_at.is_(None),
                has_response_head,
            )
            .values(
                response_received_at=from_head("response_received_at"),
                status_code=from_head("status_code"),
                latency_ms=from_head("latency_ms"),
                arm=func.coalesce(t.c.arm, from_head("arm")),
                version=func.coalesce(t.c.version, from_head("version")),
            )
        )

    def record_feedback(self, request_id: str, label: int, instance_index: int = 0) -> None:
        """Store the ground-truth ``label`` of one instance; the latest label wins."""
        self.record_feedback_many([Feedback(request_id, label, instance_index)])

    def record_feedback_many(self, items: Iterable[Feedback], *, now: datetime | None = None) -> int:
        """Upsert labels in one transaction; returns how many distinct keys were written.

        Idempotent: re-sending a label that is already stored changes nothing, not even its
        ``received_at``; a different label replaces it and takes the new arrival time. Feedback may
        name a request the log has not seen (yet); it is kept and joins once the request arrives.
        """
        moment = now or datetime.now(UTC)
        by_key = {(item.request_id, item.instance_index): item for item in items}
        if not by_key:
            return 0
        params = [
            {"request_id": rid, "instance_index": idx, "label": int(item.label), "received_at": moment}
            for (rid, idx), item in sorted(by_key.items())
        ]
        t = feedback
        stmt = self._insert()(t)
        upsert = stmt.on_conflict_do_update(
            index_elements=[t.c.request_id, t.c.instance_index],
            set_={
                "label": stmt.excluded.label,
                "received_at": case(
                    (t.c.label == stmt.excluded.label, t.c.received_at), else_=stmt.excluded.received_at
                ),
            },
        )
        with self._engine.begin() as connection:
            connection.execute(upsert, params)
            # The running sums fold a label in as the change of its own instance (late ones too).
            mark_labels(connection, self._insert(), by_key)
        return len(params)

    # ---- reading -------------------------------------------------------------------------------

    @staticmethod
    def _window(
        model: str, arm: str | None, since: datetime | None, until: datetime | None
    ) -> list[ColumnElement[bool]]:
        t = inference_log
        clauses: list[ColumnElement[bool]] = [t.c.model == model]
        if arm is not None:
            clauses.append(t.c.arm == arm)
        if since is not None:
            clauses.append(t.c.received_at >= since)
        if until is not None:
            clauses.append(t.c.received_at < until)
        return clauses

    def count(
        self,
        model: str,
        arm: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Number of instance rows of ``model`` (one arm, or all when ``arm`` is ``None``) in the window.

        Counts rows, not HTTP requests: a batch of three instances counts three, as in
        :meth:`fetch`. Waiting and unpaired halves count too.
        """
        stmt = select(func.count()).select_from(inference_log).where(*self._window(model, arm, since, until))
        with self._engine.connect() as connection:
            return int(connection.execute(stmt).scalar_one())

    def fetch(
        self,
        model: str,
        arm: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Rows of ``model`` in the window as a DataFrame, oldest first.

        Columns are :data:`LOG_COLUMNS` (``label`` joined from feedback, missing when none) followed
        by one column per feature. Object features expand by name; list features (names unknown)
        expand to columns ``"0"``, ``"1"``, …; a feature whose name clashes with a log column is
        prefixed ``feature_``. Integer columns that may be missing use pandas' nullable ``Int64``;
        times are UTC. With ``limit``, the most recent ``limit`` rows are returned.
        """
        # pandas and numpy load lazily: the collector writes rows and never pays for them.
        import pandas as pd

        t, f = inference_log, feedback
        stmt = (
            select(
                *(t.c[name] for name in LOG_COLUMNS if name != "label"),
                f.c.label,
                t.c.features,
            )
            .select_from(
                t.outerjoin(
                    f, and_(f.c.request_id == t.c.request_id, f.c.instance_index == t.c.instance_index)
                )
            )
            .where(*self._window(model, arm, since, until))
            .order_by(t.c.received_at.desc(), t.c.request_id.desc(), t.c.instance_index.desc())
        )
        if limit is not None:
            stmt = stmt.limit(max(0, int(limit)))
        with self._engine.connect() as connection:
            records = list(reversed(connection.execute(stmt).all()))
        frame = pd.DataFrame([tuple(record)[:-1] for record in records], columns=list(LOG_COLUMNS))
        for name in ("instance_index", "status_code", "prediction", "label"):
            frame[name] = frame[name].astype("Int64")
        for name in ("latency_ms", "probability"):
            frame[name] = frame[name].astype("float64")
        for name in ("received_at", "event_time"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        features = _expand_features([record[-1] for record in records])
        if features.columns.size:
            features.columns = [
                f"feature_{name}" if name in LOG_COLUMNS else name for name in features.columns
            ]
            frame = pd.concat([frame, features], axis=1)
        return frame

    def pending_counts(self, cutoff: datetime, model: str | None = None) -> PendingCounts:
        """Requests still missing a half, split at ``cutoff`` (see :class:`PendingCounts`)."""
        t = inference_log
        scope = [t.c.instance_index == 0]
        if model is not None:
            scope.append(t.c.model == model)

        def split(missing: Column[Any], present: Column[Any]) -> Any:
            recent = func.coalesce(func.sum(case((t.c.received_at >= cutoff, 1), else_=0)), 0)
            return select(recent, func.count()).where(missing.is_(None), present.is_not(None), *scope)

        with self._engine.connect() as connection:
            waiting_req, all_req = connection.execute(
                split(t.c.response_received_at, t.c.request_received_at)
            ).one()
            waiting_resp, all_resp = connection.execute(
                split(t.c.request_received_at, t.c.response_received_at)
            ).one()
        return PendingCounts(
            pending_requests=int(waiting_req),
            pending_responses=int(waiting_resp),
            unpaired_requests=int(all_req) - int(waiting_req),
            unpaired_responses=int(all_resp) - int(waiting_resp),
        )

    def journal_mode(self) -> str | None:
        """SQLite's journal mode (``"wal"`` when set up as intended); ``None`` on other databases."""
        if self._dialect != "sqlite":
            return None
        with self._engine.connect() as connection:
            return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()).lower()


def _expand_features(values: Sequence[Any]) -> pd.DataFrame:
    import pandas as pd

    expanded: list[dict[str, Any]] = []
    for value in values:
        if isinstance(value, dict):
            expanded.append({str(key): item for key, item in value.items()})
        elif isinstance(value, list):
            expanded.append({str(position): item for position, item in enumerate(value)})
        else:
            expanded.append({})
    if not expanded:
        return pd.DataFrame()
    return pd.DataFrame.from_records(expanded, index=range(len(expanded)))


__all__ = [
    "LOG_COLUMNS",
    "Feedback",
    "InferenceLogStore",
    "InferenceRow",
    "PendingCounts",
    "WriteResult",
    "feedback",
    "inference_log",
    "metadata",
    "shadow_log",
]
