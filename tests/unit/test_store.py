"""The inference-log store: merge-on-key pairing, feedback, windows and aggregates on real SQLite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.exc import OperationalError

from mlcanary.config import Settings
from mlcanary.telemetry.aggregate import aggregate
from mlcanary.telemetry.store import (
    LOG_COLUMNS,
    InferenceLogStore,
    InferenceRow,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[InferenceLogStore]:
    with InferenceLogStore(store_url) as opened:
        yield opened


def request_rows(
    rid: str, n: int = 1, *, at: datetime = T0, arm: str | None = "champion"
) -> list[InferenceRow]:
    return [
        InferenceRow(
            rid,
            index,
            "fraud",
            at,
            half="request",
            event_time=T0 - timedelta(milliseconds=5),
            arm=arm,
            version="3" if arm else None,
            source="src",
            protocol="v1",
            features={"amount": 10.0 * index, "country": "NL"},
        )
        for index in range(n)
    ]


def response_rows(
    rid: str,
    predictions: list[tuple[int | None, float | None]],
    *,
    at: datetime = T0,
    status: int = 200,
    latency: float | None = 12.5,
    arm: str | None = "champion",
) -> list[InferenceRow]:
    return [
        InferenceRow(
            rid,
            index,
            "fraud",
            at,
            half="response",
            event_time=at,
            arm=arm,
            version="3" if arm else None,
            source="src",
            protocol="v1",
            status_code=status,
            latency_ms=latency,
            prediction=label,
            probability=probability,
        )
        for index, (label, probability) in enumerate(predictions or [(None, None)])
    ]


def complete(
    rid: str,
    *,
    arm: str | None,
    at: datetime,
    status: int = 200,
    latency: float | None = 10.0,
    prediction: int | None = 0,
    probability: float | None = 0.2,
    index: int = 0,
) -> InferenceRow:
    return InferenceRow(
        rid,
        index,
        "fraud",
        at,
        arm=arm,
        status_code=status,
        latency_ms=latency,
        features={"amount": 1.0},
        prediction=prediction,
        probability=probability,
    )


def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    with InferenceLogStore(f"sqlite:///{tmp_path / 'inference.db'}") as store:
        assert store.journal_mode() == "wal"
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 10_000


def test_a_statement_waits_for_a_lock_at_most_the_busy_timeout(store_url: str) -> None:
    """Another connection holding the log's write lock makes a write fail within the busy timeout
    (SQLite ``busy_timeout``, PostgreSQL ``lock_timeout``) instead of waiting for ever."""
    with InferenceLogStore(store_url, busy_timeout_ms=200) as store, store.engine.connect() as holder:
        if store_url.startswith("sqlite"):
            holder.exec_driver_sql("BEGIN EXCLUSIVE")
        else:
            holder.exec_driver_sql("LOCK TABLE inference_log IN EXCLUSIVE MODE")
        with pytest.raises(OperationalError, match=r"locked|lock timeout"):
            store.write_rows([complete("a", arm="champion", at=T0)])
        holder.rollback()
        store.write_rows([complete("a", arm="champion", at=T0)])
        assert store.count("fraud") == 1


def test_default_url_points_into_the_state_dir(tmp_path: Path) -> None:
    url = Settings(state_dir=tmp_path / "state").store_url
    assert url == f"sqlite:///{(tmp_path / 'state' / 'inference.db').resolve()}"
    with InferenceLogStore(url) as created:
        assert created.count("fraud") == 0
    assert (tmp_path / "state" / "inference.db").is_file()


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        InferenceLogStore("mysql://user@localhost/db")


@pytest.mark.parametrize("response_first", [False, True])
def test_halves_merge_in_either_order(store: InferenceLogStore, response_first: bool) -> None:
    request = request_rows("r1", 2, at=T0)
    response = response_rows("r1", [(0, 0.1), (1, 0.9)], at=T0 + timedelta(seconds=1))
    first, second = (response, request) if response_first else (request, response)
    assert store.write_rows(first).paired == 0
    assert store.write_rows(second).paired == 2

    frame = store.fetch("fraud")
    assert list(frame["instance_index"]) == [0, 1]
    assert list(frame["prediction"]) == [0, 1]
    assert list(frame["probability"]) == [0.1, 0.9]
    assert list(frame["amount"]) == [0.0, 10.0]
    assert set(frame["status_code"]) == {200}
    assert set(frame["latency_ms"]) == {12.5}
    assert set(frame["arm"]) == {"champion"}
    assert set(frame["version"]) == {"3"}
    assert set(frame["protocol"]) == {"v1"}
    # The earliest half sets the time axis; the request's ce-time is the inference time.
    assert set(frame["received_at"]) == {pd.Timestamp(T0)}
    assert set(frame["event_time"]) == {pd.Timestamp(T0 - timedelta(milliseconds=5))}


def test_rewriting_the_same_rows_is_a_no_op(store: InferenceLogStore) -> None:
    rows = request_rows("r1", 3) + response_rows("r1", [(0, 0.2), (0, 0.3), (1, 0.7)])
    store.write_rows(rows)
    before = store.fetch("fraud")
    store.write_rows(rows)
    store.write_rows(request_rows("r1", 3, at=T0 + timedelta(minutes=5)))
    after = store.fetch("fraud")
    assert store.count("fraud") == 3
    pd.testing.assert_frame_equal(before, after)


def test_error_response_completes_every_instance_of_a_batch(store: InferenceLogStore) -> None:
    store.write_rows(request_rows("r1", 3))
    store.write_rows(response_rows("r1", [], status=503, latency=2.0))
    frame = store.fetch("fraud")
    assert list(frame["status_code"]) == [503, 503, 503]
    assert list(frame["latency_ms"]) == [2.0, 2.0, 2.0]
    assert frame["prediction"].isna().all()


def test_error_response_first_then_batch_request(store: InferenceLogStore) -> None:
    store.write_rows(response_rows("r1", [], status=500, arm=None))
    result = store.write_rows(request_rows("r1", 3))
    assert result.paired == 3
    frame = store.fetch("fraud")
    assert list(frame["status_code"]) == [500, 500, 500]
    assert set(frame["arm"]) == {"champion"}


def test_unknown_arm_is_filled_by_the_other_half(store: InferenceLogStore) -> None:
    store.write_rows(request_rows("r1", 1, arm=None))
    store.write_rows(response_rows("r1", [(1, 0.8)], arm="candidate"))
    frame = store.fetch("fraud", arm="candidate")
    assert len(frame) == 1
    assert frame.loc[0, "version"] == "3"


def test_request_without_response_stays_as_an_unpaired_row(store: InferenceLogStore) -> None:
    store.write_rows(request_rows("old", 2, at=T0))
    store.write_rows(request_rows("new", 1, at=T0 + timedelta(minutes=1)))
    store.write_rows(response_rows("orphan", [(1, 0.6)], at=T0))
    store.write_rows(request_rows("done", 1, at=T0) + response_rows("done", [(0, 0.1)], at=T0))

    counts = store.pending_counts(cutoff=T0 + timedelta(seconds=30))
    assert (counts.pending_requests, counts.unpaired_requests) == (1, 1)
    assert (counts.pending_responses, counts.unpaired_responses) == (0, 1)
    frame = store.fetch("fraud").set_index(["request_id", "instance_index"])
    assert frame.loc[("old", 1), "status_code"] is pd.NA
    assert frame["status_code"].isna().sum() == 3
    assert pd.isna(frame.loc[("orphan", 0), "amount"])


def test_feedback_upsert_latest_wins_and_joins(store: InferenceLogStore) -> None:
    store.write_rows(request_rows("r1", 2) + response_rows("r1", [(0, 0.1), (1, 0.9)]))
    store.record_feedback("r1", 1)
    store.record_feedback("r1", 0)
    store.record_feedback("r1", 1, instance_index=1)
    store.record_feedback("unknown-yet", 1)
    frame = store.fetch("fraud")
    assert list(frame["label"]) == [0, 1]
    assert str(frame["label"].dtype) == "Int64"


def test_feedback_is_idempotent(store: InferenceLogStore) -> None:
    from mlcanary.telemetry.store import Feedback, feedback

    store.record_feedback_many([Feedback("r1", 1)], now=T0)
    store.record_feedback_many([Feedback("r1", 1)], now=T0 + timedelta(hours=1))
    with store.engine.connect() as connection:
        rows = connection.execute(feedback.select()).all()
    assert len(rows) == 1
    assert rows[0].received_at == T0  # same label again changes nothing
    store.record_feedback_many([Feedback("r1", 0)], now=T0 + timedelta(hours=2))
    with store.engine.connect() as connection:
        (row,) = connection.execute(feedback.select()).all()
    assert (row.label, row.received_at) == (0, T0 + timedelta(hours=2))


def test_fetch_columns_windows_and_limit(store: InferenceLogStore) -> None:
    for minute in range(5):
        store.write_rows([complete(f"r{minute}", arm="champion", at=T0 + timedelta(minutes=minute))])
    store.write_rows([complete("c0", arm="candidate", at=T0)])

    frame = store.fetch("fraud")
    assert list(frame.columns) == [*LOG_COLUMNS, "amount"]
    assert len(frame) == 6
    assert str(frame["received_at"].dtype) == "datetime64[ns, UTC]"

    window = store.fetch(
        "fraud", arm="champion", since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)
    )
    assert list(window["request_id"]) == ["r1", "r2"]  # half-open: minute 3 excluded
    assert (
        store.count("fraud", arm="champion", since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
        == 2
    )
    assert list(store.fetch("fraud", arm="champion", limit=2)["request_id"]) == ["r3", "r4"]
    assert store.count("other-model") == 0
    assert store.fetch("other-model").empty


def test_list_features_and_name_clashes_expand(store: InferenceLogStore) -> None:
    store.write_rows(
        [
            InferenceRow("a", 0, "fraud", T0, features=[1.5, 2.5]),
            InferenceRow("b", 0, "fraud", T0 + timedelta(seconds=1), features={"label": 3, "arm": "x"}),
        ]
    )
    frame = store.fetch("fraud")
    assert list(frame.columns[len(LOG_COLUMNS) :]) == ["0", "1", "feature_label", "feature_arm"]
    assert frame.loc[0, "0"] == 1.5
    assert frame.loc[1, "feature_label"] == 3


def test_naive_datetimes_are_taken_as_utc(store: InferenceLogStore) -> None:
    store.write_rows([complete("a", arm="champion", at=T0)])
    assert store.count("fraud", since=T0.replace(tzinfo=None)) == 1
    assert store.count("fraud", since=(T0 + timedelta(hours=1)).astimezone(UTC)) == 0


def test_aggregate_matches_numpy(store: InferenceLogStore) -> None:
    rng = np.random.default_rng(7)
    champion_latency = rng.gamma(2.0, 10.0, size=300)
    candidate_latency = rng.gamma(2.0, 14.0, size=120)
    rows: list[InferenceRow] = []
    for i, latency in enumerate(champion_latency):
        status = 503 if i % 50 == 0 else (404 if i % 60 == 1 else 200)
        rows.append(
            complete(
                f"ch{i}",
                arm="champion",
                at=T0 + timedelta(seconds=i),
                status=status,
                latency=float(latency),
                prediction=i % 4 == 0,
                probability=0.1 * (i % 10),
            )
        )
    for i, latency in enumerate(candidate_latency):
        rows.append(
            complete(
                f"ca{i}",
                arm="candidate",
                at=T0 + timedelta(seconds=i),
                status=500 if i % 10 == 0 else 200,
                latency=float(latency),
                prediction=1,
                probability=0.75,
            )
        )
        # A batch: a second instance of the same request must not count as another request.
        rows.append(
            complete(
                f"ca{i}",
                arm="candidate",
                at=T0 + timedelta(seconds=i),
                status=500 if i % 10 == 0 else 200,
                latency=float(latency),
                prediction=0,
                probability=0.25,
                index=1,
            )
        )
    rows += request_rows("pending", 1, at=T0 + timedelta(seconds=3), arm="candidate")
    rows.append(complete("kserve", arm=None, at=T0, latency=None))
    rows.append(complete("outside", arm="champion", at=T0 + timedelta(hours=2), status=500))
    store.write_rows(rows)

    summary = aggregate(store, "fraud", T0, T0 + timedelta(hours=1))
    assert set(summary) == {"champion", "candidate", None}

    champion = summary["champion"]
    assert champion.requests == champion.responses == 300
    assert champion.unpaired == 0
    assert champion.errors_5xx == len([i for i in range(300) if i % 50 == 0])
    assert champion.errors_4xx == len([i for i in range(300) if i % 50 != 0 and i % 60 == 1])
    assert champion.instances == 300
    assert champion.positive_predictions == len([i for i in range(300) if i % 4 == 0])
    assert champion.mean_probability == pytest.approx(np.mean([0.1 * (i % 10) for i in range(300)]))
    expected = np.percentile(champion_latency, [50, 95, 99])
    assert [champion.latency_p50_ms, champion.latency_p95_ms, champion.latency_p99_ms] == pytest.approx(
        expected
    )
    assert champion.error_rate == pytest.approx(6 / 300)

    candidate = summary["candidate"]
    assert candidate.requests == 121
    assert candidate.responses == 120
    assert candidate.unpaired == 1
    assert candidate.instances == 241
    assert candidate.predictions == 240
    assert candidate.positive_predictions == 120
    assert candidate.errors_5xx == 12
    assert candidate.latency_samples == 120
    expected = np.percentile(candidate_latency, [50, 95, 99])
    assert [candidate.latency_p50_ms, candidate.latency_p95_ms, candidate.latency_p99_ms] == pytest.approx(
        expected
    )

    unknown = summary[None]
    assert unknown.requests == 1
    assert unknown.latency_samples == 0
    assert unknown.latency_p99_ms is None

    assert aggregate(store, "fraud", T0 + timedelta(days=1), T0 + timedelta(days=2)) == {}


def test_concurrent_halves_from_many_threads_all_pair(store: InferenceLogStore) -> None:
    ids = [f"r{i}" for i in range(60)]
    errors: list[BaseException] = []

    def send(kind: str) -> None:
        try:
            for rid in ids if kind == "request" else reversed(ids):
                if kind == "request":
                    store.write_rows(request_rows(rid, 2))
                else:
                    store.write_rows(response_rows(rid, [(1, 0.9), (0, 0.1)]))
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(kind,)) for kind in ("request", "response")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    frame = store.fetch("fraud")
    assert len(frame) == 120
    assert frame["prediction"].notna().all()
    assert frame["amount"].notna().all()
    assert store.pending_counts(T0).pending_requests == 0


def test_in_memory_database_is_shared_between_threads() -> None:
    with InferenceLogStore("sqlite://") as memory:
        thread = threading.Thread(target=memory.write_rows, args=([complete("a", arm="champion", at=T0)],))
        thread.start()
        thread.join()
        assert memory.count("fraud") == 1
