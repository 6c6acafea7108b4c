"""The tick benchmark's traffic (``benchmarks/inference_log/tick.py``): every window of a run has
the large window's rate, and each tick's late labels name the same number of distinct logged
requests, ``label_lag`` old, whatever the window's length."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.inference_log.tick import (
    END,
    LATE_LABELS_PER_TICK,
    WINDOW,
    Traffic,
    _new_traffic,
    generate,
    run_tick,
)
from mlcanary.telemetry.store import InferenceLogStore, inference_log


def test_the_windows_of_a_run_share_the_large_windows_rate_and_the_labels_lag() -> None:
    small, large = Traffic.of(10_000, 10_000_000, 10_000), Traffic.of(10_000_000, 10_000_000, 10_000)
    assert small.rate == large.rate == pytest.approx(10_000_000 / WINDOW.total_seconds())
    assert large.window == WINDOW
    assert small.window.total_seconds() == pytest.approx(172.8)
    assert small.tick == large.tick
    assert small.label_lag == large.label_lag == small.window * 0.75


@pytest.mark.parametrize("n", [2_000, 20_000])
def test_a_ticks_late_labels_name_distinct_requests_logged_label_lag_before(tmp_path: Path, n: int) -> None:
    traffic = Traffic.of(n, 20_000, 2_000)
    sent: list[str] = []
    with InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}") as store:
        generate(store, n, traffic.window)
        record = store.record_feedback_many

        def recording(items, *, now):  # what the tick sends, before the store merges re-sent labels
            items = list(items)
            sent.extend(item.request_id for item in items)
            return record(items, now=now)

        store.record_feedback_many = recording  # type: ignore[method-assign]
        now = _new_traffic(store, 0, traffic, random.Random(0))
        with store.engine.connect() as connection:
            times = sorted(
                connection.execute(
                    select(inference_log.c.received_at).where(inference_log.c.request_id.in_(sent))
                ).scalars()
            )
    assert now == END + traffic.tick
    # 300 distinct logged requests, each logged just before now − lag.
    assert len(set(sent)) == len(sent) == len(times) == LATE_LABELS_PER_TICK
    newest = now - traffic.label_lag
    assert times[-1] < newest
    assert newest - times[0] < timedelta(seconds=(LATE_LABELS_PER_TICK + 1) / traffic.rate)


def test_a_run_whose_labels_would_miss_the_window_is_refused(tmp_path: Path) -> None:
    short_lag = Traffic(10_000, 10.0, timedelta(seconds=100))  # 5 ticks of 100 s reach past the lag
    with pytest.raises(ValueError, match="late labels"):
        run_tick("sqlite", f"sqlite:///{tmp_path / 'log.db'}", 10_000, 5, lambda _m: None, short_lag)
