"""Pure evaluation of each policy check against one tick's measurements.

One small function per metric; each returns a :class:`CheckResult` with value, baseline, threshold,
test and sample sizes, so every decision can be explained. Two-arm checks use the anytime-valid
confidence sequences of :mod:`mlcanary.rollout.stats` at the policy's per-check α.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mlcanary.rollout.measurements import ArmMetrics, DriftScore, Measurements
from mlcanary.rollout.policy import CheckPolicy, RolloutPolicy
from mlcanary.rollout.state import CheckResult, Verdict
from mlcanary.rollout.stats import ComparisonResult, MeanSummary, ProportionSummary, compare

Summary = MeanSummary | ProportionSummary


def _result(
    name: str,
    check: CheckPolicy,
    verdict: Verdict,
    *,
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
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _two_arm(
    name: str,
    check: CheckPolicy,
    policy: RolloutPolicy,
    champion: Summary | None,
    candidate: Summary | None,
    *,
    value: float | None,
    baseline: float | None,
    tolerance: float,
    relative: bool,
    unit: str = "",
) -> CheckResult:
    if champion is None or candidate is None or champion.n == 0 or candidate.n == 0:
        return _result(
            name,
            check,
            "inconclusive",
            value=value,
            baseline=baseline,
            threshold=f"tolerance {check.tolerance:g}{unit}",
            n_champion=champion.n if champion else 0,
            n_candidate=candidate.n if candidate else 0,
            detail="no data yet",
            no_data=True,
        )
    alpha = policy.alpha_per_check

    def run(direction: str, share: float) -> ComparisonResult:
        return compare(
            champion,
            candidate,
            direction=direction,  # type: ignore[arg-type]
            tolerance=tolerance,
            relative=relative,
            alpha=alpha * share,
            min_samples=policy.min_samples_per_arm,
        )

    if check.direction == "change_is_bad":
        up, down = run("increase_is_bad", 0.5), run("decrease_is_bad", 0.5)
        verdicts = {up.verdict, down.verdict}
        verdict: Verdict = (
            "fail" if "fail" in verdicts else "pass" if verdicts == {"pass"} else "inconclusive"
        )
        result = up
    else:
        result = run(check.direction, 1.0)
        verdict = result.verdict  # type: ignore[assignment]
    return _result(
        name,
        check,
        verdict,
        value=value,
        baseline=baseline,
        threshold=result.threshold,
        test=result.test,
        n_champion=result.n_champion,
        n_candidate=result.n_candidate,
        ci=(result.ci_low, result.ci_high),
        detail=f"candidate − champion = {result.estimate:+.4g}{unit}"
        f" (CS [{result.ci_low:+.4g}, {result.ci_high:+.4g}])",
    )


def _proportion(n: int, k: int) -> ProportionSummary | None:
    return ProportionSummary(n=n, successes=k) if n > 0 else None


def _proportions(
    name: str,
    check: CheckPolicy,
    policy: RolloutPolicy,
    m: Measurements,
    total: str,
    events: str,
    *,
    value: float | None,
    baseline: float | None,
) -> CheckResult:
    """A two-arm check on the share ``events / total`` of each arm's :class:`ArmMetrics`."""
    return _two_arm(
        name,
        check,
        policy,
        _proportion(getattr(m.champion, total), getattr(m.champion, events)),
        _proportion(getattr(m.candidate, total), getattr(m.candidate, events)),
        value=value,
        baseline=baseline,
        tolerance=check.tolerance,
        relative=check.relative,
    )


def check_error_rate(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _proportions(
        "error_rate",
        check,
        policy,
        m,
        "requests",
        "errors",
        value=m.candidate.error_rate,
        baseline=m.champion.error_rate,
    )


def check_latency(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    # Log-latency summaries: stats turns a relative tolerance of +20 % into log(1.2) on that scale.
    cand, champ = m.candidate.latency_ms, m.champion.latency_ms
    result = _two_arm(
        "latency",
        check,
        policy,
        m.champion.log_latency,
        m.candidate.log_latency,
        value=cand.p50 if cand else None,
        baseline=champ.p50 if champ else None,
        tolerance=check.tolerance,
        relative=check.relative,
        unit=" log-ms",
    )
    if result.ci_low is None or result.ci_high is None:
        return result
    ratio = (
        f"candidate/champion geometric-mean latency in "
        f"[{math.exp(result.ci_low):.3f}, {math.exp(result.ci_high):.3f}]"
    )
    return CheckResult(**{**result.to_dict(), "detail": ratio})


def check_latency_p95(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _proportions(
        "latency_p95",
        check,
        policy,
        m,
        "requests",
        "slow",
        value=m.candidate.latency_ms.p95 if m.candidate.latency_ms else None,
        baseline=m.champion.latency_ms.p95 if m.champion.latency_ms else None,
    )


def check_positive_rate(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _proportions(
        "positive_rate",
        check,
        policy,
        m,
        "predictions",
        "positives",
        value=m.candidate.positive_rate,
        baseline=m.champion.positive_rate,
    )


def check_accuracy(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _proportions(
        "accuracy",
        check,
        policy,
        m,
        "labeled",
        "correct",
        value=m.candidate.accuracy,
        baseline=m.champion.accuracy,
    )


def check_error_burst(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    arm: ArmMetrics = m.candidate
    count = arm.window_errors
    share = count / arm.window_requests if arm.window_requests else 0.0
    min_count = int(_limit(check))
    burst = count >= min_count and share > check.tolerance
    return _result(
        "error_burst",
        check,
        "fail" if burst else "pass",
        value=float(count),
        threshold=f"fewer than {min_count} 5xx or at most {check.tolerance:.0%} of the candidate's "
        "requests in the last window",
        test="count in window",
        n_candidate=arm.window_requests,
        detail=f"{count} 5xx of {arm.window_requests} candidate requests ({share:.1%}) in the last window",
    )


def check_agreement(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    limit = _limit(check)
    paired = m.agreement
    label = f"agreement ≥ {limit:.0%}"
    if paired is None or paired.n == 0:
        return _result(
            "agreement", check, "inconclusive", threshold=label, detail="no paired data", no_data=True
        )
    rate = paired.rate or 0.0
    detail = f"{paired.agree}/{paired.n} same label, mean |Δp| {paired.mean_abs_dp:.4f}"
    if paired.n < min(policy.min_samples_per_arm, 100):
        verdict: Verdict = "inconclusive"
        detail += " (too few paired inputs yet)"
    else:
        verdict = "pass" if rate >= limit else "fail"
    return _result(
        "agreement",
        check,
        verdict,
        value=rate,
        threshold=label,
        test="paired re-scoring, point estimate",
        n_candidate=paired.n,
        detail=detail,
    )


def _limit(check: CheckPolicy) -> float:
    """A one-arm check's threshold (the policy requires one for every enabled one-arm check)."""
    if check.threshold is None:
        raise ValueError("a one-arm check needs a threshold (see RolloutPolicy)")
    return check.threshold


def _check_drift(name: str, check: CheckPolicy, score: DriftScore | None, label: str) -> CheckResult:
    if score is None:
        return _result(name, check, "inconclusive", threshold=label, detail="not measured", no_data=True)
    limit = _limit(check)
    # A p-value drifts below its threshold; a distance or a share of drifted columns at or above it.
    drifted = score.value < limit if score.pvalue else score.value >= limit
    verdict: Verdict = "fail" if drifted else "pass"
    return _result(
        name,
        check,
        verdict,
        value=score.value,
        threshold=label,
        test=f"Evidently {score.method}",
        n_candidate=score.rows,
        detail=score.detail or "",
    )


def check_prediction_drift(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    score = m.prediction_drift
    rule = "<" if score is not None and score.pvalue else ">="
    label = f"no drift of candidate vs champion (drift: score {rule} {_limit(check):g})"
    return _check_drift("prediction_drift", check, score, label)


def check_input_drift(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _check_drift("input_drift", check, m.input_drift, f"drifted columns < {_limit(check):.0%}")


def check_availability(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    label = "candidate arm ready while it takes traffic"
    if m.candidate_ready is None:
        return _result(
            "availability", check, "inconclusive", threshold=label, detail="not observed", no_data=True
        )
    return _result(
        "availability",
        check,
        "pass" if m.candidate_ready else "fail",
        value=1.0 if m.candidate_ready else 0.0,
        threshold=label,
        test="serving-layer status",
        detail=m.serving_detail or ("ready" if m.candidate_ready else "not ready"),
    )


CHECKS: dict[str, Callable[[CheckPolicy, RolloutPolicy, Measurements], CheckResult]] = {
    "availability": check_availability,
    "error_rate": check_error_rate,
    "error_burst": check_error_burst,
    "latency": check_latency,
    "latency_p95": check_latency_p95,
    "positive_rate": check_positive_rate,
    "agreement": check_agreement,
    "prediction_drift": check_prediction_drift,
    "input_drift": check_input_drift,
    "accuracy": check_accuracy,
}


def evaluate_checks(policy: RolloutPolicy, m: Measurements) -> tuple[CheckResult, ...]:
    """Every enabled check, in policy order; a metric that could not be measured is ``error``."""
    results = []
    for name, check in policy.enabled_checks().items():
        if name in m.problems:
            results.append(_result(name, check, "error", threshold="", test="", detail=m.problems[name]))
            continue
        results.append(CHECKS[name](check, policy, m))
    return tuple(results)
