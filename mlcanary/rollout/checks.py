"""Pure evaluation of each policy check against one tick's measurements.

One small function per metric; each returns a :class:`CheckResult` with value, baseline, threshold,
test, sample sizes and a one-sentence ``reason``, so every decision can be explained. Sequential
checks use the anytime-valid confidence sequences of :mod:`mlcanary.rollout.stats` at their share of
the policy's α (:meth:`RolloutPolicy.alpha_for`). The business metrics from labels live in
:mod:`mlcanary.rollout.label_checks`.
"""

from __future__ import annotations

import math

from mlcanary.rollout import reasons
from mlcanary.rollout.comparison import Arms, CheckFunction, rate_arms, result, two_arm
from mlcanary.rollout.label_checks import LABEL_CHECKS
from mlcanary.rollout.measurements import DriftScore, Measurements
from mlcanary.rollout.policy import CheckPolicy, RolloutPolicy
from mlcanary.rollout.shadow_checks import SHADOW_CHECKS
from mlcanary.rollout.state import CheckResult, Verdict
from mlcanary.rollout.stats import MeanSummary, ProportionSummary, compare_with_limit


def _proxy_context(champion: int, candidate: int) -> str:
    if not champion and not candidate:
        return ""
    return (
        f" (including {reasons.count(candidate)} candidate and {reasons.count(champion)} champion 5xx "
        "the proxy answered for a server that could not)"
    )


def check_error_rate(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    b, c = m.champion, m.candidate
    context = _proxy_context(b.proxy_errors, c.proxy_errors)
    arms = rate_arms("5xx", (b.routed, b.failed), (c.routed, c.failed), context=context)
    return two_arm("error_rate", check, policy, arms)


def check_latency(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    # Means of log-latency compare geometric means; a relative tolerance of +10 % is log(1.1).
    b, c = m.champion, m.candidate

    def shown(summary: MeanSummary | None, requests: int) -> str:
        if summary is None or summary.n == 0:
            return f"no latencies ({reasons.count(requests)} requests)"
        return f"{math.exp(summary.mean):.1f} ms geometric mean over {reasons.count(summary.n)} requests"

    arms = Arms(
        champion=b.log_latency,
        candidate=c.log_latency,
        scale="ratio",
        what="latency",
        champion_text=shown(b.log_latency, b.requests),
        candidate_text=shown(c.log_latency, c.requests),
        value=c.latency_ms.p50 if c.latency_ms else None,
        baseline=b.latency_ms.p50 if b.latency_ms else None,
    )
    return two_arm("latency", check, policy, arms)


def check_latency_p95(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    # A quantile check as a proportion: the share of requests slower than the champion's P95.
    b, c = m.champion, m.candidate
    p95 = f" (slower than the champion's P95, {b.latency_ms.p95:.1f} ms)" if b.latency_ms else ""
    arms = rate_arms("slow", (b.requests, b.slow), (c.requests, c.slow), context=p95)
    shown = (c.latency_ms.p95 if c.latency_ms else None, b.latency_ms.p95 if b.latency_ms else None)
    return two_arm("latency_p95", check, policy, arms, display=shown)


def check_positive_rate(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    b, c = m.champion, m.candidate
    arms = rate_arms("positive", (b.predictions, b.positives), (c.predictions, c.positives))
    return two_arm("positive_rate", check, policy, arms)


def check_error_burst(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    arm = m.candidate
    # A request the proxy answered for a dead server is an error the server never logged.
    count = arm.window_errors + arm.window_proxy_errors
    seen = arm.window_requests + arm.window_proxy_errors
    share = count / seen if seen else 0.0
    min_count = int(_limit(check))
    burst = count >= min_count and share > check.tolerance
    limit = f"at least {min_count} 5xx making up more than {check.tolerance:.0%} of the window's requests"
    window = (m.end - m.window_start).total_seconds()
    return result(
        "error_burst",
        check,
        "fail" if burst else "pass",
        reason=f"error_burst: {reasons.count(count)} 5xx in {reasons.count(seen)} candidate requests "
        f"({reasons.percent(share)}) in the last {window:.0f} s; a burst is {limit} → "
        f"{'a burst' if burst else 'no burst'} (count in the last window)",
        value=float(count),
        threshold=f"a burst is {limit}",
        test="count in the last window",
        n_candidate=seen,
        detail=f"{count} 5xx of {seen} candidate requests ({share:.1%}) in the last window",
    )


def check_agreement(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    limit = _limit(check)
    paired = m.agreement
    label = f"agreement below {limit:.0%}"
    if paired is None or paired.n == 0:
        return result(
            "agreement",
            check,
            "inconclusive",
            reason=f"agreement: no paired inputs scored by both models yet; fails {label}",
            threshold=f"fails {label}",
            detail="no paired data",
            no_data=True,
        )
    floor = min(policy.min_samples_per_arm, 100)
    alpha = policy.alpha_for("agreement")
    test = compare_with_limit(
        ProportionSummary(paired.n, paired.agree),
        limit,
        direction="decrease_is_bad",
        alpha=alpha,
        min_samples=floor,
    )
    low, high = max(limit + test.ci_low, 0.0), min(limit + test.ci_high, 1.0)
    dp = "labels only" if paired.mean_abs_dp is None else f"mean |Δp| {paired.mean_abs_dp:.3f}"
    concluded = reasons.conclusion(
        test.verdict, "decrease_is_bad", below_floor=floor if paired.n < floor else None
    )
    # In the shadow phase the pairs are the two models' answers to the same live request.
    pairs = "mirrored requests (identical inputs)" if policy.judges_shadow else "paired inputs"
    concluded = concluded.replace("requests per arm", pairs)
    return result(
        "agreement",
        check,
        test.verdict,
        reason=f"agreement: both models give the same label to {reasons.share_of(paired.agree, paired.n)} "
        f"{pairs} ({dp}); fails {label}; CS "
        f"[{reasons.percent(low)}, {reasons.percent(high)}] → {concluded} "
        f"(mixture-SPRT confidence sequence, α {alpha:.2g})",
        value=paired.rate,
        threshold=f"fails {label}",
        test=test.test,
        n_candidate=paired.n,
        ci=(low, high),
        detail=f"{paired.agree}/{paired.n} same label, {dp}",
    )


def _limit(check: CheckPolicy) -> float:
    """A one-arm check's threshold (the policy requires one for every enabled one-arm check)."""
    if check.threshold is None:
        raise ValueError("a one-arm check needs a threshold (see RolloutPolicy)")
    return check.threshold


def _check_drift(name: str, check: CheckPolicy, score: DriftScore | None, label: str) -> CheckResult:
    advisory = " (advisory)" if check.advisory else ""
    if score is None:
        return result(
            name,
            check,
            "inconclusive",
            reason=f"{name}: not measured; fails at {label}{advisory}",
            threshold=label,
            detail="not measured",
            no_data=True,
        )
    limit = _limit(check)
    # A p-value drifts below its threshold; a distance or a share of drifted columns at or above it.
    drifted = score.value < limit if score.pvalue else score.value >= limit
    verdict: Verdict = "fail" if drifted else "pass"
    return result(
        name,
        check,
        verdict,
        reason=f"{name}: {score.value:.4g} over {reasons.count(score.rows)} rows ({score.method}); "
        f"fails at {label} → {'drift' if drifted else 'no drift'} (Evidently){advisory}",
        value=score.value,
        threshold=label,
        test=f"Evidently {score.method}",
        n_candidate=score.rows,
        detail=score.detail or "",
    )


def check_prediction_drift(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    score = m.prediction_drift
    rule = "a p-value <" if score is not None and score.pvalue else "a drift score ≥"
    label = f"{rule} {_limit(check):g} (candidate vs champion)"
    return _check_drift("prediction_drift", check, score, label)


def check_input_drift(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _check_drift("input_drift", check, m.input_drift, f"{_limit(check):.0%} of columns drifted")


def check_availability(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    label = "candidate arm is not ready while it takes traffic"
    if m.candidate_ready is None:
        return result(
            "availability",
            check,
            "inconclusive",
            reason="availability: the serving layer did not report the candidate arm",
            threshold=f"fails when the {label}",
            detail="not observed",
            no_data=True,
        )
    detail = m.serving_detail or ("ready" if m.candidate_ready else "not ready")
    return result(
        "availability",
        check,
        "pass" if m.candidate_ready else "fail",
        reason=f"availability: the serving layer reports the candidate arm "
        f"{'ready' if m.candidate_ready else 'NOT ready'} ({detail}); fails when the {label}",
        value=1.0 if m.candidate_ready else 0.0,
        threshold=f"fails when the {label}",
        test="serving-layer status",
        detail=detail,
    )


CHECKS: dict[str, CheckFunction] = {
    "availability": check_availability,
    "error_rate": check_error_rate,
    "error_burst": check_error_burst,
    "latency": check_latency,
    "latency_p95": check_latency_p95,
    "positive_rate": check_positive_rate,
    "agreement": check_agreement,
    "prediction_drift": check_prediction_drift,
    "input_drift": check_input_drift,
    **LABEL_CHECKS,
    **SHADOW_CHECKS,
}


def evaluate_checks(policy: RolloutPolicy, m: Measurements) -> tuple[CheckResult, ...]:
    """Every enabled check of the policy's phase (:meth:`RolloutPolicy.enabled_checks`), in policy
    order; a metric that could not be measured is ``error``, one the models cannot give data for
    (``Measurements.unmeasured``) reports no data with the reason."""
    results = []
    for name, check in policy.enabled_checks().items():
        if name in m.problems:
            results.append(
                result(
                    name,
                    check,
                    "error",
                    reason=f"{name}: could not be measured ({m.problems[name]})",
                    detail=m.problems[name],
                )
            )
            continue
        if name in m.unmeasured:
            results.append(
                result(
                    name,
                    check,
                    "inconclusive",
                    reason=f"{name}: no data: {m.unmeasured[name]}",
                    detail=f"no data: {m.unmeasured[name]}",
                    no_data=True,
                )
            )
            continue
        results.append(CHECKS[name](check, policy, m))
    return tuple(results)
