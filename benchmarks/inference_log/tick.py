"""One monitor tick over a large window: the running sums against the full recomputation.

What the issue asks is that a tick's cost not grow as the release goes on: the same traffic, a
longer window. So every window of one run has the same traffic rate — that of the large window
over about 48 hours (``Traffic``) — and a window of ``n`` requests is the last ``n / rate`` seconds
before :data:`END` (at 10,000,000 requests: 58.8 requests/s, so 10,000 requests are the release's
first 170 seconds and 10,000,000 its first 47.2 hours; every window starts at the same point of a
10-s bucket). For each database, every window (80 % champion, 20 % candidate, 30 % labelled) is
generated in SQL in a database of its own and its running sums are built once
(:func:`~mlcanary.telemetry.rollup.rebuild`); then the windows are ticked in turn, round by round
(after one untimed tick each), so that the machine's changes of speed fall on all of them alike.
Each round writes the next 1,000 requests at the same rate through
:meth:`InferenceLogStore.write_rows` (as the collector does) plus 300 late labels
(for 300 consecutive requests logged ``label_lag`` before, the same lag in every window: generated
requests, then those of earlier ticks), and times
one tick: folding them in (:func:`~mlcanary.telemetry.rollup.refresh`, timed apart, what
``StoreMetricsSource.measure`` does first) and the measurement itself, which then reads the sums,
with the label cutoff ``label_lag`` back. PostgreSQL's statistics are updated after the bulk load
and after the build, as autovacuum would. The reference is the full recomputation over the same
window (:func:`~mlcanary.telemetry.aggregate.aggregate`, what every tick ran before), timed once, and
its sums are compared with the tick's.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.telemetry.aggregate import aggregate
from mlcanary.telemetry.incremental import incremental_aggregate
from mlcanary.telemetry.metrics import StoreMetricsSource
from mlcanary.telemetry.rollup import rebuild, refresh
from mlcanary.telemetry.rollup_tables import BUCKET_SECONDS, SUM_FIELDS
from mlcanary.telemetry.store import Feedback, InferenceLogStore, InferenceRow

WINDOW = timedelta(hours=48)
"""The large window's length, nearly: it sets the traffic rate of every window of a run, rounded so
that every window lasts whole 10-s buckets (see :meth:`Traffic.of`)."""
NEW_PER_TICK = 1_000
LATE_LABELS_PER_TICK = 300
END = datetime(2026, 3, 3, 12, 0, 0, 123_456, tzinfo=UTC)
VERSIONS = {"champion": "1", "candidate": "2"}
_LOADER_CACHE_KIB = 1_048_576


@dataclass(frozen=True)
class Traffic:
    """A window of ``n`` requests at ``rate`` requests/s ending at :data:`END`; ticks bring
    :data:`NEW_PER_TICK` more at the same rate, and labels for requests ``label_lag`` old."""

    n: int
    rate: float
    label_lag: timedelta

    @classmethod
    def of(cls, n: int, large: int, small: int) -> Traffic:
        """The window of ``n`` requests in a run whose ``large`` window spans about :data:`WINDOW`;
        the labels lag three quarters of the ``small`` window (inside every window of the run).

        The rate is rounded so that the ``small`` window lasts whole 10-s buckets, and ``n`` must be
        a multiple of ``small``: then every window does, and every window's release starts at the
        same point of a 10-s bucket (:data:`END`'s). The ragged end a tick reads from the log at the
        release's start is as long as that point leaves of its bucket (up to 10 s of requests),
        whatever the window: windows starting at different points would compare those points."""
        if n % small:
            raise ValueError(
                f"{n:,} requests is not a multiple of the small window's {small:,}: the windows "
                "would start at different points of a 10-second bucket"
            )
        buckets = max(1, round(small * WINDOW.total_seconds() / large / BUCKET_SECONDS))
        rate = small / (buckets * BUCKET_SECONDS)
        return cls(n, rate, timedelta(seconds=0.75 * small / rate))

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.n / self.rate)

    @property
    def tick(self) -> timedelta:
        return timedelta(seconds=NEW_PER_TICK / self.rate)


@dataclass(frozen=True)
class TickResult:
    """One (database, window size) cell: seconds for each phase, and whether the sums matched."""

    backend: str
    rows: int
    window_s: float
    generate_s: float
    build_s: float
    tick_s: float
    ticks: list[float]
    full_s: float
    equal: bool
    refresh_s: float = 0.0
    load: float = 0.0
    again: bool = False
    """A repeat of a window ticked before it in the run (same traffic, a database of its own): its
    ratio to that window is what the benchmark measures between two equal windows, its noise floor."""


def _generate_sql(dialect: str) -> tuple[str, str]:
    """INSERT statements for ``:n`` requests ending at ``:end`` (epoch µs), and 30 % of their labels."""
    columns = (
        "request_id, instance_index, received_at, request_received_at, response_received_at, event_time, "
        "model, arm, version, protocol, status_code, latency_ms, prediction, probability"
    )
    if dialect == "sqlite":
        # Times as SQLAlchemy stores them on SQLite: naive UTC text with microseconds.
        ts = "strftime('%Y-%m-%d %H:%M:%S', m / 1000000, 'unixepoch') || printf('.%06d', m % 1000000)"
        u = "((abs(random()) % 999999) + 1) / 1000000.0"
        source = (
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1) "
            "SELECT i, ts, u1, u2, u3 FROM (SELECT i, "
            f"{ts} AS ts, {u} AS u1, {u} AS u2, {u} AS u3 FROM "
            "(SELECT i, :end - :span + i * (:span / :n) AS m FROM seq))"
        )
        rid = "'b' || i"
        label = "abs(random()) % 2"
    else:
        ts = "to_timestamp((:end - :span + i * (:span / :n)) / 1000000.0)"
        source = (
            f"SELECT i, {ts} AS ts, 1 - random() AS u1, random() AS u2, random() AS u3 "
            "FROM generate_series(0, :n - 1) AS i"
        )
        rid = "'b' || i"
        label = "floor(random() * 2)::int"
    latency = "exp(2.3 + 0.45 * sqrt(-2 * ln(u1)) * cos(6.283185307 * u2))"
    insert_log = (
        f"INSERT INTO inference_log ({columns}) SELECT {rid}, 0, ts, ts, ts, ts, 'fraud', "
        "CASE WHEN i % 5 = 0 THEN 'candidate' ELSE 'champion' END, "
        "CASE WHEN i % 5 = 0 THEN '2' ELSE '1' END, "
        "'v1', CASE WHEN u3 < 0.01 THEN 500 ELSE 200 END, "
        f"{latency}, CASE WHEN u3 < 0.01 THEN NULL WHEN u3 >= 0.6 THEN 1 ELSE 0 END, "
        "CASE WHEN u3 < 0.01 THEN NULL ELSE u3 END "
        f"FROM ({source}) AS generated"
    )
    # Labels for requests b0, b1, b2, b10, …: read back from the log rather than generated again.
    number = "CAST(substr(request_id, 2) AS BIGINT)"
    insert_labels = (
        "INSERT INTO feedback (request_id, instance_index, label, received_at) "
        f"SELECT request_id, 0, {label}, received_at FROM inference_log WHERE {number} % 10 < 3"
    )
    return insert_log, insert_labels


def generate(store: InferenceLogStore, n: int, window: timedelta = WINDOW) -> None:
    """Bulk-insert ``n`` requests spread evenly over the ``window`` before :data:`END`, in SQL."""
    insert_log, insert_labels = _generate_sql(store.engine.dialect.name)
    params = {
        "n": n,
        "end": int(END.timestamp() * 1_000_000),
        "span": int(window.total_seconds() * 1_000_000),
    }
    with store.engine.begin() as connection:
        if store.engine.dialect.name == "sqlite":
            # The loader's connection only: a page cache that holds the indexes being filled
            # (request ids arrive out of key order), instead of SQLite's default 2 MB.
            connection.exec_driver_sql(f"PRAGMA cache_size = -{_LOADER_CACHE_KIB}")
        connection.execute(text(insert_log), params)
        connection.execute(text(insert_labels), params)
        if store.engine.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA cache_size = -2000")
    analyze(store)


def analyze(store: InferenceLogStore) -> None:
    """On PostgreSQL, update the planner's statistics after a bulk load, as autovacuum would soon
    after (a fresh table without them is planned as if empty)."""
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))


def settle(stores: Sequence[InferenceLogStore]) -> None:
    """After the bulk loads, put the databases where a log filled as its traffic came would be:
    the write-ahead log moved into the database (a checkpoint; on SQLite it also resets the log, on
    PostgreSQL none is left to spread over the ticks); everything written to disk; then every file
    of each database read once, so that its pages are in the page cache. This machine pages out
    file pages untouched for a minute (DAMON reclaim), and the bulk load wrote the window's last
    minutes — those the ticks' labels reach — minutes before the ticks; a live log wrote them that
    long before, whatever the window's length. Without this the first ticks of the large window
    pay for the bulk load."""
    for store in stores:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            if store.engine.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
            else:
                connection.exec_driver_sql("CHECKPOINT")
    os.sync()
    for store in stores:
        for path in _files(store):
            with path.open("rb") as file:
                while file.read(1 << 24):
                    pass


def _files(store: InferenceLogStore) -> list[Path]:
    """The files holding ``store``'s database (on PostgreSQL: its directory under the server's data)."""
    if store.engine.dialect.name == "sqlite":
        database = Path(store.engine.url.database or "")
        return [f for f in (database, Path(f"{database}-wal")) if f.is_file()]
    with store.engine.connect() as connection:
        data = connection.exec_driver_sql("SHOW data_directory").scalar_one()
        oid = connection.exec_driver_sql(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).scalar_one()
    return [f for f in (Path(data) / "base" / str(oid)).iterdir() if f.is_file()]


def _new_traffic(
    store: InferenceLogStore, round_index: int, traffic: Traffic, rng: random.Random
) -> datetime:
    """The next tick's traffic (through the store's write path) and late labels; returns the tick time."""
    tick = traffic.tick
    now = END + tick * (round_index + 1)
    rows = []
    for k in range(NEW_PER_TICK):
        at = now - tick + tick * (k / NEW_PER_TICK)
        arm = "candidate" if k % 5 == 0 else "champion"
        p = rng.random()
        rows.append(
            InferenceRow(
                request_id=f"t{round_index}-{k}",
                instance_index=0,
                model="fraud",
                received_at=at,
                arm=arm,
                version=VERSIONS[arm],
                protocol="v1",
                status_code=200,
                latency_ms=rng.lognormvariate(2.3, 0.45),
                prediction=int(p >= 0.6),
                probability=p,
            )
        )
    for start in range(0, len(rows), 100):
        store.write_rows(rows[start : start + 100])
    # Labels for the 300 requests logged just before now − label_lag: generated ones, or those of
    # earlier ticks once the lag reaches past the generated window.
    last = int((now - traffic.label_lag - (END - traffic.window)).total_seconds() * traffic.rate)
    late = [
        Feedback(_request_id(j, traffic.n), rng.randrange(2))
        for j in range(max(0, last - LATE_LABELS_PER_TICK), last)
    ]
    store.record_feedback_many(late, now=now)
    return now


def _request_id(j: int, n: int) -> str:
    """The ``j``-th request of a window of ``n`` generated requests followed by the ticks' traffic
    (each ``1 / rate`` after the one before, from the window's start)."""
    return f"b{j}" if j < n else f"t{(j - n) // NEW_PER_TICK}-{(j - n) % NEW_PER_TICK}"


def _release(traffic: Traffic) -> ReleaseState:
    started = END - traffic.window
    return ReleaseState(
        model="fraud",
        champion_version="1",
        candidate_version="2",
        phase=Phase.PROGRESSING,
        step_index=0,
        traffic=20,
        started_at=started,
        step_started_at=started,
    )


def _sums_equal(store: InferenceLogStore, now: datetime, traffic: Traffic, full_s: list[float]) -> bool:
    kwargs = {
        "versions": VERSIONS,
        "window_start": now - traffic.tick,
        "label_cutoff": now - traffic.label_lag,
    }
    since = END - traffic.window
    started = time.perf_counter()
    full = aggregate(store, "fraud", since, now, slow_reference="champion", max_latency_rows=50_000, **kwargs)
    full_s.append(time.perf_counter() - started)
    ours = incremental_aggregate(store, "fraud", since, now, **kwargs)
    names = [f.name for f in fields(full["champion"]) if f.name in SUM_FIELDS or f.name.startswith("window_")]
    for arm in VERSIONS:
        for name in names:
            a, b = getattr(ours[arm], name), getattr(full[arm], name)
            if abs(a - b) > 1e-9 * max(1.0, abs(b)):
                return False
    return True


WARMUP_TICKS = 1
"""Untimed ticks per window before the timed rounds (the process's first queries compile statements)."""


@dataclass
class _Window:
    """One window being ticked: its store, traffic and timings so far."""

    traffic: Traffic
    store: InferenceLogStore
    generate_s: float
    build_s: float
    rng: random.Random
    again: bool = False
    now: datetime = END
    ticks: list[float] = field(default_factory=list)
    refreshes: list[float] = field(default_factory=list)

    def tick(self, round_index: int, source: StoreMetricsSource) -> tuple[float, float]:
        """Write the round's traffic, then time folding it in and the measurement."""
        self.now = _new_traffic(self.store, round_index, self.traffic, self.rng)
        started = time.perf_counter()
        # What measure() does first, timed apart: folding in the changes since the last tick.
        refresh(self.store, "fraud")
        folded = time.perf_counter()
        source.measure(_release(self.traffic), window_start=self.now - self.traffic.tick, now=self.now)
        return time.perf_counter() - started, folded - started


def run_ticks(
    backend: str, urls: Sequence[str], traffics: Sequence[Traffic], rounds: int, progress
) -> list[TickResult]:
    """Generate and build each window on its fresh database (``urls[i]`` for ``traffics[i]``), then
    tick the windows in turn, round by round, and recompute each once. Interleaved, a change of the
    machine's speed during the run (it is shared) slows every window alike; each window's first
    :data:`WARMUP_TICKS` ticks are not timed. A traffic listed twice is ticked twice, on two
    databases: the second's result is marked ``again`` (the run's noise floor)."""
    for traffic in traffics:
        if traffic.label_lag.total_seconds() * traffic.rate > traffic.n - LATE_LABELS_PER_TICK:
            raise ValueError("the late labels must name logged requests: a lag shorter than the window")
    results: list[TickResult] = []
    with ExitStack() as stack:
        windows: list[_Window] = []
        for url, traffic in zip(urls, traffics, strict=True):
            store = stack.enter_context(InferenceLogStore(url))
            again = traffic in [w.traffic for w in windows]
            started = time.perf_counter()
            generate(store, traffic.n, traffic.window)
            generated = time.perf_counter() - started
            progress(f"{backend} n={traffic.n:,}: generated in {generated:.1f} s; building the running sums")
            started = time.perf_counter()
            rebuild(store, "fraud")
            built = time.perf_counter() - started
            analyze(store)
            windows.append(_Window(traffic, store, generated, built, random.Random(traffic.n), again=again))
        settle([w.store for w in windows])
        sources = [StoreMetricsSource(w.store, label_delay=w.traffic.label_lag) for w in windows]
        for r in range(WARMUP_TICKS + rounds):
            for window, source in zip(windows, sources, strict=True):
                tick_s, refresh_s = window.tick(r, source)
                if r >= WARMUP_TICKS:
                    window.ticks.append(tick_s)
                    window.refreshes.append(refresh_s)
        load = os.getloadavg()[0]
        for w in windows:
            progress(
                f"{backend} n={w.traffic.n:,}: ticks {', '.join(f'{t * 1000:.0f}' for t in w.ticks)} ms; "
                "full recomputation"
            )
            full_s: list[float] = []
            equal = _sums_equal(w.store, w.now, w.traffic, full_s)
            results.append(
                TickResult(
                    backend,
                    w.traffic.n,
                    w.traffic.window.total_seconds(),
                    w.generate_s,
                    w.build_s,
                    statistics.median(w.ticks),
                    w.ticks,
                    full_s[0],
                    equal,
                    refresh_s=statistics.median(w.refreshes),
                    load=load,
                    again=w.again,
                )
            )
    for url in urls:
        if url.startswith("postgresql"):
            _drop_all(url)
    return results


def run_tick(
    backend: str, url: str, n: int, rounds: int, progress, traffic: Traffic | None = None
) -> TickResult:
    """:func:`run_ticks` for one window of ``n`` requests; ``traffic`` (default: ``n`` requests over
    :data:`WINDOW`) sets the rate and the labels' lag."""
    traffic = traffic or Traffic.of(n, n, n)
    if traffic.n != n:
        raise ValueError("traffic describes another window")
    return run_ticks(backend, [url], [traffic], rounds, progress)[0]


def _drop_all(url: str) -> None:
    from sqlalchemy import create_engine

    from mlcanary.telemetry.rollup_tables import rollup_metadata
    from mlcanary.telemetry.store import metadata

    engine = create_engine(url)
    try:
        metadata.drop_all(engine)
        rollup_metadata.drop_all(engine)
    finally:
        engine.dispose()
