"""The shared machinery of the checks: building a :class:`CheckResult` and comparing two arms.

:func:`two_arm` runs the anytime-valid confidence sequence of :mod:`mlcanary.rollout.stats` for a
check at its share of the policy's α and words the outcome as one sentence
(:mod:`mlcanary.rollout.reasons`); :class:`Arms` says what is compared and how to show it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlcanary.rollout import reasons
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.policy import CheckPolicy, RolloutPolicy
from mlcanary.rollout.state import CheckResult, Verdict
from mlcanary.rollout.stats import ComparisonResult, MeanSummary, ProportionSummary, compare

Summary = MeanSummary | ProportionSummary
CheckFunction = Callable[[CheckPolicy, RolloutPolicy, Measurements], CheckResult]
"""One check: its policy, the whole policy (α, sample floors) and the tick's measurements."""


def result(
    name: str,
    check: CheckPolicy,
    verdict: Verdict,
    *,
    reason: str,
    value: float | None = None,
    baseline: float | None = None,
    threshold: str = "",
    test: str = "",
    n_champion: int | None = None,
    n_candidate: int | None = None,
    ci: tuple[float | None, float | None] = (None, None),
    detail: str = "",
    no_data: bool = False,
) -> CheckResult:
    """A :class:`CheckResult`; ``no_data`` marks a check that could not be judged for lack of data
    (it blocks promotion only when the policy says the metric ``must_have_data``)."""
    optional = no_data and not check.must_have_data
    blocking = not check.advisory and verdict != "pass" and not optional
    return CheckResult(
        name=name,
        verdict=verdict,
        critical=check.critical,
        advisory=check.advisory,
        blocking=blocking,
        value=_finite(value),
        baseline=_finite(baseline),
        threshold=threshold,
        test=test,
        n_champion=n_champion,
        n_candidate=n_candidate,
        ci_low=_finite(ci[0]),
        ci_high=_finite(ci[1]),
        detail=detail,
        reason=reason,
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class Arms:
    """What a two-arm check compares: both arms' summaries, how to show them, and on which scale.

    ``scale``: ``rate`` (proportions, shown in % and points), ``ratio`` (log-scale means, shown as
    the candidate/champion ratio) or ``value`` (plain means). ``what`` names the quantity in the
    sentence; ``champion_text`` / ``candidate_text`` show each arm's measurement.
    """

    champion: Summary | None
    candidate: Summary | None
    scale: str
    what: str
    champion_text: str
    candidate_text: str
    value: float | None
    baseline: float | None
    context: str = ""


def _effect(check: CheckPolicy, arms: Arms) -> float | None:
    """τ tuning: the distance between the harm to ``detect`` and the margin, on Δ's scale.

    Only the data-free part of the margin counts (the tolerance; for log-scale means also the
    relative tolerance): a τ chosen from the estimates themselves would void the guarantee.
    """
    if check.detect is None:
        return None
    if arms.scale == "ratio":
        distance = math.log1p(check.detect) - math.log1p(check.relative_tolerance) - check.tolerance
    else:
        distance = check.detect - check.tolerance
    return distance if distance > 0 else None


def _run(
    check: CheckPolicy, policy: RolloutPolicy, arms: Arms, direction: str, alpha: float, min_samples: int
) -> ComparisonResult:
    assert arms.champion is not None
    assert arms.candidate is not None
    return compare(
        arms.champion,
        arms.candidate,
        direction=direction,  # type: ignore[arg-type]
        tolerance=check.tolerance,
        relative_tolerance=check.relative_tolerance,
        alpha=alpha,
        min_samples=min_samples,
        effect_size=_effect(check, arms),
        pass_tolerance=check.pass_margin[0],
        pass_relative_tolerance=check.pass_margin[1],
    )


def _difference(arms: Arms, low: float, high: float, estimate: float) -> str:
    if arms.scale == "rate":
        return f"difference {estimate * 100:+.2f} points, CS [{low * 100:+.2f}, {high * 100:+.2f}] points"
    if arms.scale == "ratio":
        ratio, low_ratio, high_ratio = (math.exp(x) for x in (estimate, low, high))
        return f"candidate/champion ratio {ratio:.3f}, CS [{low_ratio:.3f}, {high_ratio:.3f}]"
    return f"difference {estimate:+.4g}, CS [{low:+.4g}, {high:+.4g}]"


def two_arm(
    name: str,
    check: CheckPolicy,
    policy: RolloutPolicy,
    arms: Arms,
    *,
    display: tuple[float | None, float | None] | None = None,
) -> CheckResult:
    """Candidate vs champion through the anytime-valid CS; ``change_is_bad`` tests both sides at
    half the check's α each and fails if either side does. ``display`` replaces the compared
    values (candidate, champion) in the result's ``value`` / ``baseline`` (e.g. P95 in ms for the
    share of slow requests)."""
    value, baseline = display if display is not None else (arms.value, arms.baseline)
    floor = policy.fast_path_samples if check.critical else policy.min_samples_per_arm
    champion_value = arms.baseline if arms.scale != "ratio" else None
    limit = reasons.limit_text(
        check.direction, check.tolerance, check.relative_tolerance, scale=arms.scale, champion=champion_value
    )
    if check.pass_margin != (check.tolerance, check.relative_tolerance):
        passes = reasons.limit_text(
            check.direction, *check.pass_margin, scale=arms.scale, champion=champion_value
        )
        within = passes.removeprefix("above ").removeprefix("below ").removeprefix("beyond ")
        limit += f", passes only confidently within {within}"
    measured = f"{name}{arms.context}: candidate {arms.candidate_text} vs champion {arms.champion_text}"
    n_b = arms.champion.n if arms.champion else 0
    n_c = arms.candidate.n if arms.candidate else 0
    if arms.champion is None or arms.candidate is None or n_b == 0 or n_c == 0:
        return result(
            name,
            check,
            "inconclusive",
            reason=f"{measured}; fails {limit}; no data yet on "
            f"{'either arm' if n_b == n_c == 0 else 'the candidate' if n_c == 0 else 'the champion'}",
            value=value,
            baseline=baseline,
            threshold=f"fails {limit}",
            n_champion=n_b,
            n_candidate=n_c,
            detail="no data yet",
            no_data=True,
        )
    alpha = policy.alpha_for(name)
    if check.direction == "change_is_bad":
        up = _run(check, policy, arms, "increase_is_bad", alpha / 2, floor)
        down = _run(check, policy, arms, "decrease_is_bad", alpha / 2, floor)
        verdicts = {up.verdict, down.verdict}
        verdict: Verdict = (
            "fail" if "fail" in verdicts else "pass" if verdicts == {"pass"} else "inconclusive"
        )
        shown = down if down.verdict == "fail" else up
        low, high = min(up.ci_low, down.ci_low), max(up.ci_high, down.ci_high)
        direction = "decrease_is_bad" if down.verdict == "fail" else "increase_is_bad"
        if verdict == "fail":
            side = "below" if down.verdict == "fail" else "above"
            concluded = f"confidently {side} the limit"
        else:
            concluded = reasons.conclusion(verdict, "change_is_bad")
    else:
        shown = _run(check, policy, arms, check.direction, alpha, floor)
        verdict = shown.verdict  # type: ignore[assignment]
        low, high, direction = shown.ci_low, shown.ci_high, check.direction
        concluded = reasons.conclusion(verdict, direction)
    if min(n_b, n_c) < floor:
        concluded = reasons.conclusion(verdict, direction, below_floor=floor)
    difference = _difference(arms, low, high, shown.estimate)
    return result(
        name,
        check,
        verdict,
        reason=f"{measured}; fails {limit}; {difference} → {concluded} "
        f"(mixture-SPRT confidence sequence, α {alpha:.2g})",
        value=value,
        baseline=baseline,
        threshold=f"fails {limit}",
        test=shown.test,
        n_champion=n_b,
        n_candidate=n_c,
        ci=(low, high),
        detail=difference,
    )


def _proportion(n: int, k: int) -> ProportionSummary | None:
    return ProportionSummary(n=n, successes=k) if n > 0 else None


def rate_arms(what: str, champion: tuple[int, int], candidate: tuple[int, int], context: str = "") -> Arms:
    """Arms of a proportion check from ``(n, events)`` per arm."""
    (n_b, k_b), (n_c, k_c) = champion, candidate
    return Arms(
        champion=_proportion(n_b, k_b),
        candidate=_proportion(n_c, k_c),
        scale="rate",
        what=what,
        champion_text=reasons.share_of(k_b, n_b),
        candidate_text=f"{reasons.share_of(k_c, n_c)} {what}".rstrip(),
        value=k_c / n_c if n_c else None,
        baseline=k_b / n_b if n_b else None,
        context=context,
    )
