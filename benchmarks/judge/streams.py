"""Simulated traffic of one canary, bucket by bucket, for both arms (numpy, vectorised over buckets).

A :class:`Stream` holds, per time bucket and arm, what the inference log would aggregate: requests,
5xx, the sum and sum of squares of log latency, requests slower than the champion's P95, positive
predictions, labelled outcomes (four confusion-matrix cells, for the requests that get a label),
and the bucket's median and P99 latency (for the baselines that read percentiles per interval).

Everything is drawn exactly from the scenario's truth without generating single requests:
counts are Poisson / binomial / multinomial; the sum and sum of squares of n log-normal latencies
come from the sample mean (normal) and the sample variance (scaled χ²), which are independent; a
bucket's q-quantile is the inverse CDF of a Beta(⌈qn⌉, n + 1 − ⌈qn⌉) draw (the order statistic of n
uniforms). Latency is the same for 2xx and 5xx responses; only 2xx responses carry a prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmarks.judge.truth import ArmTruth, Latency, Scenario

LABEL_SHARE = 0.5
"""Share of successful requests whose ground-truth label eventually arrives (as in the demo)."""


@dataclass
class ArmStream:
    """Per-bucket arrays of one arm (all of shape ``(buckets,)``)."""

    requests: np.ndarray
    errors: np.ndarray
    log_sum: np.ndarray
    log_sumsq: np.ndarray
    slow: np.ndarray
    positives: np.ndarray
    cells: np.ndarray  # (buckets, 4): labelled tp, fp, fn, tn
    p50: np.ndarray
    p99: np.ndarray


@dataclass
class Stream:
    """Both arms of one simulated canary at a fixed candidate share; ``baseline`` (when asked for) is
    a third arm running the champion's model at the candidate's rate, as Kayenta's analysis wants
    (a baseline cluster the size of the canary)."""

    dt: float
    champion: ArmStream
    candidate: ArmStream
    baseline: ArmStream | None = None

    @property
    def buckets(self) -> int:
        return len(self.champion.requests)


def _component_sums(
    rng: np.random.Generator, k: np.ndarray, mu: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Σx and Σx² of ``k`` draws of N(mu, sigma²), per bucket."""
    safe = np.maximum(k, 1)
    mean = rng.normal(mu, sigma / np.sqrt(safe))
    spread = sigma * sigma * rng.chisquare(np.maximum(k - 1, 1)) * (k > 1)
    total = np.where(k > 0, k * mean, 0.0)
    return total, np.where(k > 0, spread + k * mean * mean, 0.0)


def _quantile(rng: np.random.Generator, latency: Latency, n: np.ndarray, q: float) -> np.ndarray:
    safe = np.maximum(n, 1)
    rank = np.clip(np.ceil(q * safe), 1, safe)
    u = rng.beta(rank, safe + 1 - rank)
    return np.where(n > 0, latency.quantile(u), np.nan)


def _arm(
    rng: np.random.Generator,
    truth: ArmTruth,
    rate: np.ndarray,
    cells: np.ndarray,
    slow_above: float,
) -> ArmStream:
    lat = truth.latency
    n = rng.poisson(rate)
    errors = rng.binomial(n, truth.error_rate)
    tail = rng.binomial(n, lat.tail_share) if lat.tail_share else np.zeros_like(n)
    body = n - tail
    body_sum, body_sq = _component_sums(rng, body, math.log(lat.median), lat.sigma)
    tail_sum, tail_sq = _component_sums(rng, tail, math.log(lat.median * lat.tail_factor), lat.tail_sigma)
    body_slow_p = 1 - Latency(median=lat.median, sigma=lat.sigma).cdf(np.array([slow_above]))[0]
    tail_slow_p = (
        1 - Latency(median=lat.median * lat.tail_factor, sigma=lat.tail_sigma).cdf(np.array([slow_above]))[0]
    )
    slow = rng.binomial(body, body_slow_p) + rng.binomial(tail, tail_slow_p)
    ok = n - errors
    positive_rate = cells[:, 0] + cells[:, 1]
    positives = rng.binomial(ok, positive_rate)
    labeled = rng.binomial(ok, LABEL_SHARE)
    labelled_cells = rng.multinomial(labeled, cells / cells.sum(axis=1, keepdims=True))
    return ArmStream(
        requests=n,
        errors=errors,
        log_sum=body_sum + tail_sum,
        log_sumsq=body_sq + tail_sq,
        slow=slow,
        positives=positives,
        cells=labelled_cells,
        p50=_quantile(rng, lat, n, 0.5),
        p99=_quantile(rng, lat, n, 0.99),
    )


def simulate(
    scenario: Scenario,
    *,
    total_rps: float,
    candidate_share: float,
    dt: float,
    buckets: int,
    horizon_s: float,
    seed: int,
    with_baseline: bool = False,
) -> Stream:
    """One canary's stream: ``total_rps`` split ``candidate_share`` to the candidate, ``buckets``
    buckets of ``dt`` seconds; drifting scenarios progress over ``horizon_s``. Deterministic in
    ``seed``."""
    rng = np.random.default_rng(seed)
    progress = (np.arange(buckets) + 0.5) * dt / horizon_s
    outcomes = [scenario.at(p) for p in progress]
    champion_cells = np.array([o[0].cells() for o in outcomes])
    candidate_cells = np.array([o[1].cells() for o in outcomes])
    slow_above = float(scenario.champion.latency.quantile(0.95))
    ones = np.ones(buckets)
    champion = _arm(
        rng, scenario.champion, ones * total_rps * (1 - candidate_share) * dt, champion_cells, slow_above
    )
    canary_rate = ones * total_rps * candidate_share * dt
    candidate = _arm(rng, scenario.candidate, canary_rate, candidate_cells, slow_above)
    baseline = (
        _arm(rng, scenario.champion, canary_rate, champion_cells, slow_above) if with_baseline else None
    )
    return Stream(dt=dt, champion=champion, candidate=candidate, baseline=baseline)
