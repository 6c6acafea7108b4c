"""The running sums equal the full recomputation of the log: random arrival orders, both halves of
a request in either order, late labels, ticks in between and a restart (a new store object)."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

import mlcanary.telemetry.rollup as rollup_module
import mlcanary.telemetry.rollup_labels as rollup_labels_module
from mlcanary.rollout.stats import LATENCY_FLOOR_MS
from mlcanary.telemetry.aggregate import ArmAggregate, aggregate
from mlcanary.telemetry.incremental import cover, incremental_aggregate
from mlcanary.telemetry.latency_histogram import RELATIVE_ACCURACY, LatencyHistogram
from mlcanary.telemetry.rollup import rebuild, refresh
from mlcanary.telemetry.rollup_sums import compute_sums
from mlcanary.telemetry.rollup_tables import (
    BUCKET_SECONDS,
    LABEL_FIELDS,
    bucket_of,
    mark_labels,
    rollup,
    rollup_dirty,
    rollup_folded_labels,
    rollup_folded_state,
    rollup_label_marks,
)
from mlcanary.telemetry.store import Feedback, InferenceLogStore, InferenceRow, feedback, inference_log

T0 = datetime(2026, 2, 1, 9, 0, 3, 250_000, tzinfo=UTC)
VERSIONS = {"champion": "1", "candidate": "2"}
PERCENTILES = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
A = RELATIVE_ACCURACY


def halves(rid: str, arm: str, version: str, at: float, latency: float, status: int, pred: int | None):
    """The request and response halves of one single-instance inference."""
    common = {"request_id": rid, "instance_index": 0, "model": "fraud", "arm": arm, "version": version}
    request = InferenceRow(**common, received_at=T0 + timedelta(seconds=at), half="request", features=[1.0])
    response = InferenceRow(
        **common,
        received_at=T0 + timedelta(seconds=at + latency / 1000),
        half="response",
        status_code=status,
        latency_ms=latency,
        prediction=pred,
        probability=None if pred is None else (0.8 if pred else 0.3),
    )
    return request, response


requests = st.lists(
    st.tuples(
        st.sampled_from([("champion", "1"), ("candidate", "2"), ("candidate", "7"), ("shadowless", "1")]),
        st.floats(0, 3600),  # arrival, seconds after T0
        st.one_of(st.floats(0.5, 400), st.floats(5_000, 30_000)),  # ms; slow ones cross buckets
        st.sampled_from([200, 200, 200, 500, 404]),
        st.sampled_from([0, 1, None]),
        st.sampled_from([None, 0, 1]),  # a label, or none
        st.booleans(),  # the label comes late: after a tick has summed its request
        st.sampled_from([None, 0, 1]),  # a second label for the same instance, later
    ),
    min_size=1,
    max_size=40,
)


def assert_equal_to_full(store: InferenceLogStore, since: datetime, until: datetime, **kwargs) -> None:
    ours = incremental_aggregate(
        store, "fraud", since, until, versions=VERSIONS, slow_reference="champion", **kwargs
    )
    full = aggregate(store, "fraud", since, until, versions=VERSIONS, slow_reference=None, **kwargs)
    assert set(ours) == set(full)
    raw = {arm: _latencies(store, since, until, arm) for arm in full}
    for arm, exact in full.items():
        mine = ours[arm]
        for f in fields(ArmAggregate):
            if f.name in (*PERCENTILES, "slow"):
                continue
            a, b = getattr(mine, f.name), getattr(exact, f.name)
            if isinstance(b, float):
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (arm, f.name, a, b)
            else:
                assert a == b, (arm, f.name, a, b)
        for name, q in zip(PERCENTILES, (50, 95, 99), strict=True):
            value = getattr(mine, name)
            if not raw[arm].size:
                assert value is None
                continue
            truth = float(np.percentile(raw[arm], q))
            assert abs(value - truth) <= A * truth * (1 + 1e-9), (arm, name, value, truth)
    if "champion" in full and raw["champion"].size:
        p95 = float(np.percentile(raw["champion"], 95))
        for arm in full:
            slow, values = ours[arm].slow, raw[arm]
            assert np.sum(values > p95 * (1 + A) / (1 - A) * (1 + 1e-9)) <= slow
            assert slow <= np.sum(values > p95 * (1 - A) / (1 + A) * (1 - 1e-9))


def _latencies(store: InferenceLogStore, since: datetime, until: datetime, arm: str) -> np.ndarray:
    frame = store.fetch("fraud", arm=arm, since=since, until=until)
    frame = frame[(frame.version == VERSIONS[arm]) & (frame.instance_index == 0)]
    return np.maximum(frame.latency_ms.dropna().to_numpy(dtype=float), LATENCY_FLOOR_MS)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
# No shrinking: a failure prints its (unshrunk) example at once instead of minutes later.
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(
    traffic=requests,
    order=st.randoms(use_true_random=False),
    ticks=st.lists(st.floats(0, 1), min_size=1, max_size=4),
    release=st.floats(0, 1800),
    tick_at=st.floats(1, 3700),
    delay=st.floats(0, 1800),
)
def test_running_sums_equal_the_full_recomputation(
    request, backend, tmp_path_factory, traffic, order, ticks, release, tick_at, delay
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'log.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()  # a fresh database per example
    events: list[list[InferenceRow] | tuple[str, int]] = []
    late: list[tuple[str, int]] = []
    for i, ((arm, version), at, latency, status, pred, label, is_late, relabel) in enumerate(traffic):
        request_half, response_half = halves(
            f"r{i}", arm, version, at, latency, status, pred if status == 200 else None
        )
        events += [[request_half], [response_half]]
        if label is not None:
            (late if is_late else events).append((f"r{i}", label))
            if relabel is not None:  # the label sent again, the same or replaced by another
                late.append((f"r{i}", relabel))
    order.shuffle(events)  # halves in either order, labels before or after their request
    order.shuffle(late)
    events += late  # late labels, after a tick (below) summed every request
    since, now = T0 + timedelta(seconds=release), T0 + timedelta(seconds=tick_at)
    kwargs = {"window_start": now - timedelta(seconds=900), "label_cutoff": now - timedelta(seconds=delay)}
    store = InferenceLogStore(url)
    # Ticks at random points of the stream, and one once every request is in.
    stops = {int(f * (len(events) - 1)) for f in ticks} | {len(events) - len(late) - 1}
    for step, event in enumerate(events):
        if isinstance(event, tuple):
            store.record_feedback(event[0], event[1])
        else:
            store.write_rows(event)
        if step in stops:  # a tick in the middle of the stream folds in what arrived so far
            assert_equal_to_full(store, since, now, **kwargs)
    store.close()
    restarted = InferenceLogStore(url)  # a new process: only the persisted sums and marks
    try:
        assert_equal_to_full(restarted, since, now, **kwargs)
        rebuild(restarted, "fraud")
        assert_equal_to_full(restarted, since, now, **kwargs)
    finally:
        restarted.close()


def test_a_ragged_end_read_without_labels_or_histograms_leaves_out_only_those(store_url: str) -> None:
    with InferenceLogStore(store_url) as store:
        logged = [halves(f"r{i}", "champion", "1", 2.0 * i, 20.0 + i, 200, i % 2) for i in range(6)]
        store.write_rows([half for pair in logged for half in pair])
        store.record_feedback_many([Feedback(f"r{i}", 1) for i in range(6)], now=T0 + timedelta(minutes=1))
        with store.engine.connect() as connection:
            scope = {"by_bucket": False, "versions": {"champion": "1"}}
            until = T0 + timedelta(seconds=30)
            (full,) = compute_sums(connection, "fraud", T0, until, **scope).values()
            bare_scope = {**scope, "labels": False, "histograms": False}
            (bare,) = compute_sums(connection, "fraud", T0, until, **bare_scope).values()
    assert full.values["scored"] == full.values["true_positives"] + full.values["false_negatives"] == 6
    assert full.histogram.total == 6
    assert all(bare.values[name] == 0 for name in LABEL_FIELDS)
    assert not bare.histogram.counts
    assert {n: v for n, v in bare.values.items() if n not in LABEL_FIELDS} == {
        n: v for n, v in full.values.items() if n not in LABEL_FIELDS
    }


def test_a_refresh_recomputes_only_the_buckets_that_changed(tmp_path: Path) -> None:
    with InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}") as store:
        for i in range(30):
            store.write_rows(list(halves(f"r{i}", "champion", "1", i * 60.0, 5.0, 200, 1)))
        assert refresh(store, "fraud") == 30  # first refresh: every bucket of the log
        assert refresh(store, "fraud") == 0
        store.write_rows(list(halves("new", "champion", "1", 5.0, 5.0, 200, 1)))
        store.record_feedback("r20", 1)  # a late label for an old request: folded in, not recomputed
        assert refresh(store, "fraud") == 1


def test_a_write_between_a_refreshs_read_and_its_write_stays_marked_and_is_read_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bucket of a write that commits while a refresh computes is folded in from the refresh's
    reading (a tick right after counts every row committed before it) and stays marked (the next
    refresh adds the late write)."""
    with InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}") as store:
        store.write_rows(list(halves("a", "champion", "1", 1.0, 5.0, 200, 1)))
        refresh(store, "fraud")
        store.write_rows(list(halves("b", "champion", "1", 2.0, 5.0, 200, 1)))
        original = rollup_module.compute_sums

        def racing(*args, **kwargs):
            found = original(*args, **kwargs)
            store.write_rows(list(halves("c", "champion", "1", 3.0, 5.0, 200, 1)))  # commits here
            return found

        monkeypatch.setattr(rollup_module, "compute_sums", racing)
        assert refresh(store, "fraud") == 1
        monkeypatch.setattr(rollup_module, "compute_sums", original)
        with store.engine.connect() as connection:
            assert len(connection.execute(select(rollup_dirty.c.bucket)).all()) == 1
            stored = connection.execute(
                select(rollup.c.responses).where(rollup.c.span == BUCKET_SECONDS, rollup.c.arm == "champion")
            ).scalar_one()
        assert stored == 2  # a and b: what was committed before the refresh read the log
        assert refresh(store, "fraud") == 1
        assert_equal_to_full(store, T0, T0 + timedelta(seconds=60))
        with store.engine.connect() as connection:
            assert connection.execute(select(rollup_dirty.c.bucket)).all() == []


def test_a_mark_a_concurrent_refresh_took_is_not_folded_in_from_an_older_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two refreshes overlap: the later one folds in and removes the mark, a write marks the bucket
    again; the earlier one, reading from before either, must not take that new mark for its own."""
    with InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}") as store:
        store.write_rows(list(halves("a", "champion", "1", 1.0, 5.0, 200, 1)))
        refresh(store, "fraud")
        store.write_rows(list(halves("b", "champion", "1", 2.0, 5.0, 200, 1)))
        original = rollup_module.compute_sums
        calls = {"n": 0}

        def overtaken(*args, **kwargs):
            found = original(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == 1:  # the first refresh's reading is done; another one overtakes it
                refresh(store, "fraud")
                store.write_rows(list(halves("c", "champion", "1", 3.0, 5.0, 200, 1)))
            return found

        monkeypatch.setattr(rollup_module, "compute_sums", overtaken)
        refresh(store, "fraud")
        monkeypatch.setattr(rollup_module, "compute_sums", original)
        with store.engine.connect() as connection:
            assert len(connection.execute(select(rollup_dirty.c.bucket)).all()) == 1, "c's mark was lost"
        assert_equal_to_full(store, T0, T0 + timedelta(seconds=60))


def insert_for(connection):
    return sqlite_insert if connection.dialect.name == "sqlite" else postgresql_insert


def _folded(store: InferenceLogStore) -> dict[str, int]:
    with store.engine.connect() as connection:
        rows = connection.execute(select(rollup_folded_labels.c.request_id, rollup_folded_labels.c.label))
        return dict(rows.all())


def _label_marks(store: InferenceLogStore) -> list[str]:
    with store.engine.connect() as connection:
        return list(connection.execute(select(rollup_label_marks.c.request_id)).scalars())


def _busy_bucket(store: InferenceLogStore, n: int = 50) -> None:
    """``n`` requests in the first 10-s bucket after T0 (labels r0…), summed by a refresh."""
    rows = [row for i in range(n) for row in halves(f"r{i}", "champion", "1", 0.1 * i, 5.0, 200, i % 2)]
    store.write_rows(rows)
    assert refresh(store, "fraud") >= 1


WINDOW = (T0 - timedelta(seconds=10), T0 + timedelta(seconds=60))


def test_a_late_label_is_folded_in_without_recomputing_its_bucket(store_url: str) -> None:
    """A day-late label costs its own instance, not its bucket: no bucket is recomputed (each
    was, with the whole bucket re-read, when labels marked their bucket)."""
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        store.record_feedback_many([Feedback("r3", 1), Feedback("r4", 0)])
        assert refresh(store, "fraud") == 0
        assert _folded(store) == {"r3": 1, "r4": 0}
        assert _label_marks(store) == []
        assert_equal_to_full(store, *WINDOW)


def test_a_replaced_label_is_folded_from_the_label_the_sums_hold(store_url: str) -> None:
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        store.record_feedback("r3", 1)
        assert_equal_to_full(store, *WINDOW)
        store.record_feedback("r3", 0)  # replaced: the sums must lose the 1 and gain the 0
        assert refresh(store, "fraud") == 0
        assert _folded(store) == {"r3": 0}
        assert_equal_to_full(store, *WINDOW)
        ours = incremental_aggregate(store, "fraud", *WINDOW, versions={"champion": "1"})["champion"]
        assert ours.labeled == 1


def test_a_label_sent_again_unchanged_changes_nothing(store_url: str) -> None:
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        store.record_feedback("r3", 1)
        before = incremental_aggregate(store, "fraud", *WINDOW, versions={"champion": "1"})
        store.record_feedback("r3", 1)
        assert _label_marks(store) == ["r3"]
        assert refresh(store, "fraud") == 0
        assert _label_marks(store) == []
        after = incremental_aggregate(store, "fraud", *WINDOW, versions={"champion": "1"})
        assert after == before
        assert after["champion"].labeled == 1


def test_a_label_before_its_request_is_folded_in_once_the_request_is_logged(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A label whose request is not logged keeps its mark (a refresh in between leaves it); once
    the request arrives, the label counts. After the grace its mark is dropped, and the write that
    logs the request marks the label again."""
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        store.record_feedback_many([Feedback("early", 1), Feedback("later", 0)])
        assert refresh(store, "fraud") == 0
        assert sorted(_label_marks(store)) == ["early", "later"]  # kept: no row yet
        store.write_rows(list(halves("early", "champion", "1", 2.0, 5.0, 200, 1)))
        assert_equal_to_full(store, *WINDOW)
        assert _folded(store)["early"] == 1
        monkeypatch.setattr(rollup_labels_module, "ORPHAN_GRACE_S", -1.0)  # every orphan is old now
        refresh(store, "fraud")
        assert _label_marks(store) == []  # the orphan's mark was dropped
        store.write_rows(list(halves("later", "champion", "1", 3.0, 5.0, 200, 1)))
        assert _label_marks(store) == ["later"]  # marked again by the write that logged it
        assert_equal_to_full(store, *WINDOW)
        assert _folded(store)["later"] == 0
        full = aggregate(store, "fraud", *WINDOW, versions={"champion": "1"})["champion"]
        assert full.labeled == 2


def test_a_label_of_another_models_request_is_left_for_that_model(store_url: str) -> None:
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        other = InferenceRow("o1", 0, "other", T0, arm="champion", version="1", prediction=1, status_code=200)
        store.write_rows([other])
        store.record_feedback("o1", 1)
        refresh(store, "fraud")
        assert _label_marks(store) == ["o1"]
        refresh(store, "other")
        assert _label_marks(store) == []
        assert _folded(store) == {"o1": 1}


def test_labels_are_folded_a_page_at_a_time_past_other_models_marks(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollup_labels_module, "LABELS_PER_WRITE", 3)
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        others = [
            InferenceRow(f"o{i}", 0, "other", T0, arm="champion", version="1", prediction=1, status_code=200)
            for i in range(7)
        ]
        store.write_rows(others)
        # Sorted keys interleave: o0…o6 (another model's, a page and more) before r0…r9.
        labels = [Feedback(f"o{i}", 1) for i in range(7)] + [Feedback(f"r{i}", 1) for i in range(10)]
        store.record_feedback_many(labels)
        assert refresh(store, "fraud") == 0
        assert sorted(_label_marks(store)) == [f"o{i}" for i in range(7)]
        assert _folded(store) == {f"r{i}": 1 for i in range(10)}
        assert_equal_to_full(store, *WINDOW)


def test_a_label_gone_from_feedback_leaves_the_sums(store_url: str) -> None:
    """No API deletes a label, but the sums follow the table: a marked instance without a label
    loses the one it was folded with."""
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        store.record_feedback_many([Feedback("r3", 1), Feedback("r4", 1)])
        assert_equal_to_full(store, *WINDOW)
        with store.engine.begin() as connection:
            connection.execute(feedback.delete().where(feedback.c.request_id == "r3"))
            mark_labels(connection, insert_for(connection), [("r3", 0)])
        assert refresh(store, "fraud") == 0
        assert _folded(store) == {"r4": 1}
        assert_equal_to_full(store, *WINDOW)


def test_sums_from_before_the_folded_labels_are_rebuilt_once(store_url: str) -> None:
    """A database whose sums were kept before the folded labels existed has them empty: its sums
    are rebuilt on the first refresh instead of recomputing buckets as if nothing were labelled."""
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        store.record_feedback_many([Feedback(f"r{i}", 1) for i in range(5)])
        refresh(store, "fraud")
        with store.engine.begin() as connection:  # as create_all leaves such a database
            connection.execute(rollup_folded_labels.delete())
            connection.execute(rollup_folded_state.delete())
        store.write_rows(list(halves("b", "champion", "1", 6.0, 5.0, 200, 1)))  # marks the bucket
        assert refresh(store, "fraud") == 1
        assert _folded(store) == {f"r{i}": 1 for i in range(5)}
        assert_equal_to_full(store, *WINDOW)


def test_a_rebuild_takes_the_labels_stored_without_marks(store_url: str) -> None:
    """Labels written straight to the table (a bulk load, a database from before the label marks)
    are folded in by a rebuild, which resets the folded labels with the buckets."""
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        with store.engine.begin() as connection:
            connection.execute(
                feedback.insert(),
                [
                    {"request_id": f"r{i}", "instance_index": 0, "label": 1, "received_at": T0}
                    for i in range(7)
                ],
            )
        rebuild(store, "fraud")
        assert _folded(store) == {f"r{i}": 1 for i in range(7)}
        assert_equal_to_full(store, *WINDOW)


def test_a_label_folded_between_a_refreshs_reading_and_its_write_keeps_the_bucket_marked(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refresh A reads a marked bucket (with the labels folded so far); before it writes, another
    refresh folds a label of that bucket in. A must not take the mark with its older reading (the
    label would be lost from the sums while recorded as folded): the fold gave the mark a new
    generation, so A keeps it and the next refresh recomputes the bucket with the label."""
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        store.write_rows(list(halves("b", "champion", "1", 6.0, 5.0, 200, 1)))  # marks the bucket
        original = rollup_module.compute_sums

        def overtaken(*args, **kwargs):
            found = original(*args, **kwargs)
            store.record_feedback("r3", 1)
            # Another refresh's first step, between this one's reading and its write.
            rollup_module._fold_labels(store, inference_log.name, "fraud", inference_log)
            return found

        monkeypatch.setattr(rollup_module, "compute_sums", overtaken)
        assert refresh(store, "fraud") == 1
        monkeypatch.setattr(rollup_module, "compute_sums", original)
        assert _folded(store) == {"r3": 1}
        with store.engine.connect() as connection:
            marked = connection.execute(select(rollup_dirty.c.bucket)).scalars().all()
        assert marked == [bucket_of(T0)], "the bucket's mark was taken with a reading older than the label"
        assert_equal_to_full(store, *WINDOW)


def test_a_label_written_while_a_refresh_reads_its_bucket_is_counted_once(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recomputed bucket takes the folded labels, not the current ones: a label that commits
    while the bucket is read is then added once, by its own mark (a recomputation reading
    ``feedback`` would count it, and the mark would add it a second time)."""
    with InferenceLogStore(store_url) as store:
        _busy_bucket(store)
        store.write_rows(list(halves("b", "champion", "1", 6.0, 5.0, 200, 1)))  # marks the bucket
        original = rollup_module.compute_sums

        def labelled_meanwhile(*args, **kwargs):
            store.record_feedback("r3", 1)  # commits after this refresh folded the labels
            return original(*args, **kwargs)

        monkeypatch.setattr(rollup_module, "compute_sums", labelled_meanwhile)
        assert refresh(store, "fraud") == 1
        monkeypatch.setattr(rollup_module, "compute_sums", original)
        assert _label_marks(store) == ["r3"]
        assert_equal_to_full(store, *WINDOW)
        ours = incremental_aggregate(store, "fraud", *WINDOW, versions={"champion": "1"})["champion"]
        assert ours.labeled == 1


@given(st.integers(0, 10_000), st.integers(0, 20_000))
def test_cover_is_exact_and_short(start: int, length: int) -> None:
    start, end = start * 10, (start + length) * 10
    pieces = cover(start, end)
    at = start
    for span, bucket in pieces:
        assert bucket == at
        assert bucket % span == 0
        at += span
    assert at == end
    assert len(pieces) <= 2 * (5 + 9 + 5 + 23) + (end - start) // 86400 + 1


@given(st.lists(st.floats(1e-3, 1e5), min_size=1, max_size=300), st.floats(0, 100))
def test_histogram_percentiles_are_within_the_stated_accuracy(values: list[float], q: float) -> None:
    from collections import Counter

    from mlcanary.telemetry.latency_histogram import LOG_GAMMA

    histogram = LatencyHistogram()
    histogram.add(Counter(math.floor(math.log(v) / LOG_GAMMA) for v in values))
    (estimate,) = histogram.percentiles([q]) or [math.nan]
    truth = float(np.percentile(values, q))
    assert abs(estimate - truth) <= A * truth * (1 + 1e-9)


@given(st.dictionaries(st.integers(-500, 500), st.integers(1, 1_000)), st.sampled_from([1, -1]))
def test_adding_a_scaled_histogram_is_adding_its_counts(counts: dict[int, int], sign: int) -> None:
    base = LatencyHistogram({0: 7, 3: 1})
    expected = dict(base.counts)
    for index, count in counts.items():
        expected[index] = expected.get(index, 0) + sign * count
    base.add_scaled(LatencyHistogram(dict(counts)), sign)
    assert base.counts == expected


@given(
    st.lists(st.dictionaries(st.integers(-500, 500), st.integers(1, 10**12)) | st.none(), max_size=8),
    st.dictionaries(st.integers(-50, 50), st.integers(1, 9)),
)
def test_histograms_added_from_their_json_at_once_are_added_one_by_one(
    parts: list[dict[int, int] | None], start: dict[int, int]
) -> None:
    expected = LatencyHistogram(dict(start))
    for part in parts:
        expected.add(part or {})
    merged = LatencyHistogram(dict(start))
    merged.add_json(None if part is None else LatencyHistogram(part).to_json() for part in parts)
    assert merged.counts == expected.counts


@pytest.mark.parametrize("text", ["[[1,2],[3]]", '{"1": 2}', "[[1,2.5]]", "[[1,x]]"])
def test_text_that_is_not_a_histograms_pairs_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a latency histogram"):
        LatencyHistogram().add_json([text])


@pytest.mark.parametrize("offset_s", [-0.0004, -0.000001, 0.0, 0.0004])
def test_a_request_a_fraction_of_a_millisecond_from_a_bucket_edge_counts_on_its_side(
    store_url: str, offset_s: float
) -> None:
    """SQLite parses a time's fraction to the millisecond, rounding (09.9996 → 10): the bucket of a
    row must come from its whole seconds, as the time ranges compare it."""
    edge = T0.replace(second=10, microsecond=0)
    at = (edge - T0).total_seconds() + offset_s
    with InferenceLogStore(store_url) as store:
        store.write_rows(list(halves("edge", "champion", "1", at, 5.0, 200, 1)))
        store.write_rows(list(halves("after", "champion", "1", at + 3.0, 5.0, 200, 1)))
        for since, until in ((edge - timedelta(seconds=10), edge), (edge, edge + timedelta(seconds=10))):
            kwargs = {"versions": {"champion": "1"}}
            ours = incremental_aggregate(store, "fraud", since, until, **kwargs)
            full = aggregate(store, "fraud", since, until, **kwargs)
            count = ours["champion"].requests if "champion" in ours else 0
            assert count == (full["champion"].requests if "champion" in full else 0)
