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

from mlcanary.rollout.stats.batch import compare_means_batch, compare_proportions_batch
from mlcanary.rollout.stats.boundary import (
    TAU_LADDER,
    ladder_half_width,
    mixture_half_width,
    tuned_tau2,
    two_sided_level,
)
from mlcanary.rollout.stats.compare import compare, compare_with_limit
from mlcanary.rollout.stats.summaries import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_STANDARDIZED_EFFECT,
    LATENCY_FLOOR_MS,
    LIMIT_EFFECT,
    BatchComparison,
    ComparisonResult,
    Direction,
    MeanSummary,
    ProportionSummary,
    Summary,
    Verdict,
    exceedance_summary,
    log_latency_summary,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_STANDARDIZED_EFFECT",
    "LATENCY_FLOOR_MS",
    "LIMIT_EFFECT",
    "TAU_LADDER",
    "BatchComparison",
    "ComparisonResult",
    "Direction",
    "MeanSummary",
    "ProportionSummary",
    "Summary",
    "Verdict",
    "compare",
    "compare_means_batch",
    "compare_proportions_batch",
    "compare_with_limit",
    "exceedance_summary",
    "ladder_half_width",
    "log_latency_summary",
    "mixture_half_width",
    "tuned_tau2",
    "two_sided_level",
]
