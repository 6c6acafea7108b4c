""":func:`compare` (two arms: proportions or means), :func:`compare_with_limit` (one proportion against
a limit) and :func:`compare_paired` (the mean of paired differences): the scalar entry points the
checks call, with the threshold explained in words."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from mlcanary.rollout.stats.batch import compare_means_batch, compare_proportions_batch
from mlcanary.rollout.stats.summaries import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    LIMIT_EFFECT,
    BatchComparison,
    ComparisonResult,
    Direction,
    MeanSummary,
    ProportionSummary,
    Summary,
    check_finite,
)
from mlcanary.rollout.stats.verdict import Options, options, verdicts


def _floor_text(opts: Options, margin: float, tolerance: float, relative: float, log_scale: bool) -> str:
    sign = "+" if opts.direction == "increase_is_bad" else "-"
    if log_scale and relative:
        return f"{margin:+.4g} ({sign}{relative:.0%} relative)"
    if relative:
        absolute = f"{tolerance:g} + " if tolerance else ""
        return f"{margin:+.4g} ({sign}({absolute}{relative:.0%} of the champion's value))"
    return f"{margin:+.4g}"


def _threshold_text(opts: Options, margin: float, pass_margin: float, log_scale: bool) -> str:
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


def _batch_fields(batch: BatchComparison, opts: Options) -> dict[str, Any]:
    """The fields of a :class:`ComparisonResult` read the same way from any one-row batch
    comparison: the verdict, the estimate and its confidence sequence, the p-value, the pass bound
    and alpha."""
    return {
        "verdict": str(batch.verdicts),
        "estimate": float(batch.estimate),
        "ci_low": float(batch.ci_low),
        "ci_high": float(batch.ci_high),
        "p_value": float(batch.p_value),
        "pass_bound": float(batch.pass_bound),
        "alpha": opts.alpha,
    }


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
    margin, pass_margin = float(batch.margin), float(batch.pass_margin)
    return ComparisonResult(
        **_batch_fields(batch, opts),
        n_champion=champion.n,
        n_candidate=candidate.n,
        test=f"mixture-SPRT confidence sequence on the {kind}",
        threshold=_threshold_text(opts, margin, pass_margin, log_scale),
        margin=margin,
        champion_value=float(values[0]),
        candidate_value=float(values[1]),
        pass_margin=pass_margin,
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
    bound = check_finite("limit", limit)
    if not 0.0 <= bound <= 1.0:
        raise ValueError(f"limit must be within [0, 1], got {bound}")
    opts = options(direction, 0.0, 0.0, alpha, min_samples, effect_size, log_scale=False)
    n = np.asarray(observed.n, dtype=np.int64)
    rate = np.asarray(observed.rate, dtype=np.float64)
    laplace = (observed.successes + 1.0) / (observed.n + 2.0)
    variance = np.asarray(laplace * (1.0 - laplace))
    if opts.effect_size is None:
        opts = replace(opts, effect_size=LIMIT_EFFECT)
    # A "champion" with the limit as its value and no variance turns the two-arm CS into a one-arm one.
    batch = verdicts(
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
        **_batch_fields(batch, opts),
        n_champion=0,
        n_candidate=observed.n,
        pass_margin=0.0,
        test="mixture-SPRT confidence sequence on one proportion against a fixed limit",
        threshold=f"fail if the rate is confidently {side} {bound:g}",
        margin=0.0,
        champion_value=bound,
        candidate_value=observed.rate,
    )


def compare_paired(
    differences: MeanSummary,
    *,
    direction: Direction,
    tolerance: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    effect_size: float | None = None,
    pass_tolerance: float | None = None,
    bound: float = 1.0,
) -> ComparisonResult:
    """The mean of paired differences (candidate − champion on the same input) against 0, anytime-valid.

    The same normal-mixture CS as :func:`compare`, for Δ = the mean difference with variance
    s²/n: pairing removes the between-input variance both models share, so a shift is resolved
    with far fewer observations than two independent samples would need. Differences must lie in
    [−``bound``, ``bound``] (1 for probabilities); the per-observation variance gets the spread of
    one pseudo-observation at the bound, ``bound²/(n + 1)`` (the analogue of the proportions'
    Laplace rate), so a handful of identical answers never looks certain. **fail** when the CS lies
    beyond ``tolerance`` on the bad side, **pass** when the pass CS lies within ``pass_tolerance``
    (default ``tolerance``), otherwise inconclusive (always, below ``min_samples``).
    """
    if differences.log_scale:
        raise ValueError("paired differences are compared on their own scale, not as logs")
    limit = check_finite("bound", bound)
    if limit <= 0:
        raise ValueError(f"bound must be > 0, got {limit}")
    opts = options(
        direction,
        tolerance,
        0.0,
        alpha,
        min_samples,
        effect_size,
        log_scale=False,
        pass_tolerance=pass_tolerance,
    )
    n = np.asarray(differences.n, dtype=np.int64)
    variance = np.asarray(differences.variance + limit * limit / (differences.n + 1.0))
    # A "champion" at 0 with no variance turns the two-arm CS into one on the paired mean.
    batch = verdicts(
        n,
        np.asarray(0.0),
        np.asarray(0.0),
        n,
        np.asarray(differences.mean),
        variance,
        variance,
        opts,
        min_n=2,
        log_scale=False,
        bounded=False,
    )
    return ComparisonResult(
        **_batch_fields(batch, opts),
        n_champion=differences.n,
        n_candidate=differences.n,
        test="mixture-SPRT confidence sequence on the mean of paired differences",
        threshold=_threshold_text(opts, float(batch.margin), float(batch.pass_margin), False),
        margin=float(batch.margin),
        champion_value=0.0,
        candidate_value=differences.mean,
        pass_margin=float(batch.pass_margin),
    )
