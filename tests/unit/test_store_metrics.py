"""``StoreMetricsSource``: both arms measured in SQL from a real inference log (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mlcanary.rollout.measurements import ProxyErrorCount
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.telemetry.latency_histogram import RELATIVE_ACCURACY
from mlcanary.telemetry.metrics import StoreMetricsSource
from mlcanary.telemetry.store import InferenceLogStore, InferenceRow

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _release() -> ReleaseState:
    return ReleaseState(
        model="fraud",
        candidate_version="2",
        champion_version="1",
        phase=Phase.PROGRESSING,
        step_index=0,
        traffic=20,
        started_at=T0,
        step_started_at=T0,
    )


def _rows(arm: str, version: str, latencies: np.ndarray, *, start: datetime, errors: set[int], prefix: str):  # type: ignore[no-untyped-def]
    for i, latency in enumerate(latencies):
        failed = i in errors
        yield InferenceRow(
            request_id=f"{prefix}-{i}",
            instance_index=0,
            model="fraud",
            received_at=start + timedelta(seconds=i),
            arm=arm,
            version=version,
            status_code=500 if failed else 200,
            latency_ms=float(latency),
            features={"amount": 1.0},
            prediction=None if failed else i % 2,
            probability=None if failed else 0.5,
        )


def _labelled_candidate_requests(
    store: InferenceLogStore, probabilities: np.ndarray, labels: np.ndarray
) -> None:
    """One candidate request a second from T0, each with its probability and its label."""
    store.write_rows(
        InferenceRow(
            request_id=f"r-{i}",
            instance_index=0,
            model="fraud",
            received_at=T0 + timedelta(seconds=i),
            arm="candidate",
            version="2",
            status_code=200,
            latency_ms=10.0,
            features={"amount": 1.0},
            prediction=int(p >= 0.5),
            probability=float(p),
        )
        for i, p in enumerate(probabilities)
    )
    for i, label in enumerate(labels):
        store.record_feedback(f"r-{i}", int(label))


@pytest.fixture
def store(store_url: str) -> Iterator[InferenceLogStore]:
    with InferenceLogStore(store_url) as opened:
        yield opened


def test_measures_both_arms_from_the_log(store: InferenceLogStore) -> None:
    rng = np.random.default_rng(0)
    champion_lat = rng.lognormal(3.0, 0.3, 400)
    candidate_lat = rng.lognormal(3.2, 0.3, 100)
    store.write_rows(_rows("champion", "1", champion_lat, start=T0, errors={3, 7}, prefix="b"))
    store.write_rows(_rows("candidate", "2", candidate_lat, start=T0, errors={1, 2, 95}, prefix="c"))
    # Noise that must not count: another version on the candidate arm, and traffic before the start.
    store.write_rows(_rows("candidate", "9", candidate_lat[:10], start=T0, errors=set(), prefix="x"))
    store.write_rows(
        _rows("champion", "1", champion_lat[:10], start=T0 - timedelta(hours=1), errors=set(), prefix="old")
    )
    store.record_feedback("c-10", 0)  # prediction 10 % 2 = 0: correct
    store.record_feedback("c-11", 0)  # prediction 1: wrong

    now = T0 + timedelta(seconds=400)
    window_start = T0 + timedelta(seconds=90)
    m = StoreMetricsSource(store).measure(_release(), window_start=window_start, now=now)

    assert m.problems == {}
    assert (m.champion.requests, m.champion.errors) == (400, 2)
    assert (m.candidate.requests, m.candidate.errors) == (100, 3)
    assert m.candidate.version == "2"
    assert m.candidate.log_latency is not None
    assert m.candidate.log_latency.n == 100
    assert m.candidate.log_latency.mean == pytest.approx(np.log(candidate_lat).mean(), rel=1e-9)
    assert m.candidate.log_latency.variance == pytest.approx(np.log(candidate_lat).var(ddof=1), rel=1e-6)
    assert m.champion.latency_ms is not None
    # Percentiles come from the running sums' histograms: within their stated relative accuracy α,
    # and "slow" counts whole buckets above the champion's P95 (see mlcanary.telemetry.incremental).
    a = RELATIVE_ACCURACY
    p95 = np.percentile(champion_lat, 95)
    assert m.champion.latency_ms.p95 == pytest.approx(p95, rel=a)
    for arm, latencies in ((m.champion, champion_lat), (m.candidate, candidate_lat)):
        assert int((latencies > p95 * (1 + a) / (1 - a)).sum()) <= arm.slow
        assert arm.slow <= int((latencies > p95 * (1 - a) / (1 + a)).sum())
    assert m.candidate.predictions == 97
    assert m.candidate.positives == sum(1 for i in range(100) if i not in {1, 2, 95} and i % 2 == 1)
    assert (m.candidate.labeled, m.candidate.correct) == (2, 1)
    assert (m.candidate.window_requests, m.candidate.window_errors) == (10, 1)  # seconds 90..99
    assert math.isfinite(m.candidate.mean_probability or math.nan)


def test_empty_log_gives_zero_counts_not_errors(store: InferenceLogStore) -> None:
    m = StoreMetricsSource(store).measure(_release(), window_start=T0, now=T0 + timedelta(minutes=1))
    assert m.champion.requests == 0
    assert m.candidate.log_latency is None
    assert m.candidate.latency_ms is None
    assert m.problems == {}


def test_unreadable_store_reports_problems_instead_of_raising(tmp_path: Path) -> None:
    store = InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}")
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE inference_log")
    m = StoreMetricsSource(store).measure(_release(), window_start=T0, now=T0 + timedelta(minutes=1))
    assert "error_rate" in m.problems
    assert "inference log unreadable" in m.problems["error_rate"]


def test_label_outcomes_cover_only_requests_old_enough_for_their_label(store: InferenceLogStore) -> None:
    from sklearn.metrics import brier_score_loss, confusion_matrix

    rng = np.random.default_rng(1)
    n = 300
    probabilities = rng.uniform(0.0, 1.0, n)
    probabilities[:3] = [0.0, 1.0, 1.0]  # log loss must clip, not overflow
    labels = rng.integers(0, 2, n)
    _labelled_candidate_requests(store, probabilities, labels)

    source = StoreMetricsSource(store, label_delay=timedelta(seconds=100))
    m = source.measure(_release(), window_start=T0, now=T0 + timedelta(seconds=n))

    old = slice(0, n - 100)  # received before now − 100 s: the only ones compared
    assert m.label_cutoff == T0 + timedelta(seconds=n - 100)
    outcome = m.candidate.labels
    tn, fp, fn, tp = confusion_matrix(labels[old], (probabilities[old] >= 0.5).astype(int)).ravel()
    assert (outcome.true_positives, outcome.false_positives) == (tp, fp)
    assert (outcome.false_negatives, outcome.true_negatives) == (fn, tn)
    assert outcome.scored == n - 100
    assert outcome.brier == pytest.approx(brier_score_loss(labels[old], probabilities[old]))
    p_label = np.where(labels[old] == 1, probabilities[old], 1 - probabilities[old])
    assert outcome.log_loss == pytest.approx(-np.log(np.maximum(p_label, 1e-15)).mean())
    assert m.champion.labels.labeled == 0


def test_label_outcomes_count_the_whole_10_second_buckets_of_the_release(store: InferenceLogStore) -> None:
    n = 300
    _labelled_candidate_requests(store, np.full(n, 0.9), np.ones(n, dtype=int))
    release = replace(_release(), started_at=T0 + timedelta(seconds=3.5))

    source = StoreMetricsSource(store, label_delay=timedelta(seconds=100))
    m = source.measure(release, window_start=T0, now=T0 + timedelta(seconds=n + 7))

    # Every request since the start counts (4 … 299); labels those of [T0 + 10 s, T0 + 200 s), the
    # whole buckets between the start and now − 100 s = T0 + 207 s.
    assert m.candidate.requests == n - 4
    assert m.label_cutoff == T0 + timedelta(seconds=200)
    assert m.candidate.labels.scored == m.candidate.labels.true_positives == 190


def test_errors_the_proxy_answered_join_the_arm_that_could_not_answer(store: InferenceLogStore) -> None:
    rng = np.random.default_rng(1)
    store.write_rows(_rows("champion", "1", rng.lognormal(3.0, 0.3, 400), start=T0, errors=set(), prefix="b"))
    store.write_rows(_rows("candidate", "2", rng.lognormal(3.0, 0.3, 100), start=T0, errors={5}, prefix="c"))
    asked: list[tuple[datetime, datetime, datetime]] = []

    def proxy_errors(start: datetime, window_start: datetime, now: datetime) -> dict[str, ProxyErrorCount]:
        asked.append((start, window_start, now))
        return {"candidate": ProxyErrorCount(total=60, window=25)}

    now, window_start = T0 + timedelta(seconds=400), T0 + timedelta(seconds=90)
    source = StoreMetricsSource(store, proxy_errors=proxy_errors)
    m = source.measure(_release(), window_start=window_start, now=now)

    assert asked == [(T0, window_start, now)]
    assert (m.candidate.requests, m.candidate.errors, m.candidate.proxy_errors) == (100, 1, 60)
    assert (m.candidate.routed, m.candidate.failed) == (160, 61)
    assert m.candidate.error_rate == pytest.approx(61 / 160)
    assert m.candidate.window_proxy_errors == 25
    assert (m.champion.proxy_errors, m.champion.error_rate) == (0, 0.0)
    # Latency and positive rate stay over what the server answered.
    assert m.candidate.log_latency is not None
    assert m.candidate.log_latency.n == 100


def test_an_unreadable_proxy_error_log_is_a_problem_of_the_error_checks(store: InferenceLogStore) -> None:
    def unreadable(start: datetime, window_start: datetime, now: datetime) -> dict[str, ProxyErrorCount]:
        raise PermissionError("proxy-errors.log: permission denied")

    m = StoreMetricsSource(store, proxy_errors=unreadable).measure(
        _release(), window_start=T0, now=T0 + timedelta(minutes=1)
    )
    assert set(m.problems) == {"error_rate", "error_burst"}
    assert "proxy error log unreadable" in m.problems["error_rate"]
