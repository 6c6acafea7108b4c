"""The drift checks judge: a measured drift value against the policy's threshold (not the detector)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlcanary.rollout.checks import check_input_drift, check_prediction_drift
from mlcanary.rollout.measurements import ArmMetrics, DriftScore, Measurements
from mlcanary.rollout.policy import RolloutPolicy

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = RolloutPolicy(checks={"input_drift": {"threshold": 0.4}, "prediction_drift": {"threshold": 0.1}})


def measured(**drift: DriftScore | None) -> Measurements:
    return Measurements(
        start=T0, end=T0, window_start=T0, champion=ArmMetrics(), candidate=ArmMetrics(), **drift
    )


@pytest.mark.parametrize(("share", "verdict"), [(0.39, "pass"), (0.4, "fail"), (0.9, "fail")])
def test_input_drift_fails_at_or_above_the_policys_share(share: float, verdict: str) -> None:
    score = DriftScore(value=share, method="drifted-column share", rows=1000)
    result = check_input_drift(POLICY.checks["input_drift"], POLICY, measured(input_drift=score))
    assert result.verdict == verdict
    assert result.threshold == "40% of columns drifted"
    assert result.value == share
    assert result.reason.endswith(f"→ {'drift' if verdict == 'fail' else 'no drift'} (Evidently) (advisory)")


@pytest.mark.parametrize(
    ("value", "pvalue", "verdict"),
    [
        (0.05, False, "pass"),  # a distance below the threshold
        (0.1, False, "fail"),  # a distance at the threshold
        (0.05, True, "fail"),  # a p-value below the threshold
        (0.5, True, "pass"),  # a large p-value
    ],
)
def test_prediction_drift_follows_the_scores_direction(value: float, pvalue: bool, verdict: str) -> None:
    score = DriftScore(value=value, method="m", rows=1000, pvalue=pvalue)
    check = POLICY.checks["prediction_drift"]
    result = check_prediction_drift(check, POLICY, measured(prediction_drift=score))
    assert result.verdict == verdict
    assert ("a p-value < 0.1" if pvalue else "a drift score ≥ 0.1") in result.threshold
    assert f"→ {'drift' if verdict == 'fail' else 'no drift'} (Evidently)" in result.reason


def test_the_policy_requires_a_threshold_for_each_enabled_one_arm_check() -> None:
    with pytest.raises(ValueError, match=r"rollout.checks.input_drift.threshold is required"):
        RolloutPolicy(checks={"input_drift": {"threshold": None}})
    disabled = RolloutPolicy(checks={"input_drift": {"threshold": None, "enabled": False}})
    assert "input_drift" not in disabled.enabled_checks()
