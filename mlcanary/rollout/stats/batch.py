"""Vectorised comparisons of many pairs of arms at once (the calibration tests and the judge benchmark run
thousands of simulated canaries through these)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlcanary.rollout.stats.summaries import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    BatchComparison,
    Direction,
    FloatArray,
)
from mlcanary.rollout.stats.verdict import options, verdicts


def _as_counts(name: str, values: ArrayLike) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.dtype.kind not in "iu" or np.any(array < 0):
        raise ValueError(f"{name} must be non-negative integers")
    return array.astype(np.int64)


def _as_floats(name: str, values: ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _proportion_parts(
    n_b: NDArray[np.int64], x_b: NDArray[np.int64], n_c: NDArray[np.int64], x_c: NDArray[np.int64]
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    rate_b = x_b / np.maximum(n_b, 1)
    rate_c = x_c / np.maximum(n_c, 1)
    # An empty arm borrows the other's rate so that Δ̂ reads 0 ("no evidence") rather than ± a rate.
    rate_b, rate_c = np.where(n_b > 0, rate_b, rate_c), np.where(n_c > 0, rate_c, rate_b)
    laplace_b = (x_b + 1.0) / (n_b + 2.0)
    laplace_c = (x_c + 1.0) / (n_c + 2.0)
    laplace_pool = (x_b + x_c + 1.0) / (n_b + n_c + 2.0)
    pooled_var = laplace_pool * (1.0 - laplace_pool)
    var_b = np.maximum(laplace_b * (1.0 - laplace_b), pooled_var)
    var_c = np.maximum(laplace_c * (1.0 - laplace_c), pooled_var)
    return rate_b, var_b, rate_c, var_c, pooled_var


def _mean_parts(
    n_b: NDArray[np.int64], var_b: FloatArray, n_c: NDArray[np.int64], var_c: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    dof = n_b + n_c - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (np.maximum(n_b - 1, 0) * var_b + np.maximum(n_c - 1, 0) * var_c) / dof
    pooled = np.where(dof > 0, pooled, 0.0)
    return np.maximum(var_b, pooled), np.maximum(var_c, pooled), pooled


def compare_proportions_batch(
    champion_n: ArrayLike,
    champion_successes: ArrayLike,
    candidate_n: ArrayLike,
    candidate_successes: ArrayLike,
    *,
    direction: Direction,
    tolerance: float = 0.0,
    relative_tolerance: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    effect_size: float | None = None,
    pass_tolerance: float | None = None,
    pass_relative_tolerance: float | None = None,
) -> BatchComparison:
    """:func:`compare` for many proportion pairs at once (same arithmetic), e.g. for simulations.

    Arrays broadcast together; counts must be non-negative integers with successes <= n.
    """
    opts = options(
        direction,
        tolerance,
        relative_tolerance,
        alpha,
        min_samples,
        effect_size,
        log_scale=False,
        pass_tolerance=pass_tolerance,
        pass_relative_tolerance=pass_relative_tolerance,
    )
    n_b, x_b, n_c, x_c = np.broadcast_arrays(
        _as_counts("champion_n", champion_n),
        _as_counts("champion_successes", champion_successes),
        _as_counts("candidate_n", candidate_n),
        _as_counts("candidate_successes", candidate_successes),
    )
    if np.any(x_b > n_b) or np.any(x_c > n_c):
        raise ValueError("successes must not exceed n")
    rate_b, var_b, rate_c, var_c, pooled = _proportion_parts(n_b, x_b, n_c, x_c)
    return verdicts(
        n_b, rate_b, var_b, n_c, rate_c, var_c, pooled, opts, min_n=1, log_scale=False, bounded=True
    )


def compare_means_batch(
    champion_n: ArrayLike,
    champion_mean: ArrayLike,
    champion_variance: ArrayLike,
    candidate_n: ArrayLike,
    candidate_mean: ArrayLike,
    candidate_variance: ArrayLike,
    *,
    direction: Direction,
    tolerance: float = 0.0,
    relative_tolerance: float = 0.0,
    log_scale: bool = False,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    effect_size: float | None = None,
    pass_tolerance: float | None = None,
    pass_relative_tolerance: float | None = None,
) -> BatchComparison:
    """:func:`compare` for many mean pairs at once (same arithmetic), e.g. for simulations.

    Arrays broadcast together; variances are sample variances (ddof = 1), finite and >= 0.
    """
    opts = options(
        direction,
        tolerance,
        relative_tolerance,
        alpha,
        min_samples,
        effect_size,
        log_scale=log_scale,
        pass_tolerance=pass_tolerance,
        pass_relative_tolerance=pass_relative_tolerance,
    )
    n_b, m_b, s_b, n_c, m_c, s_c = np.broadcast_arrays(
        _as_counts("champion_n", champion_n),
        _as_floats("champion_mean", champion_mean),
        _as_floats("champion_variance", champion_variance),
        _as_counts("candidate_n", candidate_n),
        _as_floats("candidate_mean", candidate_mean),
        _as_floats("candidate_variance", candidate_variance),
    )
    if np.any(s_b < 0) or np.any(s_c < 0):
        raise ValueError("variances must be >= 0")
    var_b, var_c, pooled = _mean_parts(n_b, s_b, n_c, s_c)
    # Means of an arm without data are undefined: report 0 so the estimate stays finite.
    m_b = np.where(n_b > 0, m_b, m_c)
    m_c = np.where(n_c > 0, m_c, m_b)
    return verdicts(
        n_b, m_b, var_b, n_c, m_c, var_c, pooled, opts, min_n=2, log_scale=log_scale, bounded=False
    )
