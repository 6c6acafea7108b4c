"""The verdict rule, vectorised: fail and pass margins (absolute and relative), the one-sided bounds of
each side's confidence sequence, the always-valid p-value, and pass / fail / inconclusive."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import get_args

import numpy as np
from numpy.typing import NDArray

from mlcanary.rollout.stats.boundary import (
    half_width,
    ladder_terms,
    log_sum_exp,
    tau2_per_effect2,
    two_sided_level,
)
from mlcanary.rollout.stats.summaries import (
    DEFAULT_STANDARDIZED_EFFECT,
    BatchComparison,
    Direction,
    FloatArray,
    check_alpha,
    check_count,
    check_finite,
)


@dataclass(frozen=True)
class Options:
    """A comparison's validated arguments (margins, α, sample floor, tuned effect)."""

    direction: Direction
    tolerance: float
    relative_tolerance: float
    pass_tolerance: float
    pass_relative_tolerance: float
    alpha: float
    min_samples: int
    effect_size: float | None


def _nonnegative(name: str, value: object) -> float:
    number = check_finite(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def options(
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
) -> Options:
    """Validate a comparison's arguments; the pass margins default to (and are never tighter than)
    the failure margins."""
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
        effect = check_finite("effect_size", effect_size)
        if effect <= 0:
            raise ValueError(f"effect_size must be > 0, got {effect}")
    return Options(
        direction=direction,  # type: ignore[arg-type]
        tolerance=tol,
        relative_tolerance=rel,
        pass_tolerance=pass_tol,
        pass_relative_tolerance=pass_rel,
        alpha=check_alpha(alpha),
        min_samples=check_count("min_samples", min_samples),
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
    tau2 = np.maximum(effect * effect * tau2_per_effect2(level), np.maximum(1e-12 * v, 1e-300))
    a, slopes = ladder_terms(v, tau2)
    half = half_width(a, slopes, v, level)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lambda = log_sum_exp(a + slopes * ((contrast / v) * contrast))
        # One-sided always-valid p: 1/(2Λ − 1), computed in logs because Λ overflows for big effects.
        log_denominator = log_lambda + np.log(2.0) + np.log1p(-0.5 * np.exp(-log_lambda))
        p_value = np.where(log_lambda > 0, np.exp(-np.maximum(log_denominator, 0.0)), 1.0)
    p_value = np.where(v > 0, p_value, np.where(contrast == 0, 1.0, 0.0))
    return _Side(margin=margin, half=half, p_value=p_value)


def verdicts(
    n_b: NDArray[np.int64],
    mean_b: FloatArray,
    var_b: FloatArray,
    n_c: NDArray[np.int64],
    mean_c: FloatArray,
    var_c: FloatArray,
    pooled_var: FloatArray,
    opts: Options,
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
