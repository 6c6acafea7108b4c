"""The inference-log database unavailable or slow: SQLite locked or full, PostgreSQL stopped mid-run.

In each case events flow the way the model servers send them (the real :class:`PayloadLogger`, at
a steady rate) into the real collector while the fault is injected into the real database:

* the collector answers 503 (``Retry-After``) while it cannot write, and commits nothing of such an
  event; the payload logger retries, so once the database is back every event is stored, each
  request paired with its response, and the collector recovered without a restart;
* the judge (:class:`StoreMetricsSource` + ``decide``) reports the log unreadable — "no data", never
  zero requests — and does not promote; once the log is back it measures the real counts again.

How each fault is made: SQLite *locked* by a second connection holding ``BEGIN EXCLUSIVE`` for longer
than the collector's busy timeout; SQLite *full* by ``PRAGMA max_page_count`` set to the current
size on every connection the collector's store checks out (writes that need a new page fail with
SQLITE_FULL, "database or disk is full", exactly as on a full disk; raising it frees the "disk");
PostgreSQL *stopped* with ``pg_ctl stop -m immediate`` (a crash: no clean shutdown) and started again
on the same data.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_thread import collector_in_thread
from pg_server import embedded_postgres
from sqlalchemy import event, func, select

from mlcanary.rollout.decide import decide
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.serving.local.payload_logger import PayloadLogger
from mlcanary.telemetry.events import CE_TYPE_REQUEST, CE_TYPE_RESPONSE, InferenceEvent, local_source
from mlcanary.telemetry.metrics import LOG_METRICS, StoreMetricsSource
from mlcanary.telemetry.store import InferenceLogStore, inference_log
from mlcanary.testing.collector_process import collector_process
from mlcanary.testing.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "fraud"
PAIRS_PER_S = 25.0
POLICY = RolloutPolicy(min_samples_per_arm=10)


def _event(n: int, *, response: bool, instances: int = 1) -> InferenceEvent:
    arm, version = ("candidate", "2") if n % 4 == 0 else ("champion", "1")
    body = (
        b'{"predictions": [%d]}' % (n % 2)
        if response
        else b'{"instances": [%s]}' % b", ".join([b'{"amount": %d.5}' % n] * instances)
    )
    return InferenceEvent(
        ce_id=f"req-{n:05d}",
        ce_type=CE_TYPE_RESPONSE if response else CE_TYPE_REQUEST,
        source=local_source(MODEL, arm, version),
        time=datetime.now(UTC),
        model=MODEL,
        arm=arm,
        version=version,
        body=body,
        latency_ms=5.0 if response else None,
        status=200 if response else None,
    )


class Traffic:
    """Request/response pairs submitted to a payload logger at a steady rate from a thread."""

    def __init__(self, sender: PayloadLogger) -> None:
        self.sender = sender
        self.pairs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0 / PAIRS_PER_S):
            for response in (False, True):
                assert self.sender.submit(_event(self.pairs, response=response))
            self.pairs += 1

    def wait_sent(self, events: int, deadline_s: float = 30.0) -> None:
        deadline = time.monotonic() + deadline_s
        while self.sender.stats()["sent"] < events:
            assert time.monotonic() < deadline, f"fewer than {events} events sent: {self.sender.stats()}"
            time.sleep(0.05)

    def finish(self) -> dict[str, int]:
        """Stop submitting, deliver everything queued (retrying as long as it takes), return the stats."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.sender.close(timeout=60)
        return self.sender.stats()


def _release(now: datetime) -> ReleaseState:
    start = now - timedelta(hours=1)
    return ReleaseState(
        model=MODEL,
        candidate_version="2",
        champion_version="1",
        phase=Phase.PROGRESSING,
        step_index=len(POLICY.steps) - 1,
        traffic=POLICY.steps[-1],
        started_at=start,
        step_started_at=start,
    )


def _judge(store: InferenceLogStore) -> tuple[Any, Any]:
    now = datetime.now(UTC) + timedelta(seconds=1)
    release = _release(now)
    measured = StoreMetricsSource(store).measure(release, window_start=release.started_at, now=now)
    return measured, decide(POLICY, release, measured, now)


def _assert_judged_unreadable(store: InferenceLogStore) -> None:
    measured, decision = _judge(store)
    assert set(measured.problems) >= set(LOG_METRICS)
    assert all("inference log unreadable" in reason for reason in measured.problems.values())
    assert decision.action == "hold"
    assert decision.reason.startswith("no data: request counts unknown (inference log unreadable")
    assert "0 requests" not in decision.reason


def _answered(store: InferenceLogStore) -> int:
    """Requests whose response is logged (what the judge counts as an arm's requests)."""
    with store.engine.connect() as connection:
        query = select(func.count()).where(inference_log.c.status_code.is_not(None))
        return int(connection.execute(query).scalar_one())


def _assert_judged_from_the_log(store: InferenceLogStore) -> None:
    before = _answered(store)
    measured, _decision = _judge(store)
    after = _answered(store)  # traffic may still be flowing: the judge's count lies in between
    assert not set(measured.problems) & set(LOG_METRICS)
    assert 0 < before <= measured.champion.requests + measured.candidate.requests <= after


def _assert_every_pair_stored(store: InferenceLogStore, pairs: int) -> None:
    frame = store.fetch(MODEL)
    assert sorted(frame["request_id"]) == [f"req-{n:05d}" for n in range(pairs)]
    assert frame["status_code"].eq(200).all()
    assert frame["prediction"].notna().all()
    assert frame["amount"].notna().all()


def _assert_refused_with_503(base_url: str, n: int, instances: int = 1) -> None:
    probe = _event(n, response=False, instances=instances)
    reply = httpx.post(f"{base_url}/events", content=probe.body, headers=probe.to_headers(), timeout=10)
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "1"
    assert reply.json() == {"error": "inference log unavailable; retry later"}


def test_a_locked_sqlite_log_is_answered_503_and_nothing_is_lost(tmp_path: Path) -> None:
    db = tmp_path / "inference.db"
    # The collector's store waits 300 ms for a lock (the default is DEFAULT_BUSY_TIMEOUT_MS).
    with (
        InferenceLogStore(f"sqlite:///{db}", busy_timeout_ms=300) as store,
        collector_in_thread(store) as base,
    ):
        traffic = Traffic(PayloadLogger(f"{base}/events"))
        traffic.wait_sent(40)
        holder = sqlite3.connect(db, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            _assert_refused_with_503(base, 99_999)
            # The judge folds new rows into its running sums, a write: it waits out the same busy
            # timeout and then says the log is unreadable — no data, never zeros, never a promotion.
            _assert_judged_unreadable(store)
            time.sleep(1.5)
            assert traffic.sender.stats()["pending"] > 0, "events must have queued behind the lock"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        stats = traffic.finish()
        collector_stats = httpx.get(f"{base}/stats", timeout=5).json()
        assert stats["failed"] == stats["dropped"] == 0
        assert stats["sent"] == stats["enqueued"] == 2 * traffic.pairs
        assert collector_stats["store_errors"] >= 2  # the probe, and the sender's attempts
        _assert_every_pair_stored(store, traffic.pairs)  # the refused probe was not committed
        _assert_judged_from_the_log(store)


def test_a_full_sqlite_log_is_answered_503_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = InferenceLogStore(f"sqlite:///{tmp_path / 'inference.db'}")
    disk: dict[str, int | None] = {"pages": None}

    @event.listens_for(store.engine, "checkout")
    def _limit_the_file(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # Every transaction checks a connection out: the limit in force is the one at that moment.
        limit = disk["pages"] if disk["pages"] is not None else 2**31 - 2
        dbapi_connection.execute(f"PRAGMA max_page_count = {limit}")

    with store, collector_in_thread(store) as base, caplog.at_level(logging.WARNING):
        traffic = Traffic(PayloadLogger(f"{base}/events"))
        traffic.wait_sent(40)
        with store.engine.connect() as connection:
            disk["pages"] = int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())
        # A batch of 400 instances needs new pages: refused whole, as the traffic soon is.
        _assert_refused_with_503(base, 99_999, instances=400)
        assert "database or disk is full" in caplog.text
        _assert_judged_from_the_log(store)
        time.sleep(1.5)
        disk["pages"] = None
        stats = traffic.finish()
        assert stats["failed"] == stats["dropped"] == 0
        assert stats["sent"] == stats["enqueued"] == 2 * traffic.pairs
        _assert_every_pair_stored(store, traffic.pairs)
        _assert_judged_from_the_log(store)


def test_postgresql_stopped_and_restarted_mid_run_loses_nothing(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    with embedded_postgres() as pg:
        url = pg.create_database("inference")
        with (
            collector_process(port, url, log=tmp_path / "collector.log", stop_grace_s=0) as process,
            InferenceLogStore(url) as store,
        ):
            traffic = Traffic(PayloadLogger(f"{base}/events"))
            traffic.wait_sent(40)
            _assert_judged_from_the_log(store)
            pg.stop("immediate")
            _assert_refused_with_503(base, 99_999)
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 503
            _assert_judged_unreadable(store)
            time.sleep(1.5)
            pg.start()
            # The same collector process and the same judge's store recover by themselves.
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/healthz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the collector did not reconnect"
                time.sleep(0.1)
            assert process.poll() is None
            stats = traffic.finish()
            assert stats["failed"] == stats["dropped"] == 0
            assert stats["sent"] == stats["enqueued"] == 2 * traffic.pairs
            assert httpx.get(f"{base}/stats", timeout=5).json()["store_errors"] >= 2
            # Everything, so also what was acknowledged before the crash (the sender never resends it).
            _assert_every_pair_stored(store, traffic.pairs)
            _assert_judged_from_the_log(store)
