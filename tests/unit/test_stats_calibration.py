"""Calibration and power of the judge's anytime-valid tests, by seeded simulation of whole canaries.

Each run simulates the cumulative per-arm counts a monitor would read at every tick (Poisson arrivals,
10 req/s split 80/20), and the judge is applied at every tick. A/A runs (identical arms) must roll
back in at most α of runs over ALL ticks; the claim is checked with 2,000 runs against
α + 3·sqrt(α(1 − α)/runs). The naive fixed-horizon z-test peeked at on the same streams must fail that
bound by far, which shows the simulation is able to expose peeking.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from mlcanary.rollout.stats import BatchComparison, compare_means_batch, compare_proportions_batch

ALPHA = 0.05
RUNS = 2_000
CHAMPION_RPS, CANDIDATE_RPS = 8.0, 2.0
FIXED_HORIZON_CANARY_REQUESTS = 334  # 1 % → 3 %, α 0.05, power 0.8, 80/20 (shared/reference/judging.md)


def _bound(runs: int, alpha: float = ALPHA) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def _error_streams(
    seed: int, runs: int, looks: int, tick_s: float, p_champion: float, p_candidate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (n_b, x_b, n_c, x_c), shape (runs, looks): requests and errors per arm at each tick."""
    rng = np.random.default_rng(seed)
    k_b = rng.poisson(CHAMPION_RPS * tick_s, (runs, looks))
    k_c = rng.poisson(CANDIDATE_RPS * tick_s, (runs, looks))
    x_b = rng.binomial(k_b, p_champion)
    x_c = rng.binomial(k_c, p_candidate)
    return k_b.cumsum(axis=1), x_b.cumsum(axis=1), k_c.cumsum(axis=1), x_c.cumsum(axis=1)


def _log_latency_streams(
    seed: int, runs: int, looks: int, tick_s: float, ratio: float, sigma: float = 0.5
) -> tuple[np.ndarray, ...]:
    """Cumulative (n, mean, variance) of log-latency per arm; lognormal latencies, median 50 ms on the
    champion and 50·ratio ms on the candidate. Drawn through exact Gaussian sufficient statistics per
    tick (a 48 h canary at 10 req/s is 1.7 M requests per run)."""
    rng = np.random.default_rng(seed)
    arrays: list[np.ndarray] = []
    for rps, mu in ((CHAMPION_RPS, math.log(50.0)), (CANDIDATE_RPS, math.log(50.0 * ratio))):
        k = rng.poisson(rps * tick_s, (runs, looks))
        tick_mean = np.where(k > 0, rng.normal(mu, sigma / np.sqrt(np.maximum(k, 1))), 0.0)
        within = np.where(k > 1, sigma**2 * rng.chisquare(np.maximum(k - 1, 1)), 0.0)
        n = k.cumsum(axis=1)
        total = (k * tick_mean).cumsum(axis=1)
        total_sq = (within + k * tick_mean**2).cumsum(axis=1)
        mean = np.where(n > 0, total / np.maximum(n, 1), 0.0)
        variance = np.where(n > 1, (total_sq - total * mean) / np.maximum(n - 1, 1), 0.0)
        arrays += [n, mean, np.maximum(variance, 0.0)]
    return tuple(arrays)


def _naive_peeking_fail(n_b: np.ndarray, x_b: np.ndarray, n_c: np.ndarray, x_c: np.ndarray) -> np.ndarray:
    """One-sided pooled two-proportion z-test at α, as if each tick were the planned final analysis."""
    pooled = (x_b + x_c) / np.maximum(n_b + n_c, 1)
    se = np.sqrt(pooled * (1 - pooled) * (1 / np.maximum(n_b, 1) + 1 / np.maximum(n_c, 1)))
    diff = x_c / np.maximum(n_c, 1) - x_b / np.maximum(n_b, 1)
    z = np.divide(diff, se, out=np.zeros_like(se), where=se > 0)
    return z > NormalDist().inv_cdf(1 - ALPHA)


def _first(verdicts: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Per run: whether ``which`` ever happened, and the tick index of the first time."""
    hits = verdicts == which
    return hits.any(axis=1), hits.argmax(axis=1)


@pytest.mark.parametrize(
    ("tick_s", "looks", "min_samples"),
    [
        pytest.param(900, 192, 30, id="every-15-min-for-48h"),
        pytest.param(5, 720, 0, id="every-5-s-for-1h-from-the-first-request"),
    ],
)
def test_aa_error_rate_rolls_back_at_most_alpha(tick_s: int, looks: int, min_samples: int) -> None:
    n_b, x_b, n_c, x_c = _error_streams(7, RUNS, looks, tick_s, 0.01, 0.01)
    ours = compare_proportions_batch(n_b, x_b, n_c, x_c, direction="increase_is_bad", min_samples=min_samples)
    rolled_back, _ = _first(ours.verdicts, "fail")
    naive = _naive_peeking_fail(n_b, x_b, n_c, x_c).any(axis=1)
    print(
        f"A/A errors tick={tick_s}s: ours {rolled_back.mean():.4f}, naive peeking z-test {naive.mean():.4f}"
    )
    assert rolled_back.mean() <= _bound(RUNS)
    assert naive.mean() > 3 * ALPHA


@pytest.mark.parametrize(
    ("tick_s", "looks"),
    [pytest.param(900, 192, id="every-15-min-for-48h"), pytest.param(10, 720, id="every-10-s-for-2h")],
)
def test_aa_log_latency_rolls_back_at_most_alpha(tick_s: int, looks: int) -> None:
    arrays = _log_latency_streams(11, RUNS, looks, tick_s, ratio=1.0)
    result = compare_means_batch(*arrays, direction="increase_is_bad", log_scale=True)
    rolled_back, _ = _first(result.verdicts, "fail")
    print(f"A/A log-latency tick={tick_s}s: ours {rolled_back.mean():.4f}")
    assert rolled_back.mean() <= _bound(RUNS)


def test_harm_exactly_at_the_tolerance_is_neither_passed_nor_failed_beyond_alpha() -> None:
    """1 % vs 1.5 % with a 0.5 pp floor: both a pass and a fail are errors here."""
    n_b, x_b, n_c, x_c = _error_streams(13, RUNS, 720, 10, 0.01, 0.015)
    result = compare_proportions_batch(n_b, x_b, n_c, x_c, direction="increase_is_bad", tolerance=0.005)
    passed, _ = _first(result.verdicts, "pass")
    failed, _ = _first(result.verdicts, "fail")
    print(f"harm at the floor: passed {passed.mean():.4f}, failed {failed.mean():.4f}")
    assert passed.mean() <= _bound(RUNS)
    assert failed.mean() <= _bound(RUNS)


def _detection(result: BatchComparison, n_candidate: np.ndarray) -> tuple[float, float]:
    detected, first = _first(result.verdicts, "fail")
    requests = n_candidate[np.arange(n_candidate.shape[0]), first][detected]
    return float(detected.mean()), float(np.median(requests)) if requests.size else math.inf


def test_error_rate_1_to_3_percent_is_detected_fast() -> None:
    runs = 1_000
    n_b, x_b, n_c, x_c = _error_streams(17, runs, 720, 10, 0.01, 0.03)
    result = compare_proportions_batch(n_b, x_b, n_c, x_c, direction="increase_is_bad")
    rate, median = _detection(result, n_c)
    print(f"1 % → 3 % errors, tick 10 s: detected {rate:.3f}, median canary requests {median:.0f}")
    assert rate >= 0.9
    assert median < 2.5 * FIXED_HORIZON_CANARY_REQUESTS


def test_latency_plus_30_percent_is_detected() -> None:
    runs = 1_000
    arrays = _log_latency_streams(19, runs, 360, 10, ratio=1.3)
    result = compare_means_batch(*arrays, direction="increase_is_bad", log_scale=True)
    rate, median = _detection(result, arrays[3])
    print(f"latency +30 %, tick 10 s: detected {rate:.3f}, median canary requests {median:.0f}")
    assert rate >= 0.9
    assert median < 200


def test_latency_plus_5_percent_within_10_percent_tolerance_is_not_failed() -> None:
    arrays = _log_latency_streams(23, RUNS, 192, 900, ratio=1.05)
    result = compare_means_batch(
        *arrays, direction="increase_is_bad", log_scale=True, relative_tolerance=0.10
    )
    failed, _ = _first(result.verdicts, "fail")
    passed_at_end = (result.verdicts[:, -1] == "pass").mean()
    print(f"latency +5 % vs 10 % floor: failed {failed.mean():.4f}, passing after 48 h {passed_at_end:.3f}")
    assert failed.mean() <= _bound(RUNS)
    assert passed_at_end >= 0.9


@pytest.mark.slow
def test_aa_p95_exceedance_check_rolls_back_at_most_alpha() -> None:
    """P95 as a proportion: share of candidate requests above the champion's cumulative P95 at each tick."""
    runs, looks, tick_s = 1_000, 60, 10
    rng = np.random.default_rng(29)
    per_b, per_c = int(CHAMPION_RPS * tick_s), int(CANDIDATE_RPS * tick_s)
    champion = rng.lognormal(math.log(50.0), 0.5, (runs, looks * per_b))
    candidate = rng.lognormal(math.log(50.0), 0.5, (runs, looks * per_c))
    n_b, x_b, n_c, x_c = (np.zeros((runs, looks), dtype=np.int64) for _ in range(4))
    for look in range(looks):
        m_b, m_c = (look + 1) * per_b, (look + 1) * per_c
        p95 = np.quantile(champion[:, :m_b], 0.95, axis=1, keepdims=True)
        n_b[:, look], n_c[:, look] = m_b, m_c
        x_b[:, look] = (champion[:, :m_b] > p95).sum(axis=1)
        x_c[:, look] = (candidate[:, :m_c] > p95).sum(axis=1)
    result = compare_proportions_batch(n_b, x_b, n_c, x_c, direction="increase_is_bad")
    rolled_back, _ = _first(result.verdicts, "fail")
    print(f"A/A P95 exceedance, tick 10 s: ours {rolled_back.mean():.4f}")
    assert rolled_back.mean() <= _bound(runs)
