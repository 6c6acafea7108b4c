"""The shadow phase's paired check: both models' probabilities on the very same requests.

In the shadow phase the candidate answers mirrored copies of live requests, so each of its answers
has the champion's answer to the same input beside it (:class:`~mlcanary.rollout.measurements.
PairedScores`). ``probability_shift`` tests the mean of candidate − champion positive-class
probability over those pairs with the anytime-valid CS of paired differences
(:func:`~mlcanary.rollout.stats.compare_paired`); exact paired agreement is the ``agreement`` check
fed with the pairs, and the candidate's errors and latency are the canary's own checks over the
mirrored calls (:mod:`mlcanary.rollout.checks`).
"""

from __future__ import annotations

from mlcanary.rollout import reasons
from mlcanary.rollout.comparison import CheckFunction, result
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.policy import CheckPolicy, RolloutPolicy
from mlcanary.rollout.state import CheckResult, Verdict
from mlcanary.rollout.stats import ComparisonResult, compare_paired


def _points(value: float) -> str:
    return f"{value * 100:+.2f}"


def check_probability_shift(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    limit = f"beyond ±{check.tolerance * 100:.2f} points of mean probability"
    passes = check.pass_margin[0]
    if passes != check.tolerance:
        limit += f", passes only confidently within ±{passes * 100:.2f} points"
    paired = m.paired
    diff = paired.probability_diff if paired is not None else None
    if diff is None or diff.n == 0:
        return result(
            "probability_shift",
            check,
            "inconclusive",
            reason="probability_shift: no request answered with a probability by both models yet; "
            f"fails {limit}",
            threshold=f"fails {limit}",
            detail="no paired data",
            no_data=True,
        )
    floor = policy.fast_path_samples if check.critical else policy.min_samples_per_arm
    alpha = policy.alpha_for("probability_shift")
    effect = check.detect - check.tolerance if check.detect and check.detect > check.tolerance else None

    def side(direction: str, level: float) -> ComparisonResult:
        return compare_paired(
            diff,
            direction=direction,  # type: ignore[arg-type]
            tolerance=check.tolerance,
            alpha=level,
            min_samples=floor,
            effect_size=effect,
            pass_tolerance=passes,
        )

    if check.direction == "change_is_bad":
        up, down = side("increase_is_bad", alpha / 2), side("decrease_is_bad", alpha / 2)
        verdicts = {up.verdict, down.verdict}
        verdict: Verdict = (
            "fail" if "fail" in verdicts else "pass" if verdicts == {"pass"} else "inconclusive"
        )
        low, high = min(up.ci_low, down.ci_low), max(up.ci_high, down.ci_high)
        test = up.test
        harm = "decrease_is_bad" if down.verdict == "fail" else "increase_is_bad"
        concluded = (
            reasons.conclusion("fail", harm)
            if verdict == "fail"
            else reasons.conclusion(verdict, "change_is_bad")
        )
    else:
        shown = side(check.direction, alpha)
        verdict, low, high, test = shown.verdict, shown.ci_low, shown.ci_high, shown.test  # type: ignore[assignment]
        concluded = reasons.conclusion(verdict, check.direction)
    if diff.n < floor:
        concluded = reasons.conclusion(verdict, check.direction, below_floor=floor).replace(
            "requests per arm", "paired requests"
        )
    difference = f"mean {_points(diff.mean)} points, CS [{_points(low)}, {_points(high)}] points"
    return result(
        "probability_shift",
        check,
        verdict,
        reason=f"probability_shift: candidate − champion probability on the same "
        f"{reasons.count(diff.n)} requests: {difference} (mean |Δp| {paired.mean_abs_dp:.3f}); "
        f"fails {limit} → {concluded} (mixture-SPRT confidence sequence on paired differences, "
        f"α {alpha:.2g})",
        value=diff.mean,
        baseline=0.0,
        threshold=f"fails {limit}",
        test=test,
        n_champion=diff.n,
        n_candidate=diff.n,
        ci=(low, high),
        detail=difference,
    )


SHADOW_CHECKS: dict[str, CheckFunction] = {"probability_shift": check_probability_shift}
