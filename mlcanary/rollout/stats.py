"""Anytime-valid two-sample tests for the canary judge (pure: no I/O, no clock, no globals).

The monitor looks at the same cumulative data again and again (every 15 min for 48 h, or every few
seconds in a demo). A fixed-horizon test peeked at that often rolls back about a third of good
releases, so every decision here comes from a **confidence sequence** (CS): a sequence of intervals
for the true difference Δ = candidate − champion whose lower bound stays below Δ at *every* look
simultaneously with probability at least 1 − α, and likewise its upper bound. Deciding "fail" only
when the CS has left the acceptable region therefore keeps the false-rollback rate at or below α
however often, and for however long, the judge looks; no history is needed because each look's CS
is valid on its own.

The CS is the normal-mixture (mixture-SPRT) boundary of Johari et al. (KDD 2017), written in terms of
the variance v = Var(Δ̂) = s_c²/n_c + s_b²/n_b so that it holds for unequal arms (80/20 splits)::

    Λ(θ) = sqrt(v / (v + τ²)) · exp(τ² (Δ̂ − θ)² / (2 v (v + τ²)))
    CS   = {θ : Λ(θ) < 1/α'} = Δ̂ ± sqrt(2 v (v + τ²)/τ² · log(sqrt((v + τ²)/v) / α'))

Every decision is one-sided (a fail needs only the lower bound, a pass only the upper one), so the
CS is taken at level α' = 2α/(1 + α) (≈ 0.095 for α = 0.05): each of its bounds then fails at any
look with probability at most α (see :func:`two_sided_level`), which is what bounds false rollbacks
and false promotions; the interval as a whole covers Δ at all looks with probability ≥ 1 − α'. That
needs about 15 % fewer observations to detect a harm than the plain two-sided level α, at no cost in
validity.

The always-valid p-value for H0: Δ = θ0 in the two-sided form is min(1, 1/Λ(θ0)); the one reported is
its one-sided counterpart min(1, 1/(2Λ(θ0) − 1)) for the side the estimate lies on, so that
p <= α exactly when the corresponding bound has crossed θ0. Either is valid at each look on its own; a
caller that keeps a running minimum across looks gets the monotone version pₙ = min(pₙ₋₁, ·).

**Mixing variance τ².** The boundary is tightest near one sample size; τ² places it where the
decision is hardest. For an effect δ the CS half-width reaches δ soonest when
τ² = δ² · r*/g(r*)², with g(r)² = 2 (1 + 1/r) (½ log(1 + r) + log(1/α')) minimised at r* (≈ 6.8 for
α = 0.05, giving τ ≈ 0.93 δ), see :func:`tuned_tau2`. δ is ``effect_size`` when given, else the
tolerance margin (for a pass or a fail the CS must come within the margin of the estimate), else —
with tolerance 0 — a standardised effect of 0.2 pooled standard deviations (about 1 % → 3 % errors).
The default depends on the data only through the pooled standard deviation, which settles within the
first few hundred observations; the calibration tests cover that choice.

**Variance.** The normal approximation with a plug-in variance is asymptotic (time-uniform CLT), so
the variance is regularised where plug-in estimates mislead at small counts:

* proportions (0/1 metrics: errors, accuracy, exceedances): each arm's per-observation variance is
  p̃(1 − p̃) with the Laplace/Agresti–Caffo rate p̃ = (x + 1)/(n + 2), never below the same quantity
  for the two arms pooled. An arm that has seen no event (0 errors in 50 requests) thus keeps a width
  of about 3/n (the rule of three) instead of collapsing to zero, and a small arm cannot look more
  certain than the pooled data allow. The point estimate Δ̂ uses the raw rates. The interval is
  clipped to [−1, 1], the range of a difference of proportions.
* means: each arm's sample variance, never below the pooled within-arm variance, for the same reason.

Simulation (``tests/unit/test_stats_calibration.py``; the whole policy: ``benchmarks/judge/``) shows this
holds α on identical arms at 1 % error rates from the first request on (and, in development runs, at
0.1 %, 30 %, 90 % and 99 % rates and 50/50 or 95/5 splits), so a betting confidence
sequence (Waudby-Smith & Ramdas 2024) was not needed; it would also need the ordered observations,
which the judge does not receive (it gets SQL-computed counts and sums).

**Decision rule** (see :func:`compare`). The tolerance is an effect-size floor, Kayenta style: a harm
smaller than the tolerance is acceptable. With the margin m = the tolerance on the bad side of 0:
*fail* ⇔ the whole CS lies beyond m on the bad side (we are confident the harm exceeds the floor);
*pass* ⇔ the whole CS lies on the good side of m (we are confident it does not); else *inconclusive*.
With tolerance 0, fail means "significant harm of any size" and pass means "significantly better":
identical arms stay inconclusive for ever, so such a check can only block, never promote, on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, get_args

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


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _check_finite(name: str, value: object) -> float:
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
        object.__setattr__(self, "n", _check_count("n", self.n))
        object.__setattr__(self, "mean", _check_finite("mean", self.mean))
        variance = _check_finite("variance", self.variance)
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
        n = _check_count("n", n)
        total = _check_finite("total", total)
        total_sq = _check_finite("total_sq", total_sq)
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
        object.__setattr__(self, "n", _check_count("n", self.n))
        object.__setattr__(self, "successes", _check_count("successes", self.successes))
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


@lru_cache(maxsize=64)
def _tau2_per_effect2(alpha: float) -> float:
    def g2(log_r: float) -> float:
        r = math.exp(log_r)
        return 2.0 * (1.0 + 1.0 / r) * (0.5 * math.log1p(r) + math.log(1.0 / alpha))

    # Golden-section search on log r: g² is unimodal there (decreasing 1 + 1/r, increasing log(1 + r)).
    low, high = -10.0, 20.0
    shrink = (math.sqrt(5.0) - 1.0) / 2.0
    while high - low > 1e-10:
        left, right = high - shrink * (high - low), low + shrink * (high - low)
        if g2(left) < g2(right):
            high = right
        else:
            low = left
    log_r = (low + high) / 2.0
    return math.exp(log_r) / g2(log_r)


def two_sided_level(alpha: float) -> float:
    """Level 2α/(1 + α) of the two-sided CS whose lower and upper bounds are each one-sided α-level.

    For the normal mixture M = (M⁺ + M⁻)/2 (halves of the prior on either side of 0) and an estimate
    above θ0, M⁻ <= 1, so M >= (1 + α)/(2α) implies M⁺ >= 1/α, which by Ville's inequality happens
    with probability at most α at any look. A fail (or a pass) only ever needs one side.
    """
    value = _check_alpha(alpha)
    return 2.0 * value / (1.0 + value)


def tuned_tau2(effect_size: float, alpha: float = DEFAULT_ALPHA) -> float:
    """Mixing variance τ² for which the CS half-width first shrinks to ``effect_size`` at the largest v.

    That is τ² = δ² r*/g(r*)² with g as in the module docstring; equivalently the CS detects a true
    difference of δ with the fewest observations when the estimate sits at its expectation. ``alpha``
    is the level of the two-sided CS (:func:`compare` passes α' = :func:`two_sided_level` (α)).
    """
    effect = _check_finite("effect_size", effect_size)
    if effect <= 0:
        raise ValueError(f"effect_size must be > 0, got {effect}")
    _check_alpha(alpha)
    return effect * effect * _tau2_per_effect2(float(alpha))


def mixture_half_width(variance: ArrayLike, tau2: ArrayLike, alpha: float = DEFAULT_ALPHA) -> FloatArray:
    """Half-width sqrt(2v(v+τ²)/τ² · log(sqrt((v+τ²)/v)/α)) of the two-sided level-α normal-mixture CS.

    ``variance`` is v = Var(Δ̂) (0 gives width 0), ``tau2`` the mixing variance (> 0). :func:`compare`
    calls it with α' = :func:`two_sided_level` (α).
    """
    _check_alpha(alpha)
    v = np.asarray(variance, dtype=np.float64)
    t2 = np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(2.0 * v * ((v + t2) / t2) * (0.5 * _log1p_ratio(t2, v) + math.log(1.0 / alpha)))
    return np.where(v > 0, width, 0.0)


def _log1p_ratio(tau2: FloatArray, v: FloatArray) -> FloatArray:
    """log(1 + τ²/v) without overflowing τ²/v when v is tiny."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(tau2 > v, np.log(v + tau2) - np.log(v), np.log1p(tau2 / v))


TAU_LADDER: tuple[tuple[float, float], ...] = ((1.0, 0.85), (8.0, 0.1), (64.0, 0.05))
"""(multiple of the tuned τ, prior weight) of the mixing distribution: most weight where the decision
is hardest, a little on effects 8 and 64 times larger. A mixture of test martingales is one, so the
CS stays valid; the ladder costs about 3 % more observations at the tuned effect (its weight 0.85
acts like α × 0.85) and buys fast detection of gross harm (a label flip, a 5xx storm), which a τ
tuned to a small effect only resolves after many observations (``benchmarks/judge``)."""


def _ladder_terms(v: FloatArray, tau2: FloatArray) -> tuple[FloatArray, FloatArray]:
    """log Λ of each ladder component is affine in q = d²/v: ``a + s·q`` with
    s = τ²/(2(v + τ²)) ∈ (0, ½] (arrays stacked per component). Working in q rather than d² keeps
    the slopes finite and d² from underflowing when v is tiny."""
    intercepts, slopes = [], []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for scale, weight in TAU_LADDER:
            t2 = tau2 * scale * scale
            intercepts.append(math.log(weight) - 0.5 * _log1p_ratio(t2, v))
            slopes.append(0.5 * (t2 / (v + t2)))
    return np.stack(intercepts), np.stack(slopes)


def _log_sum_exp(terms: FloatArray) -> FloatArray:
    top = np.max(terms, axis=0)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isfinite(top), top + np.log(np.sum(np.exp(terms - top), axis=0)), top)


def _log_ladder(d: FloatArray, v: FloatArray, tau2: FloatArray) -> FloatArray:
    """log Λ of the :data:`TAU_LADDER` mixture at distance ``d`` from the estimate."""
    a, s = _ladder_terms(v, tau2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _log_sum_exp(a + s * ((d / v) * d))


def _ladder_root(a: FloatArray, s: FloatArray, target: float) -> FloatArray:
    """The q = d²/v ≥ 0 where log-sum-exp(a + s·q) reaches ``target``.

    That function is convex and increasing in q, so Newton's method started at the smallest
    single-component root (where it is already ≥ target) descends monotonically onto the root.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.maximum(np.min((target - a) / s, axis=0), 0.0)
        for _ in range(30):
            terms = a + s * q
            total = _log_sum_exp(terms)
            step = (total - target) / np.sum(np.exp(terms - total) * s, axis=0)
            moving = np.isfinite(step) & (step > 0)
            q = np.where(moving, q - step, q)
            if not np.any(moving & (step > 1e-13 * q)):
                break
    return q


def _half_width(a: FloatArray, s: FloatArray, v: FloatArray, alpha: float) -> FloatArray:
    q = np.maximum(_ladder_root(a, s, math.log(1.0 / alpha)), 0.0)
    with np.errstate(invalid="ignore"):
        return np.where(v > 0, np.sqrt(q) * np.sqrt(v), 0.0)


def ladder_half_width(variance: ArrayLike, tau2: ArrayLike, alpha: float = DEFAULT_ALPHA) -> FloatArray:
    """Half-width of the two-sided level-α CS of the :data:`TAU_LADDER` mixture around the tuned τ²:
    the distance d at which the mixture's Λ reaches 1/α (see :func:`_ladder_root`)."""
    _check_alpha(alpha)
    v = np.asarray(variance, dtype=np.float64)
    a, s = _ladder_terms(v, np.asarray(tau2, dtype=np.float64))
    return _half_width(a, s, v, alpha)


def _check_alpha(alpha: object) -> float:
    value = _check_finite("alpha", alpha)
    if not 0.0 < value < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {value}")
    return value


@dataclass(frozen=True)
class _Options:
    direction: Direction
    tolerance: float
    relative_tolerance: float
    pass_tolerance: float
    pass_relative_tolerance: float
    alpha: float
    min_samples: int
    effect_size: float | None


def _nonnegative(name: str, value: object) -> float:
    number = _check_finite(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def _options(
    direction: object,
    tolerance: object,
    relative_tolerance: object,
    alpha: object,
    min_samples: object,
    effect_size: object,
    *,
    log_scale: bool,
    pass_tolerance: object = None,
    pass_relative_tolerance: object = None,
) -> _Options:
    if direction not in get_args(Direction):
        raise ValueError(f"direction must be one of {get_args(Direction)}, got {direction!r}")
    tol = _nonnegative("tolerance", tolerance)
    rel = _nonnegative("relative_tolerance", relative_tolerance)
    pass_tol = tol if pass_tolerance is None else _nonnegative("pass_tolerance", pass_tolerance)
    pass_rel = (
        rel
        if pass_relative_tolerance is None
        else _nonnegative("pass_relative_tolerance", pass_relative_tolerance)
    )
    if pass_tol < tol or pass_rel < rel:
        raise ValueError("the pass margin must not be tighter than the failure margin (pass_* >= tolerance)")
    if direction == "decrease_is_bad" and pass_rel >= 1:
        raise ValueError("a relative decrease tolerance must be < 1 (the champion's value times 1 - t)")
    effect: float | None = None
    if effect_size is not None:
        effect = _check_finite("effect_size", effect_size)
        if effect <= 0:
            raise ValueError(f"effect_size must be > 0, got {effect}")
    return _Options(
        direction=direction,  # type: ignore[arg-type]
        tolerance=tol,
        relative_tolerance=rel,
        pass_tolerance=pass_tol,
        pass_relative_tolerance=pass_rel,
        alpha=_check_alpha(alpha),
        min_samples=_check_count("min_samples", min_samples),
        effect_size=effect,
    )


@dataclass(frozen=True)
class _Side:
    """One margin's confidence sequence: the margin on Δ's scale, the CS half-width around Δ̂ for the
    contrast against it, and the one-sided always-valid p-value for Δ = margin."""

    margin: FloatArray
    half: FloatArray
    p_value: FloatArray


def _side(
    estimate: FloatArray,
    mean_b: FloatArray,
    var_b: FloatArray,
    var_c: FloatArray,
    safe_b: NDArray[np.int64],
    safe_c: NDArray[np.int64],
    effect: FloatArray,
    default_effect: FloatArray,
    *,
    sign: float,
    tolerance: float,
    relative: float,
    log_scale: bool,
    level: float,
) -> _Side:
    """``effect`` > 0 tunes τ; 0 means the margin's size, or ``default_effect`` where that is 0."""
    if log_scale:
        factor = 1.0
        margin = np.full(estimate.shape, sign * tolerance + math.log1p(sign * relative))
    else:
        # Δ beyond a + r·μ_b ⇔ μ_c − (1 ± r)·μ_b beyond ±a: the CS is built on that contrast, so the
        # estimated margin's own noise is accounted for.
        factor = 1.0 + sign * relative
        margin = sign * (tolerance + relative * mean_b)
    contrast = estimate - margin
    v = var_c / safe_c + factor * factor * var_b / safe_b
    automatic = np.where(np.abs(margin) > 0, np.abs(margin), default_effect)
    effect = np.minimum(np.where(effect > 0, effect, automatic), 1e150)
    # A floor relative to v only bites for absurdly small effects (it keeps 1/τ² from overflowing).
    tau2 = np.maximum(effect * effect * _tau2_per_effect2(level), np.maximum(1e-12 * v, 1e-300))
    a, slopes = _ladder_terms(v, tau2)
    half = _half_width(a, slopes, v, level)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lambda = _log_sum_exp(a + slopes * ((contrast / v) * contrast))
        # One-sided always-valid p: 1/(2Λ − 1), computed in logs because Λ overflows for big effects.
        log_denominator = log_lambda + np.log(2.0) + np.log1p(-0.5 * np.exp(-log_lambda))
        p_value = np.where(log_lambda > 0, np.exp(-np.maximum(log_denominator, 0.0)), 1.0)
    p_value = np.where(v > 0, p_value, np.where(contrast == 0, 1.0, 0.0))
    return _Side(margin=margin, half=half, p_value=p_value)


def _judge(
    n_b: NDArray[np.int64],
    mean_b: FloatArray,
    var_b: FloatArray,
    n_c: NDArray[np.int64],
    mean_c: FloatArray,
    var_c: FloatArray,
    pooled_var: FloatArray,
    opts: _Options,
    *,
    min_n: int,
    log_scale: bool,
    bounded: bool,
) -> BatchComparison:
    """The arithmetic shared by :func:`compare` and the batch functions (per-observation variances).

    Two one-sided decisions, each from its own CS at level α: **fail** from the CS of the contrast
    against the failure margin (tuned to ``effect_size``), **pass** from the CS of the contrast
    against the pass margin (tuned to that margin, where an equal candidate must be told apart).
    """
    sign = 1.0 if opts.direction == "increase_is_bad" else -1.0
    has_data = (n_b >= min_n) & (n_c >= min_n)
    safe_b = np.maximum(n_b, 1)
    safe_c = np.maximum(n_c, 1)
    estimate = mean_c - mean_b
    level = two_sided_level(opts.alpha)
    default_effect = DEFAULT_STANDARDIZED_EFFECT * np.sqrt(pooled_var)
    common = {"sign": sign, "log_scale": log_scale, "level": level}
    arms = (estimate, mean_b, var_b, var_c, safe_b, safe_c)
    automatic = np.zeros(estimate.shape)
    fail_effect = automatic if opts.effect_size is None else np.full(estimate.shape, opts.effect_size)
    fail = _side(
        *arms,
        fail_effect,
        default_effect,
        tolerance=opts.tolerance,
        relative=opts.relative_tolerance,
        **common,
    )
    same = opts.pass_tolerance == opts.tolerance and opts.pass_relative_tolerance == opts.relative_tolerance
    passing = (
        fail
        if same and opts.effect_size is None
        else _side(
            *arms,
            automatic,
            default_effect,
            tolerance=opts.pass_tolerance,
            relative=opts.pass_relative_tolerance,
            **common,
        )
    )
    low, high = estimate - fail.half, estimate + fail.half
    pass_bound = estimate + sign * passing.half
    if bounded:
        low, high = np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)
        pass_bound = np.clip(pass_bound, -1.0, 1.0)
        empty_low, empty_high = -1.0, 1.0
    else:
        empty_low, empty_high = -math.inf, math.inf
    low = np.where(has_data, low, empty_low)
    high = np.where(has_data, high, empty_high)
    pass_bound = np.where(has_data, pass_bound, empty_high if sign > 0 else empty_low)

    if sign > 0:
        failed, passed = low > fail.margin, pass_bound < passing.margin
    else:
        failed, passed = high < fail.margin, pass_bound > passing.margin
    p_value = np.where(has_data, np.minimum(fail.p_value, passing.p_value), 1.0)
    decisive = has_data & (n_b >= opts.min_samples) & (n_c >= opts.min_samples)
    verdicts = np.where(decisive & failed, "fail", np.where(decisive & passed, "pass", "inconclusive"))
    return BatchComparison(
        verdicts=verdicts,
        estimate=estimate,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        margin=fail.margin,
        pass_margin=passing.margin,
        pass_bound=pass_bound,
    )


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
    opts = _options(
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
    return _judge(
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
    opts = _options(
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
    return _judge(n_b, m_b, var_b, n_c, m_c, var_c, pooled, opts, min_n=2, log_scale=log_scale, bounded=False)


def _floor_text(opts: _Options, margin: float, tolerance: float, relative: float, log_scale: bool) -> str:
    sign = "+" if opts.direction == "increase_is_bad" else "-"
    if log_scale and relative:
        return f"{margin:+.4g} ({sign}{relative:.0%} relative)"
    if relative:
        absolute = f"{tolerance:g} + " if tolerance else ""
        return f"{margin:+.4g} ({sign}({absolute}{relative:.0%} of the champion's value))"
    return f"{margin:+.4g}"


def _threshold_text(opts: _Options, margin: float, pass_margin: float, log_scale: bool) -> str:
    fail = _floor_text(opts, margin, opts.tolerance, opts.relative_tolerance, log_scale)
    passing = _floor_text(opts, pass_margin, opts.pass_tolerance, opts.pass_relative_tolerance, log_scale)
    separate = passing != fail
    if opts.direction == "increase_is_bad":
        text = f"fail if ci_low > {fail}; pass if {'the pass CS high' if separate else 'ci_high'} < {passing}"
    else:
        text = f"fail if ci_high < {fail}; pass if {'the pass CS low' if separate else 'ci_low'} > {passing}"
    if opts.pass_tolerance == 0 and opts.pass_relative_tolerance == 0:
        text += " (tolerance 0: any significant harm fails; only a significant improvement passes)"
    return text


def compare(
    champion: Summary,
    candidate: Summary,
    *,
    direction: Direction,
    tolerance: float = 0.0,
    relative_tolerance: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    effect_size: float | None = None,
    pass_tolerance: float | None = None,
    pass_relative_tolerance: float | None = None,
) -> ComparisonResult:
    """Judge candidate against champion on cumulative data with an anytime-valid CS for Δ = cand − champ.

    * ``direction``: whether a larger candidate value is bad (errors, latency) or a smaller one is
      (accuracy, success rate).
    * ``tolerance`` (>= 0) and ``relative_tolerance`` (>= 0): the effect-size floor, a harm up to
      ``tolerance + relative_tolerance × champion`` on Δ's scale is acceptable. On a linear scale
      (proportions, plain means) that is tested exactly as the contrast
      candidate − (1 ± r) × champion against ±``tolerance``; on a log-scale :class:`MeanSummary` the
      relative part is the shift log(1 + r) (log(1 − r) when a decrease is bad), so +10 % latency is
      ``relative_tolerance=0.1``. A relative floor suits rates whose size varies between models
      (1 % → 3 % errors is as bad as 0.1 % → 0.3 %); the absolute part keeps a rate of 0 judgeable.
    * Verdict: **fail** when the whole CS lies beyond the margin on the bad side, **pass** when the
      pass CS lies wholly on the good side of the pass margin, otherwise **inconclusive**. Always
      inconclusive when either arm has fewer than ``min_samples`` observations, or no usable data
      (n = 0 for a proportion, n < 2 for a mean: the interval is then [−1, 1] or (−∞, ∞) and p = 1).
      Tolerance 0 fails any significant harm and passes only a significant improvement, so
      identical arms stay inconclusive.
    * The false-fail probability when the true harm is at most the margin, and the false-pass
      probability when it is at least the margin, are each at most ``alpha`` over all looks.
    * ``effect_size``: the distance beyond the failure margin (on Δ's scale) the failing side's CS
      is tuned to resolve fastest; default the margin, or 0.2 pooled standard deviations when the
      margin is 0 (see the module docstring).
    * ``pass_tolerance`` / ``pass_relative_tolerance`` (default: the failure margin's): a wider
      margin for **pass**, decided by its own CS tuned to that margin. A fail margin close to 0
      catches a regression early, a wider pass margin still lets an equal candidate pass; a harm
      between the two margins is eventually failed. Must not be tighter than the failure margin.

    Both summaries must be of the same kind (and the same ``log_scale``); raises ValueError for
    invalid options (unknown direction, negative tolerance, alpha outside (0, 1), ...).
    """
    if isinstance(champion, ProportionSummary) and isinstance(candidate, ProportionSummary):
        batch = compare_proportions_batch(
            champion.n,
            champion.successes,
            candidate.n,
            candidate.successes,
            direction=direction,
            tolerance=tolerance,
            relative_tolerance=relative_tolerance,
            alpha=alpha,
            min_samples=min_samples,
            effect_size=effect_size,
            pass_tolerance=pass_tolerance,
            pass_relative_tolerance=pass_relative_tolerance,
        )
        log_scale = False
        values = (champion.rate, candidate.rate)
        kind = "difference of proportions (Laplace-regularised, pooled-floor variance)"
    elif isinstance(champion, MeanSummary) and isinstance(candidate, MeanSummary):
        if champion.log_scale != candidate.log_scale:
            raise ValueError("champion and candidate must both be on the log scale or both not")
        log_scale = champion.log_scale
        batch = compare_means_batch(
            champion.n,
            champion.mean,
            champion.variance,
            candidate.n,
            candidate.mean,
            candidate.variance,
            direction=direction,
            tolerance=tolerance,
            relative_tolerance=relative_tolerance,
            log_scale=log_scale,
            alpha=alpha,
            min_samples=min_samples,
            effect_size=effect_size,
            pass_tolerance=pass_tolerance,
            pass_relative_tolerance=pass_relative_tolerance,
        )
        values = (champion.mean, candidate.mean)
        kind = "difference of means of logs" if log_scale else "difference of means"
    else:
        raise ValueError(
            "champion and candidate must both be ProportionSummary or both be MeanSummary, got "
            f"{type(champion).__name__} and {type(candidate).__name__}"
        )
    opts = _options(
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
    margin, pass_margin = float(batch.margin), float(batch.pass_margin)
    return ComparisonResult(
        verdict=str(batch.verdicts),  # type: ignore[arg-type]
        estimate=float(batch.estimate),
        ci_low=float(batch.ci_low),
        ci_high=float(batch.ci_high),
        p_value=float(batch.p_value),
        n_champion=champion.n,
        n_candidate=candidate.n,
        test=f"mixture-SPRT confidence sequence on the {kind}",
        threshold=_threshold_text(opts, margin, pass_margin, log_scale),
        margin=margin,
        champion_value=float(values[0]),
        candidate_value=float(values[1]),
        alpha=opts.alpha,
        pass_margin=pass_margin,
        pass_bound=float(batch.pass_bound),
    )


def compare_with_limit(
    observed: ProportionSummary,
    limit: float,
    *,
    direction: Direction,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    effect_size: float | None = None,
) -> ComparisonResult:
    """One arm's proportion against a fixed ``limit`` (e.g. paired agreement ≥ 90 %), anytime-valid.

    The same normal-mixture CS as :func:`compare`, for Δ = rate − limit with the Laplace-regularised
    variance p̃(1 − p̃)/n: **fail** when the whole CS lies beyond the limit on the bad side
    (``decrease_is_bad``: the rate is confidently below it), **pass** when it lies wholly on the good
    side, otherwise inconclusive (always, below ``min_samples``). ``effect_size`` (default
    :data:`LIMIT_EFFECT`) tunes the failing side; it never depends on the data, which would void the
    guarantee. Raises ValueError for a limit outside [0, 1] or invalid options.
    """
    bound = _check_finite("limit", limit)
    if not 0.0 <= bound <= 1.0:
        raise ValueError(f"limit must be within [0, 1], got {bound}")
    opts = _options(direction, 0.0, 0.0, alpha, min_samples, effect_size, log_scale=False)
    n = np.asarray(observed.n, dtype=np.int64)
    rate = np.asarray(observed.rate, dtype=np.float64)
    laplace = (observed.successes + 1.0) / (observed.n + 2.0)
    variance = np.asarray(laplace * (1.0 - laplace))
    if opts.effect_size is None:
        opts = replace(opts, effect_size=LIMIT_EFFECT)
    # A "champion" with the limit as its value and no variance turns the two-arm CS into a one-arm one.
    batch = _judge(
        n,
        np.asarray(bound),
        np.asarray(0.0),
        n,
        rate,
        variance,
        variance,
        opts,
        min_n=1,
        log_scale=False,
        bounded=True,
    )
    side = "below" if direction == "decrease_is_bad" else "above"
    return ComparisonResult(
        verdict=str(batch.verdicts),  # type: ignore[arg-type]
        estimate=float(batch.estimate),
        ci_low=float(batch.ci_low),
        ci_high=float(batch.ci_high),
        p_value=float(batch.p_value),
        n_champion=0,
        n_candidate=observed.n,
        pass_margin=0.0,
        pass_bound=float(batch.pass_bound),
        test="mixture-SPRT confidence sequence on one proportion against a fixed limit",
        threshold=f"fail if the rate is confidently {side} {bound:g}",
        margin=0.0,
        champion_value=bound,
        candidate_value=observed.rate,
        alpha=opts.alpha,
    )


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
    limit = _check_finite("threshold", threshold)
    array = np.asarray(latencies, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"latencies must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("latencies must be finite")
    return ProportionSummary(int(array.size), int(np.count_nonzero(array > limit)))
