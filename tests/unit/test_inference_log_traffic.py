"""The tick benchmark's traffic (``benchmarks/inference_log/tick.py``): every window of a run has
the large window's rate, and each tick's late labels name the same number of distinct logged
requests, ``label_lag`` old, whatever the window's length."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.inference_log.__main__ import main, tick_markdown
from benchmarks.inference_log.tick import (
    END,
    LATE_LABELS_PER_TICK,
    WINDOW,
    TickResult,
    Traffic,
    _new_traffic,
    generate,
    run_tick,
)
from mlcanary.telemetry.rollup_tables import BUCKET_SECONDS
from mlcanary.telemetry.store import InferenceLogStore, inference_log


def test_the_windows_of_a_run_share_the_large_windows_rate_and_the_labels_lag() -> None:
    small, large = Traffic.of(10_000, 10_000_000, 10_000), Traffic.of(10_000_000, 10_000_000, 10_000)
    assert small.rate == large.rate == pytest.approx(10_000_000 / WINDOW.total_seconds(), rel=0.02)
    assert small.tick == large.tick
    assert small.label_lag == large.label_lag == small.window * 0.75


def test_every_window_of_a_run_starts_at_the_same_point_of_a_bucket() -> None:
    small, large = Traffic.of(10_000, 10_000_000, 10_000), Traffic.of(10_000_000, 10_000_000, 10_000)
    assert small.window == timedelta(seconds=170)  # 172.8 s at 10M / 48 h, rounded to whole buckets
    assert large.window == timedelta(seconds=170_000)
    starts = [(END - t.window).timestamp() % BUCKET_SECONDS for t in (small, large)]
    assert starts[0] == pytest.approx(starts[1])


def test_a_window_that_would_start_elsewhere_in_its_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of the small window"):
        Traffic.of(15_000, 10_000_000, 10_000)


@pytest.mark.parametrize(("n", "rounds"), [(2_000, 1), (20_000, 1), (2_000, 4)])
def test_a_ticks_late_labels_name_distinct_requests_logged_label_lag_before(
    tmp_path: Path, n: int, rounds: int
) -> None:
    traffic = Traffic.of(n, 20_000, 2_000)
    sent: list[str] = []
    with InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}") as store:
        generate(store, n, traffic.window)
        record = store.record_feedback_many

        def recording(items, *, now):  # what the tick sends, before the store merges re-sent labels
            items = list(items)
            sent[:] = [item.request_id for item in items]  # the last tick's
            return record(items, now=now)

        store.record_feedback_many = recording  # type: ignore[method-assign]
        rng = random.Random(0)
        for round_index in range(rounds):
            now = _new_traffic(store, round_index, traffic, rng)
        with store.engine.connect() as connection:
            times = sorted(
                connection.execute(
                    select(inference_log.c.received_at).where(inference_log.c.request_id.in_(sent))
                ).scalars()
            )
    assert now == END + traffic.tick * rounds
    # 300 distinct logged requests, each logged just before now − lag: generated ones, or after
    # enough ticks (the small window's fourth: its lag reaches 2.5 ticks past the window) earlier
    # ticks' own.
    assert len(set(sent)) == len(sent) == len(times) == LATE_LABELS_PER_TICK
    assert all(rid.startswith("t" if rounds > 1 else "b") for rid in sent)
    newest = now - traffic.label_lag
    assert times[-1] < newest
    assert newest - times[0] < timedelta(seconds=(LATE_LABELS_PER_TICK + 1) / traffic.rate)


def test_a_run_whose_labels_would_precede_the_window_is_refused(tmp_path: Path) -> None:
    long_lag = Traffic(10_000, 10.0, timedelta(seconds=990))  # 9,900 requests back: no 300 before
    with pytest.raises(ValueError, match="late labels"):
        run_tick("sqlite", f"sqlite:///{tmp_path / 'log.db'}", 10_000, 5, lambda _m: None, long_lag)


def _result(rows: int, tick_ms: float, *, again: bool = False) -> TickResult:
    window_s = rows / Traffic.of(rows, 10_000_000, 10_000).rate
    return TickResult(
        "sqlite", rows, window_s, 0.1, 0.2, tick_ms / 1000, [tick_ms / 1000], 1.0, True, again=again
    )


def test_the_goals_ratio_is_against_the_first_small_window_and_its_repeat_is_the_noise_floor() -> None:
    results = [_result(10_000, 20), _result(10_000, 23, again=True), _result(10_000_000, 21)]
    lines = tick_markdown(results, 10_000, 10_000_000)
    goal = next(line for line in lines if line.startswith("| tick at 10,000,000 within 10 %"))
    assert "| 21 ms | 20 ms | 1.05 | yes |" in goal  # not 21 against the repeat's 23 (0.91)
    floor = next(line for line in lines if line.startswith("| (noise floor"))
    assert "| 23 ms | 20 ms | 1.15 | – |" in floor
    assert any(line.startswith("| sqlite | 10,000 (again) |") for line in lines)


def test_a_large_window_over_ten_percent_slower_misses_the_goal() -> None:
    lines = tick_markdown([_result(10_000, 20), _result(10_000_000, 22.4)], 10_000, 10_000_000)
    goal = next(line for line in lines if line.startswith("| tick at 10,000,000 within 10 %"))
    assert goal.endswith("| 1.12 | **no** |")
    assert not any(line.startswith("| (noise floor") for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "10000", "--small", "10000"], "larger than --small"),
        (["--rows", "25000", "--small", "10000"], "multiple of --small"),
    ],
)
def test_window_sizes_that_cannot_be_compared_are_refused_before_any_work(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "tick", "--backends", "sqlite", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
