"""The bootstrap interval of a percentile difference over interleaved blocks (benchmarks)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.block_bootstrap import percentile_difference


def _blocks(rng: np.random.Generator, shift: float, count: int = 15, size: int = 100) -> list[list[float]]:
    return [list(10.0 + shift + rng.gamma(2.0, 1.0, size)) for _ in range(count)]


def test_the_same_distribution_gives_an_interval_around_zero() -> None:
    rng = np.random.default_rng(1)
    found = percentile_difference(_blocks(rng, 0.0), _blocks(rng, 0.0), 50)
    assert found.low < 0.0 < found.high
    assert not found.excludes_zero
    assert found.low <= found.difference <= found.high


def test_a_real_shift_is_resolved_and_located() -> None:
    rng = np.random.default_rng(2)
    found = percentile_difference(_blocks(rng, 0.0), _blocks(rng, 1.0), 50)
    assert found.excludes_zero
    assert 0.6 < found.low < 1.0 < found.high < 1.4
    assert found.text().startswith("+")


def test_a_shift_the_whole_run_shares_is_not_mistaken_for_a_cost() -> None:
    # Each rotation has its own machine state (a noisy neighbour), common to both paths: resampling
    # rotations keeps it paired, so the interval stays around zero, however large the drift.
    rng = np.random.default_rng(3)
    drift = rng.normal(0.0, 5.0, 15)
    base = [list(10 + d + rng.gamma(2.0, 1.0, 100)) for d in drift]
    other = [list(10 + d + rng.gamma(2.0, 1.0, 100)) for d in drift]
    found = percentile_difference(base, other, 50)
    assert found.low < 0.0 < found.high
    assert found.high - found.low < 3.0


def test_the_same_seed_gives_the_same_interval() -> None:
    rng = np.random.default_rng(4)
    base, other = _blocks(rng, 0.0), _blocks(rng, 0.3)
    assert percentile_difference(base, other, 99) == percentile_difference(base, other, 99)


@pytest.mark.parametrize(
    ("base", "other", "q"),
    [
        ([[1.0]], [[2.0]], 50),
        ([[1.0], [2.0]], [[1.0]], 50),
        ([[1.0], []], [[1.0], [2.0]], 50),
        ([[1.0]] * 2, [[1.0]] * 2, 101),
    ],
)
def test_unusable_input_is_refused(base: list[list[float]], other: list[list[float]], q: float) -> None:
    with pytest.raises(ValueError, match=r"blocks|sample|q in"):
        percentile_difference(base, other, q)
