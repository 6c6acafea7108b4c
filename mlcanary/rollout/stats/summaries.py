"""What the anytime-valid tests take and give: the arms' summaries, one comparison's result and its
vectorised form, the shared defaults and argument checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Direction = Literal["increase_is_bad", "decrease_is_bad"]


Verdict = Literal["pass", "fail", "inconclusive"]


FloatArray = NDArray[np.float64]


DEFAULT_ALPHA = 0.05


DEFAULT_MIN_SAMPLES = 30


DEFAULT_STANDARDIZED_EFFECT = 0.2


"""Effect (in pooled standard deviations) the CS is tuned for when the tolerance is 0."""


LIMIT_EFFECT = 0.05


"""Distance from its limit at which a one-arm proportion test is tuned to fail fastest."""


LATENCY_FLOOR_MS = 1e-3


"""Latencies below this (1 µs) are raised to it before taking logs."""


def check_count(name: str, value: object) -> int:
    """``value`` as a non-negative int, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def check_finite(name: str, value: object) -> float:
    """``value`` as a finite float (bools refused), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


@dataclass(frozen=True)
class MeanSummary:
    """One arm's observations of a real-valued metric: count, mean and sample variance (ddof = 1).

    ``log_scale`` marks a summary of log-values (e.g. log latency); :func:`compare` then applies a
    relative tolerance r as the additive shift log(1 ± r). ``n == 0`` means no data (mean and variance
    0); with ``n == 1`` the variance is 0. Raises ValueError for a negative or non-integer ``n``, a
    non-finite mean or a negative or non-finite variance.
    """

    n: int
    mean: float
    variance: float
    log_scale: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_count("n", self.n))
        object.__setattr__(self, "mean", check_finite("mean", self.mean))
        variance = check_finite("variance", self.variance)
        if variance < 0:
            raise ValueError(f"variance must be >= 0, got {variance}")
        object.__setattr__(self, "variance", variance)

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float, *, log_scale: bool = False) -> MeanSummary:
        """From the count, sum and sum of squares that SQL aggregates return (Σx, Σx²).

        The variance (Σx² − (Σx)²/n)/(n − 1) is clipped at 0 because floating-point cancellation can
        push it slightly negative; it loses precision when the mean is huge relative to the spread,
        which is why latency is summarised on the log scale. Raises ValueError for inconsistent sums
        (non-finite, Σx² < 0, or non-zero sums with n = 0).
        """
        n = check_count("n", n)
        total = check_finite("total", total)
        total_sq = check_finite("total_sq", total_sq)
        if total_sq < 0:
            raise ValueError(f"total_sq must be >= 0, got {total_sq}")
        if n == 0:
            if total != 0 or total_sq != 0:
                raise ValueError("sums must be 0 when n is 0")
            return cls(0, 0.0, 0.0, log_scale)
        mean = total / n
        variance = max(0.0, (total_sq - total * mean) / (n - 1)) if n > 1 else 0.0
        return cls(n, mean, variance, log_scale)

    @classmethod
    def from_values(cls, values: ArrayLike, *, log_scale: bool = False) -> MeanSummary:
        """From raw observations (any 1-D array-like of finite numbers; empty gives n = 0)."""
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"values must be one-dimensional, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError("values must be finite")
        n = int(array.size)
        if n == 0:
            return cls(0, 0.0, 0.0, log_scale)
        variance = float(np.var(array, ddof=1)) if n > 1 else 0.0
        return cls(n, float(np.mean(array)), variance, log_scale)


@dataclass(frozen=True)
class ProportionSummary:
    """One arm's 0/1 observations: ``successes`` events (errors, correct answers, slow requests) in ``n``.

    "Success" only means "the event counted"; :func:`compare`'s ``direction`` says whether more is bad.
    Raises ValueError unless 0 <= successes <= n are integers.
    """

    n: int
    successes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_count("n", self.n))
        object.__setattr__(self, "successes", check_count("successes", self.successes))
        if self.successes > self.n:
            raise ValueError(f"successes ({self.successes}) must not exceed n ({self.n})")

    @property
    def rate(self) -> float:
        """successes / n, or 0.0 when there is no data."""
        return self.successes / self.n if self.n else 0.0


Summary = MeanSummary | ProportionSummary


@dataclass(frozen=True)
class ComparisonResult:
    """One check's outcome, with everything needed to explain it.

    ``estimate`` is Δ̂ = candidate − champion on the metric's scale (log scale for log-latency);
    ``[ci_low, ci_high]`` the confidence sequence for Δ at this look, each bound one-sided at level
    ``alpha`` (jointly 1 − 2α/(1 + α)); ``margin`` the tolerance as a value of Δ (signed towards the bad
    side). With a relative tolerance r on a linear scale the margin is ±(tolerance + r × the
    champion's estimated value) and the interval is Δ̂ ± the half-width of the CS of the contrast
    candidate − (1 ± r) × champion, so that comparing it with the margin is that contrast's test.
    ``pass_margin`` is the pass margin (the same as ``margin`` unless a wider one was given) and
    ``pass_bound`` the good-side bound of its own CS. A fail is exactly ``[ci_low, ci_high]`` beyond
    ``margin``, a pass exactly ``pass_bound`` within ``pass_margin``; ``p_value`` (always-valid,
    one-sided: the smaller of the one for Δ = margin and the one for Δ = pass_margin) is <= ``alpha``
    exactly when the verdict is pass or fail, unless an arm is below ``min_samples`` (or a proportion
    interval was clipped to [−1, 1]).
    """

    verdict: Verdict
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n_champion: int
    n_candidate: int
    test: str
    threshold: str
    margin: float
    champion_value: float
    candidate_value: float
    alpha: float
    pass_margin: float = 0.0
    pass_bound: float = 0.0


@dataclass(frozen=True)
class BatchComparison:
    """Vectorised :class:`ComparisonResult`: one entry per element of the input arrays."""

    verdicts: NDArray[np.str_]
    estimate: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    p_value: FloatArray
    margin: FloatArray
    pass_margin: FloatArray
    pass_bound: FloatArray


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float strictly between 0 and 1, or a ValueError."""
    value = check_finite("alpha", alpha)
    if not 0.0 < value < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {value}")
    return value


def log_latency_summary(latencies_ms: ArrayLike | Sequence[float]) -> MeanSummary:
    """Summary of log(latency in ms) for :func:`compare` (``log_scale=True``).

    Comparing means of logs compares geometric means, which is robust to the long right tail of
    latency, and makes a relative tolerance additive: +10 % is log(1.1). Latencies must be finite and
    >= 0; values below :data:`LATENCY_FLOOR_MS` are raised to it (timers round fast requests to 0).
    """
    array = np.asarray(latencies_ms, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"latencies must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError("latencies must be finite and >= 0")
    return MeanSummary.from_values(np.log(np.maximum(array, LATENCY_FLOOR_MS)), log_scale=True)


def exceedance_summary(latencies: ArrayLike | Sequence[float], threshold: float) -> ProportionSummary:
    """How many of ``latencies`` are strictly above ``threshold``, as a :class:`ProportionSummary`.

    A quantile check, e.g. P95, becomes a proportion check: take the champion's P95 as the threshold,
    summarise both arms with it and ``compare(champ, cand, direction="increase_is_bad", ...)``. The
    champion's share is about 5 % by construction; treating it as binomial overstates its variance,
    which roughly accounts for the threshold itself being estimated. A candidate whose P95 is worse
    sends more than 5 % of its requests above the champion's P95.
    """
    limit = check_finite("threshold", threshold)
    array = np.asarray(latencies, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"latencies must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("latencies must be finite")
    return ProportionSummary(int(array.size), int(np.count_nonzero(array > limit)))
