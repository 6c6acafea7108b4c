"""Table-driven tests of the pure judge: every rule of ``decide()``."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlcanary.rollout.decide import decide
from mlcanary.rollout.measurements import (
    Agreement,
    ArmMetrics,
    DriftScore,
    LabelOutcomes,
    Measurements,
    Percentiles,
)
from mlcanary.rollout.policy import ApprovalPolicy, CheckPolicy, RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.stats import MeanSummary
from mlcanary.telemetry.metrics import LOG_METRICS

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = RolloutPolicy(
    steps=[20, 50], min_bake_per_step="1h", min_duration="24h", max_duration="48h", min_samples_per_arm=200
)


def arm(
    requests: int,
    *,
    error_rate: float = 0.01,
    latency_ms: float = 20.0,
    positive_rate: float = 0.04,
    slow_share: float = 0.05,
    window: tuple[int, int] = (100, 1),
    labeled: int = 0,
    accuracy: float = 0.95,
    labels: LabelOutcomes | None = None,
) -> ArmMetrics:
    if labels is None:
        correct = round(labeled * accuracy)
        labels = LabelOutcomes(true_negatives=correct, false_positives=labeled - correct)
    return ArmMetrics(
        version="x",
        requests=requests,
        errors=round(requests * error_rate),
        log_latency=MeanSummary(n=requests, mean=math.log(latency_ms), variance=0.1, log_scale=True)
        if requests
        else None,
        latency_ms=Percentiles(latency_ms, latency_ms * 1.5, latency_ms * 2) if requests else None,
        slow=round(requests * slow_share),
        predictions=requests,
        positives=round(requests * positive_rate),
        mean_probability=positive_rate,
        labels=labels,
        window_requests=window[0],
        window_errors=window[1],
    )


HEALTHY = Measurements(
    start=T0,
    end=T0,
    window_start=T0,
    champion=arm(40_000),
    candidate=arm(10_000),
)


def state(
    *,
    elapsed: str = "30h",
    baked: str = "3h",
    step_index: int = 1,
    phase: Phase = Phase.PROGRESSING,
    waited: str | None = None,
) -> ReleaseState:
    def hours(text: str) -> timedelta:
        return timedelta(hours=float(text.rstrip("h")))

    now = T0 + timedelta(days=10)
    return ReleaseState(
        model="m",
        candidate_version="2",
        champion_version="1",
        phase=phase,
        step_index=step_index,
        traffic=POLICY.steps[step_index],
        started_at=now - hours(elapsed),
        step_started_at=now - hours(baked),
        approval_requested_at=None if waited is None else now - hours(waited),
    )


NOW = T0 + timedelta(days=10)
GATED = POLICY.model_copy(update={"approval": ApprovalPolicy(required=True, timeout="12h")})
GATED_PROMOTE = POLICY.model_copy(
    update={"approval": ApprovalPolicy(required=True, timeout="12h", on_timeout="promote")}
)
AWAITING = Phase.AWAITING_APPROVAL


def measured(**changes: Any) -> Measurements:
    return replace(HEALTHY, **changes)


CASES: list[tuple[str, dict[str, Any], Measurements, RolloutPolicy, str, str]] = [
    # id, state kwargs, measurements, policy, expected action, fragment of the reason
    (
        "healthy at the last step after min duration promotes",
        {},
        HEALTHY,
        POLICY,
        "promote",
        "every check passed",
    ),
    (
        "5xx regression is critical: roll back at once",
        {"elapsed": "2h", "baked": "0.5h", "step_index": 0},
        measured(candidate=arm(10_000, error_rate=0.05)),
        POLICY,
        "rollback",
        "error_rate",
    ),
    (
        "a 5xx burst rolls back even before enough samples",
        {"elapsed": "0.1h", "baked": "0.1h", "step_index": 0},
        measured(candidate=arm(30, window=(20, 10)), champion=arm(120)),
        POLICY,
        "rollback",
        "error_burst",
    ),
    (
        "a much slower candidate rolls back after the sample floor",
        {"elapsed": "2h", "baked": "0.5h", "step_index": 0},
        measured(candidate=arm(10_000, latency_ms=40.0)),
        POLICY,
        "rollback",
        "check failed: latency",
    ),
    (
        "a critical check is judged before the sample floor (fast path)",
        {"elapsed": "0.1h", "baked": "0.1h", "step_index": 0},
        measured(candidate=arm(120, error_rate=0.4, window=(20, 3)), champion=arm(150)),
        POLICY,
        "rollback",
        "critical check failed: error_rate",
    ),
    (
        "the same 5xx rate below the floor only holds when error_rate is not critical",
        {"elapsed": "0.1h", "baked": "0.1h", "step_index": 0},
        measured(candidate=arm(120, error_rate=0.4, window=(20, 3)), champion=arm(150)),
        POLICY.model_copy(update={"checks": {**POLICY.checks, "error_rate": CheckPolicy(tolerance=0.002)}}),
        "hold",
        "waiting for samples",
    ),
    (
        "a non-critical check is not judged before the sample floor",
        {"elapsed": "0.1h", "baked": "0.1h", "step_index": 0},
        measured(candidate=arm(150, positive_rate=0.6)),
        POLICY,
        "hold",
        "waiting for samples",
    ),
    (
        "a candidate the serving layer reports not ready rolls back at once",
        {"elapsed": "0.2h", "baked": "0.2h", "step_index": 0},
        measured(candidate=arm(40), candidate_ready=False, serving_detail="v2: connection refused"),
        POLICY,
        "rollback",
        "availability",
    ),
    (
        "too few samples holds",
        {"elapsed": "30h"},
        measured(candidate=arm(50)),
        POLICY,
        "hold",
        "waiting for samples",
    ),
    (
        "a failing non-critical check after the sample floor rolls back",
        {"elapsed": "1h", "baked": "0.2h", "step_index": 0},
        measured(candidate=arm(10_000, positive_rate=0.12)),
        POLICY,
        "rollback",
        "check failed: positive_rate",
    ),
    (
        "bake time not reached holds",
        {"baked": "0.5h", "step_index": 0, "elapsed": "0.5h"},
        HEALTHY,
        POLICY,
        "hold",
        "baking step 1 of 2",
    ),
    (
        "healthy first step after bake steps up",
        {"baked": "2h", "step_index": 0, "elapsed": "2h"},
        HEALTHY,
        POLICY,
        "step_up",
        "20 % → 50 %",
    ),
    (
        "last step before min duration holds",
        {"elapsed": "10h"},
        HEALTHY,
        POLICY,
        "hold",
        "minimum duration",
    ),
    (
        "inconclusive at the last step holds",
        {"elapsed": "30h"},
        measured(candidate=arm(300)),
        POLICY,
        "hold",
        "waiting for checks to pass",
    ),
    (
        "inconclusive at max duration rolls back by default",
        {"elapsed": "49h"},
        measured(candidate=arm(300)),
        POLICY,
        "rollback",
        "policy says roll back",
    ),
    (
        "inconclusive at max duration may promote when told",
        {"elapsed": "49h"},
        measured(candidate=arm(300)),
        POLICY.model_copy(update={"on_max_duration": "promote"}),
        "promote",
        "policy says promote",
    ),
    (
        "missing data never promotes, even at max duration with promote default",
        {"elapsed": "49h"},
        measured(candidate=arm(20)),
        POLICY.model_copy(update={"on_max_duration": "promote"}),
        "rollback",
        "without enough data",
    ),
    (
        "a failing check at max duration rolls back",
        {"elapsed": "49h"},
        measured(candidate=arm(10_000, positive_rate=0.12)),
        POLICY.model_copy(update={"on_max_duration": "promote"}),
        "rollback",
        "failing checks",
    ),
    (
        "a healthy release at max duration promotes",
        {"elapsed": "49h"},
        HEALTHY,
        POLICY,
        "promote",
        "maximum duration",
    ),
    (
        "a metric that could not be measured never promotes",
        {},
        measured(problems={"error_rate": "store unreachable"}),
        POLICY,
        "hold",
        "error_rate",
    ),
    (
        "an unreadable log is reported as no data, never as zero requests",
        {},
        measured(
            champion=ArmMetrics(version="1"),
            candidate=ArmMetrics(version="2"),
            problems=dict.fromkeys(LOG_METRICS, "inference log unreadable: OperationalError"),
        ),
        POLICY,
        "hold",
        "no data: request counts unknown (inference log unreadable",
    ),
    (
        "an unreadable log at max duration rolls back, saying why, never promotes",
        {"elapsed": "49h"},
        measured(
            champion=ArmMetrics(version="1"),
            candidate=ArmMetrics(version="2"),
            problems=dict.fromkeys(LOG_METRICS, "inference log unreadable: OperationalError"),
        ),
        POLICY.model_copy(update={"on_max_duration": "promote"}),
        "rollback",
        "without enough data: no data: request counts unknown (inference log unreadable",
    ),
    (
        "required data missing (no latency logged) never promotes",
        {},
        measured(candidate=replace(arm(10_000), log_latency=None)),
        POLICY,
        "hold",
        "latency",
    ),
    (
        "advisory input drift does not block",
        {},
        measured(input_drift=DriftScore(value=0.9, method="wasserstein/jensenshannon", rows=5000)),
        POLICY,
        "promote",
        "every check passed",
    ),
    (
        "prediction drift is advisory by default",
        {},
        measured(prediction_drift=DriftScore(value=0.4, method="wasserstein", rows=5000)),
        POLICY,
        "promote",
        "every check passed",
    ),
    (
        "low paired agreement rolls back",
        {},
        measured(agreement=Agreement(n=5000, agree=3500, mean_abs_dp=0.2)),
        POLICY,
        "rollback",
        "agreement: both models give the same label to 70.0 % (3,500 of 5,000)",
    ),
    (
        "paired agreement close to its limit is inconclusive: hold",
        {},
        measured(agreement=Agreement(n=400, agree=362, mean_abs_dp=0.05)),
        POLICY,
        "hold",
        "waiting for checks to pass: agreement",
    ),
    (
        "worse accuracy from labels rolls back, saying how many labels each arm had",
        {},
        measured(
            champion=arm(40_000, labeled=20_000, accuracy=0.95),
            candidate=arm(10_000, labeled=5_000, accuracy=0.85),
        ),
        POLICY,
        "rollback",
        "(5,000 labels on the candidate, 20,000 on the champion)",
    ),
    (
        "a recall drop rolls back once the policy selects recall",
        {},
        measured(
            champion=arm(
                40_000, labels=LabelOutcomes(true_positives=180, false_negatives=20, true_negatives=9800)
            ),
            candidate=arm(
                10_000, labels=LabelOutcomes(true_positives=110, false_negatives=90, true_negatives=9800)
            ),
        ),
        POLICY.model_copy(
            update={
                "checks": {
                    **POLICY.checks,
                    "recall": CheckPolicy(direction="decrease_is_bad", tolerance=0.05),
                }
            }
        ),
        "rollback",
        "recall",
    ),
    (
        "recall is off by default: the same labels promote",
        {},
        measured(
            champion=arm(
                40_000, labels=LabelOutcomes(true_positives=180, false_negatives=20, true_negatives=9800)
            ),
            candidate=arm(
                10_000, labels=LabelOutcomes(true_positives=110, false_negatives=90, true_negatives=9800)
            ),
        ),
        POLICY,
        "promote",
        "every check passed",
    ),
    # -- the approval gate ---------------------------------------------------------------------
    (
        "with approval required a release ready to promote waits for a human",
        {},
        HEALTHY,
        GATED,
        "await_approval",
        "waiting for a human approval (up to 12.0 h, then roll back)",
    ),
    (
        "with approval required a release at max duration that could promote waits too",
        {"elapsed": "49h"},
        HEALTHY,
        GATED,
        "await_approval",
        "maximum duration",
    ),
    (
        "approval required does not stop a rollback",
        {"elapsed": "2h", "baked": "0.5h", "step_index": 0},
        measured(candidate=arm(10_000, error_rate=0.05)),
        GATED,
        "rollback",
        "error_rate",
    ),
    (
        "approval required does not change a step up",
        {"elapsed": "2h", "baked": "1.5h", "step_index": 0},
        HEALTHY,
        GATED,
        "step_up",
        "20 % → 50 %",
    ),
    (
        "waiting for approval, still healthy: hold",
        {"phase": AWAITING, "waited": "2h"},
        HEALTHY,
        GATED,
        "hold",
        "awaiting approval (2.0 h of 12.0 h)",
    ),
    (
        "waiting for approval, a critical check fails: roll back at once",
        {"phase": AWAITING, "waited": "2h"},
        measured(candidate=arm(10_000, error_rate=0.05)),
        GATED,
        "rollback",
        "critical check failed",
    ),
    (
        "waiting for approval, a non-critical check fails: roll back",
        {"phase": AWAITING, "waited": "2h"},
        measured(candidate=arm(10_000, positive_rate=0.12)),
        GATED,
        "rollback",
        "check failed: positive_rate",
    ),
    (
        "waiting for approval, a check turns inconclusive: hold and say so",
        {"phase": AWAITING, "waited": "2h"},
        measured(agreement=Agreement(n=400, agree=362, mean_abs_dp=0.05)),
        GATED,
        "hold",
        "awaiting approval (2.0 h of 12.0 h); meanwhile: waiting for checks to pass: agreement",
    ),
    (
        "no answer within the approval timeout: policy says roll back",
        {"phase": AWAITING, "waited": "12h"},
        HEALTHY,
        GATED,
        "rollback",
        "no approval within 12.0 h: policy says roll back",
    ),
    (
        "no answer within the approval timeout, policy says promote and checks pass: promote",
        {"phase": AWAITING, "waited": "13h"},
        HEALTHY,
        GATED_PROMOTE,
        "promote",
        "no approval within 12.0 h: policy says promote",
    ),
    (
        "no answer within the timeout, policy says promote but a check is undecided now: roll back",
        {"phase": AWAITING, "waited": "13h"},
        measured(agreement=Agreement(n=400, agree=362, mean_abs_dp=0.05)),
        GATED_PROMOTE,
        "rollback",
        "checks do not pass now",
    ),
    (
        "no answer within the timeout, policy says promote but too few samples now: roll back",
        {"phase": AWAITING, "waited": "13h", "elapsed": "30h"},
        measured(candidate=arm(10, window=(5, 0))),
        GATED_PROMOTE,
        "rollback",
        "waiting for samples",
    ),
]


@pytest.mark.parametrize(
    ("case", "state_kwargs", "measurements", "policy", "action", "fragment"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_decide_table(
    case: str,
    state_kwargs: dict[str, Any],
    measurements: Measurements,
    policy: RolloutPolicy,
    action: str,
    fragment: str,
) -> None:
    decision = decide(policy, state(**state_kwargs), measurements, NOW)
    assert decision.action == action, decision.reason
    assert fragment in decision.reason
    expected_traffic = {"promote": 100, "rollback": 0, "step_up": 50}.get(action)
    if expected_traffic is not None:
        assert decision.traffic == expected_traffic
    else:  # hold and await_approval keep the traffic where it is
        assert decision.traffic == state(**state_kwargs).traffic
    assert decision.at == NOW


def test_every_enabled_check_is_reported_with_its_evidence() -> None:
    decision = decide(POLICY, state(), HEALTHY, NOW)
    names = [c.name for c in decision.checks]
    assert names == list(POLICY.enabled_checks())
    error_rate = next(c for c in decision.checks if c.name == "error_rate")
    assert error_rate.verdict == "pass"
    assert error_rate.n_champion == 40_000
    assert error_rate.n_candidate == 10_000
    assert error_rate.test
    assert error_rate.threshold
    assert error_rate.ci_low is not None
    assert error_rate.ci_high is not None
    assert error_rate.ci_low <= error_rate.ci_high


def test_decision_serialises_without_nan() -> None:
    decision = decide(POLICY, state(), measured(candidate=arm(0), champion=arm(0)), NOW)
    text = decision.to_json()
    assert "NaN" not in text
    assert decision.action == "hold"


def test_decide_is_pure() -> None:
    first = decide(POLICY, state(), HEALTHY, NOW)
    second = decide(POLICY, state(), HEALTHY, NOW)
    assert first == second


def test_disabled_check_is_not_judged() -> None:
    checks = dict(POLICY.checks)
    checks["positive_rate"] = checks["positive_rate"].model_copy(update={"enabled": False})
    policy = POLICY.model_copy(update={"checks": checks})
    decision = decide(policy, state(), measured(candidate=arm(10_000, positive_rate=0.12)), NOW)
    assert decision.action == "promote"
    assert "positive_rate" not in [c.name for c in decision.checks]


def test_without_approval_a_release_never_waits() -> None:
    """The gate is off by default: the same release promotes."""
    assert not POLICY.approval.required
    assert decide(POLICY, state(), HEALTHY, NOW).action == "promote"
    assert decide(GATED, state(), HEALTHY, NOW).action == "await_approval"


def test_approval_policy_rejects_a_zero_timeout() -> None:
    with pytest.raises(ValueError, match=r"approval\.timeout must be positive"):
        ApprovalPolicy(required=True, timeout="0s")
