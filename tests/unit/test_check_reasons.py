"""Every check's reason is one sentence a person can read: what each arm measured, the limit, the
test and what it concluded (not the pass condition alone)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mlcanary.rollout.checks import evaluate_checks
from mlcanary.rollout.decide import decide
from mlcanary.rollout.measurements import (
    Agreement,
    ArmMetrics,
    DriftScore,
    LabelOutcomes,
    Measurements,
    Percentiles,
)
from mlcanary.rollout.policy import CheckPolicy, RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.stats import MeanSummary

T0 = datetime(2026, 6, 1, tzinfo=UTC)
POLICY = RolloutPolicy(min_samples_per_arm=200)


def _arm(requests: int, errors: int, latency_ms: float, positives: int, labels: LabelOutcomes) -> ArmMetrics:
    return ArmMetrics(
        version="v",
        requests=requests,
        errors=errors,
        log_latency=MeanSummary(requests, math.log(latency_ms), 0.04, log_scale=True),
        latency_ms=Percentiles(latency_ms, latency_ms * 1.4, latency_ms * 1.8),
        slow=requests // 20,
        predictions=requests - errors,
        positives=positives,
        labels=labels,
        window_requests=20,
        window_errors=7,
    )


MEASURED = Measurements(
    start=T0,
    end=T0 + timedelta(seconds=3),
    window_start=T0,
    champion=_arm(
        4_000, 40, 20.0, 18, LabelOutcomes(true_positives=10, false_negatives=90, true_negatives=1900)
    ),
    candidate=_arm(1_000, 31, 26.0, 969, LabelOutcomes(true_positives=20, false_positives=480)),
    agreement=Agreement(n=2_000, agree=10, mean_abs_dp=0.9),
    input_drift=DriftScore(value=0.6, method="share of drifted columns", rows=2_000),
    candidate_ready=True,
    label_cutoff=T0 - timedelta(hours=1),
)


def _reasons(policy: RolloutPolicy = POLICY, m: Measurements = MEASURED) -> dict[str, str]:
    return {check.name: check.reason for check in evaluate_checks(policy, m)}


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        (
            "error_rate",
            [
                "candidate 3.10 % (31 of 1,000) 5xx",
                "champion 1.00 % (40 of 4,000)",
                "fails above 1.04 %",
                "passes only confidently within 2.20 %",
                "confidently above the limit",
                "mixture-SPRT",
                "α 0.027",
            ],
        ),
        (
            "error_burst",
            ["7 5xx in 20 candidate requests (35.0 %) in the last 3 s", "at least 5 5xx", "a burst"],
        ),
        (
            "latency",
            ["26.0 ms geometric mean", "20.0 ms geometric mean", "+10% on the champion's", "ratio 1.300"],
        ),
        (
            "latency_p95",
            ["slower than the champion's P95, 28.0 ms", "5.00 % (50 of 1,000) slow", "above 10.0 %"],
        ),
        (
            "positive_rate",
            ["100.0 % (969 of 969) positive", "0.45 % (18 of 3,960)", "outside", "confidently above"],
        ),
        (
            "agreement",
            ["0.50 % (10 of 2,000) paired inputs", "agreement below 90%", "confidently below the limit"],
        ),
        (
            "accuracy",
            [
                "(500 labels on the candidate, 2,000 on the champion)",
                "received before 2026-05-31 23:00:00",
                "4.00 % (20 of 500) correct",
                "95.5 %",
                "below 93.5 %",
            ],
        ),
        ("input_drift", ["0.6 over 2,000 rows", "50% of columns drifted", "→ drift", "(advisory)"]),
        ("availability", ["reports the candidate arm ready"]),
    ],
)
def test_reason_names_both_arms_the_limit_and_the_conclusion(name: str, fragments: list[str]) -> None:
    reason = _reasons()[name]
    assert reason.startswith(name)
    for fragment in fragments:
        assert fragment in reason, f"{fragment!r} not in {reason!r}"
    assert "\n" not in reason


def test_the_decision_reason_is_built_from_the_failing_checks_sentences() -> None:
    state = ReleaseState(
        model="m",
        candidate_version="2",
        champion_version="1",
        phase=Phase.PROGRESSING,
        step_index=0,
        traffic=20,
        started_at=T0 - timedelta(hours=1),
        step_started_at=T0 - timedelta(hours=1),
    )
    decision = decide(POLICY, state, MEASURED, T0)
    assert decision.action == "rollback"
    assert decision.reason.startswith("critical check failed: error_rate: candidate 3.10 %")
    assert "error_burst: 7 5xx in 20 candidate requests" in decision.reason


def test_a_label_metric_without_labels_says_so() -> None:
    unlabelled = replace(
        MEASURED,
        champion=replace(MEASURED.champion, labels=LabelOutcomes()),
        candidate=replace(MEASURED.candidate, labels=LabelOutcomes()),
    )
    policy = POLICY.model_copy(
        update={"checks": {**POLICY.checks, "recall": CheckPolicy(direction="decrease_is_bad")}}
    )
    reasons = _reasons(policy, unlabelled)
    assert "0 labels on the candidate, 0 on the champion" in reasons["recall"]
    assert "no data yet on either arm" in reasons["recall"]


def test_each_label_metric_compares_what_it_names() -> None:
    policy = POLICY.model_copy(
        update={
            "checks": {
                **POLICY.checks,
                **{
                    name: CheckPolicy(direction="decrease_is_bad", tolerance=0.05)
                    for name in ("precision", "recall", "f1")
                },
                "expected_cost": CheckPolicy(relative_tolerance=0.1),
            }
        }
    )
    reasons = _reasons(policy)
    assert "candidate 4.00 % (20 of 500) of flagged truly positive" in reasons["precision"]
    assert "vs champion 100.0 % (10 of 10)" in reasons["precision"]
    assert (
        "candidate n/a (0 of 0) of positives flagged" in reasons["recall"] or "20 of 20" in reasons["recall"]
    )
    assert "F1" in reasons["f1"]
    # candidate: 480 false positives × 1 per 500 labels; champion: 90 false negatives × 10 per 2,000.
    assert "candidate 0.96 per request vs champion 0.45 per request" in reasons["expected_cost"]


def test_a_dead_candidate_the_server_never_logged_fails_error_rate_and_burst_on_the_proxys_count() -> None:
    # The candidate's server answered 1,000 requests without a 5xx, then crashed: Envoy answered
    # the next 120 routed to it (60 in the last window); only the proxy-error log saw them.
    healthy = replace(MEASURED.candidate, errors=0, window_requests=10, window_errors=0)
    champion = replace(MEASURED.champion, errors=0)
    logged_only = replace(MEASURED, champion=champion, candidate=healthy)
    crashed = replace(logged_only, candidate=replace(healthy, proxy_errors=120, window_proxy_errors=60))

    before = {c.name: c for c in evaluate_checks(POLICY, logged_only)}
    after = {c.name: c for c in evaluate_checks(POLICY, crashed)}

    assert before["error_rate"].verdict != "fail"
    assert before["error_burst"].verdict == "pass"
    assert after["error_rate"].verdict == "fail"
    assert "including 120 candidate and 0 champion 5xx the proxy answered" in after["error_rate"].reason
    assert "candidate 10.7 % (120 of 1,120) 5xx" in after["error_rate"].reason
    assert after["error_burst"].verdict == "fail"
    assert "60 5xx in 70 candidate requests" in after["error_burst"].reason
