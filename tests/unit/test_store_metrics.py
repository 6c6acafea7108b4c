"""``StoreMetricsSource``: both arms measured in SQL from a real SQLite inference log."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mlcanary.rollout.state import Phase, ReleaseState
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


@pytest.fixture
def store(tmp_path: Path) -> InferenceLogStore:
    return InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}")


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
    assert m.champion.latency_ms.p95 == pytest.approx(np.percentile(champion_lat, 95))
    p95 = np.percentile(champion_lat, 95)
    assert m.champion.slow == int((champion_lat > p95).sum())
    assert m.candidate.slow == int((candidate_lat > p95).sum())
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
