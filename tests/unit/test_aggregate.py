"""The one aggregation of the inference log: version scoping, windows, labels, slow requests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.telemetry.aggregate import ArmAggregate, aggregate
from mlcanary.telemetry.metrics import StoreMetricsSource
from mlcanary.telemetry.store import InferenceLogStore, InferenceRow

T0 = datetime(2026, 2, 1, 9, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[InferenceLogStore]:
    with InferenceLogStore(store_url) as opened:
        yield opened


def row(rid: str, arm: str, version: str, second: float, **values: object) -> InferenceRow:
    base: dict[str, object] = {"status_code": 200, "latency_ms": 10.0, "prediction": 0, "probability": 0.2}
    return InferenceRow(
        request_id=rid,
        instance_index=int(values.pop("index", 0)),  # type: ignore[call-overload]
        model="fraud",
        received_at=T0 + timedelta(seconds=second),
        arm=arm,
        version=version,
        **(base | values),  # type: ignore[arg-type]
    )


def test_versions_keep_only_each_arms_version_and_window_counts_from_its_start(
    store: InferenceLogStore,
) -> None:
    store.write_rows(
        [
            row("a", "champion", "1", 1),
            row("b", "champion", "1", 50, status_code=503, prediction=None, probability=None),
            row("c", "candidate", "2", 60, status_code=500, prediction=None, probability=None),
            row("d", "candidate", "2", 70),
            row("old", "candidate", "7", 80),  # another version on the candidate arm
        ]
    )
    found = aggregate(
        store,
        "fraud",
        T0,
        T0 + timedelta(minutes=5),
        versions={"champion": "1", "candidate": "2"},
        window_start=T0 + timedelta(seconds=55),
    )
    assert set(found) == {"champion", "candidate"}
    assert (found["champion"].responses, found["champion"].errors_5xx) == (2, 1)
    assert (found["champion"].window_responses, found["champion"].window_errors_5xx) == (0, 0)
    assert (found["candidate"].responses, found["candidate"].window_responses) == (2, 2)
    assert found["candidate"].window_errors_5xx == 1
    assert found["candidate"].error_rate == pytest.approx(0.5)


def test_labels_count_only_predicted_instances_and_matches(store: InferenceLogStore) -> None:
    store.write_rows(
        [
            row("p", "candidate", "2", 1, prediction=1, probability=0.9),
            row("q", "candidate", "2", 2, prediction=0),
            row("r", "candidate", "2", 3, status_code=500, prediction=None, probability=None),
        ]
    )
    store.record_feedback("p", 1)  # right
    store.record_feedback("q", 1)  # wrong
    store.record_feedback("r", 0)  # no prediction: not a labelled prediction
    store.record_feedback("unknown", 1)  # a label for a request the log never saw
    arm = aggregate(store, "fraud", T0, T0 + timedelta(minutes=1))["candidate"]
    assert (arm.labeled, arm.correct) == (2, 1)
    assert (arm.instances, arm.predictions, arm.positive_predictions) == (3, 2, 1)
    assert arm.mean_probability == pytest.approx((0.9 + 0.2) / 2)


def test_label_outcomes_count_only_instances_received_before_the_label_cutoff(
    store: InferenceLogStore,
) -> None:
    store.write_rows(
        [
            row("tp", "candidate", "2", 1, prediction=1, probability=0.8),
            row("fp", "candidate", "2", 2, prediction=1, probability=0.6),
            row("tn", "candidate", "2", 3, prediction=0, probability=None),  # labelled, not scored
            row("young", "candidate", "2", 30, prediction=0, probability=0.1),  # after the cutoff
        ]
    )
    for rid, label in (("tp", 1), ("fp", 0), ("tn", 0), ("young", 1)):
        store.record_feedback(rid, label)
    cutoff = T0 + timedelta(seconds=10)
    arm = aggregate(store, "fraud", T0, T0 + timedelta(minutes=1), label_cutoff=cutoff)["candidate"]
    assert (arm.true_positives, arm.false_positives, arm.true_negatives, arm.false_negatives) == (1, 1, 1, 0)
    assert (arm.labeled, arm.correct, arm.scored) == (3, 2, 2)
    assert arm.brier_sum == pytest.approx(0.2**2 + 0.6**2)
    assert arm.log_loss_sum == pytest.approx(-math.log(0.8) - math.log(0.4))
    assert arm.labels.brier == pytest.approx((0.2**2 + 0.6**2) / 2)
    assert arm.predictions == 4  # the cutoff bounds the labels only
    everything = aggregate(store, "fraud", T0, T0 + timedelta(minutes=1))["candidate"]
    assert (everything.labeled, everything.false_negatives) == (4, 1)


def test_slow_is_relative_to_the_reference_arms_p95(store: InferenceLogStore) -> None:
    champion = np.linspace(1.0, 100.0, 100)
    rows = [row(f"c{i}", "champion", "1", i, latency_ms=float(v)) for i, v in enumerate(champion)]
    rows += [row(f"k{i}", "candidate", "2", i, latency_ms=v) for i, v in enumerate([50.0, 99.0, 150.0])]
    store.write_rows(rows)
    found = aggregate(store, "fraud", T0, T0 + timedelta(hours=1), slow_reference="champion")
    p95 = np.percentile(champion, 95)
    assert found["champion"].slow == int((champion > p95).sum())
    assert found["candidate"].slow == 2
    assert aggregate(store, "fraud", T0, T0 + timedelta(hours=1))["candidate"].slow == 0
    log = np.log([50.0, 99.0, 150.0])
    summary = found["candidate"].log_latency
    assert summary is not None
    assert summary.mean == pytest.approx(log.mean())
    assert summary.variance == pytest.approx(log.var(ddof=1))


def test_percentiles_use_the_most_recent_latencies_only_when_bounded(store: InferenceLogStore) -> None:
    store.write_rows([row(f"r{i}", "champion", "1", i, latency_ms=float(i + 1)) for i in range(10)])
    bounded = aggregate(store, "fraud", T0, T0 + timedelta(minutes=1), max_latency_rows=4)["champion"]
    assert bounded.latency_p50_ms == pytest.approx(np.percentile([7, 8, 9, 10], 50))
    assert bounded.latency_samples == 10  # counted in SQL over every row


def test_metrics_count_answered_requests_as_the_aggregation_does(store: InferenceLogStore) -> None:
    store.write_rows([row("done", "candidate", "2", 1)])
    store.write_rows(
        [
            InferenceRow(
                "waiting", 0, "fraud", T0 + timedelta(seconds=2), half="request", arm="candidate", version="2"
            )
        ]
    )
    release = ReleaseState("fraud", "2", "1", Phase.PROGRESSING, 0, 20, T0, T0)
    found = aggregate(store, "fraud", T0, T0 + timedelta(minutes=1))["candidate"]
    measured = StoreMetricsSource(store).measure(release, window_start=T0, now=T0 + timedelta(minutes=1))
    assert (found.requests, found.responses, found.unpaired) == (2, 1, 1)
    assert measured.candidate.requests == found.responses
    assert measured.champion.requests == 0
    assert measured.champion.latency_ms is None


def test_an_empty_arm_is_all_zeros() -> None:
    empty = ArmAggregate(arm="candidate")
    assert (empty.requests, empty.error_rate, empty.log_latency) == (0, None, None)
    assert math.isclose(empty.log_latency_sum, 0.0)


def test_answers_count_what_each_instance_held_and_the_source_names_what_is_missing(
    store: InferenceLogStore,
) -> None:
    # A champion that gives labels and probabilities; a candidate that gives labels only.
    store.write_rows(
        [
            row("c1", "champion", "1", 1),
            row("c2", "champion", "1", 2, status_code=500, prediction=None, probability=None),
            row("k1", "candidate", "2", 3, prediction=1, probability=None),
            row("k2", "candidate", "2", 4, prediction=0, probability=None),
        ]
    )
    found = aggregate(store, "fraud", T0, T0 + timedelta(minutes=1))
    assert (found["champion"].answered, found["champion"].predictions, found["champion"].probabilities) == (
        1,
        1,
        1,
    )
    assert (
        found["candidate"].answered,
        found["candidate"].predictions,
        found["candidate"].probabilities,
    ) == (
        2,
        2,
        0,
    )
    release = ReleaseState(
        model="fraud",
        candidate_version="2",
        champion_version="1",
        phase=Phase.PROGRESSING,
        step_index=0,
        traffic=50,
        started_at=T0,
        step_started_at=T0,
    )
    measured = StoreMetricsSource(store).measure(release, window_start=T0, now=T0 + timedelta(minutes=1))
    assert measured.candidate.answered == 2
    assert measured.unmeasured["brier"] == "v2 (candidate) gives no probability, only labels"
    assert "accuracy" not in measured.unmeasured  # labels are there
