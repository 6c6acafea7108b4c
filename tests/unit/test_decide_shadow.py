"""Table-driven tests of the shadow phase's judge (``decide()`` on a ``shadowing`` release) and of
its paired statistics."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mlcanary.rollout.decide import decide
from mlcanary.rollout.measurements import ArmMetrics, Measurements, PairedScores, Percentiles
from mlcanary.rollout.policy import RolloutPolicy, ShadowPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.stats import MeanSummary, compare_paired

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = RolloutPolicy(
    steps=[20, 50],
    max_duration="48h",
    min_duration="24h",
    shadow=ShadowPolicy(enabled=True, duration="30m", min_samples=200, share=0.5),
)


def arm(
    requests: int, *, errors: float = 0.01, latency_ms: float = 20.0, positives: float = 0.04
) -> ArmMetrics:
    return ArmMetrics(
        version="x",
        requests=requests,
        errors=round(requests * errors),
        log_latency=MeanSummary(n=requests, mean=math.log(latency_ms), variance=0.1, log_scale=True)
        if requests
        else None,
        latency_ms=Percentiles(latency_ms, latency_ms * 1.5, latency_ms * 2) if requests else None,
        slow=round(requests * 0.05),
        predictions=requests,
        positives=round(requests * positives),
        window_requests=requests // 10,
        window_errors=0,
    )


def paired(n: int, *, agree: float = 0.995, shift: float = 0.001, spread: float = 0.01) -> PairedScores:
    return PairedScores(
        live=2 * n,
        mirrored=n,
        pairs=n,
        agree=round(n * agree),
        probability_diff=MeanSummary(n=n, mean=shift, variance=spread**2) if n else None,
        mean_abs_dp=abs(shift) + spread,
    )


def shadow_measurements(mirrored: int = 1000, **changes: object) -> Measurements:
    scores = changes.pop("paired", paired(mirrored))
    assert isinstance(scores, PairedScores)
    base = Measurements(
        start=T0,
        end=T0,
        window_start=T0,
        champion=arm(2 * mirrored),
        candidate=arm(mirrored),
        agreement=scores.agreement,
        paired=scores,
        candidate_ready=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def shadowing() -> ReleaseState:
    return ReleaseState(
        model="fraud",
        candidate_version="2",
        champion_version="1",
        phase=Phase.SHADOWING,
        step_index=0,
        traffic=0,
        started_at=T0,
        step_started_at=T0,
    )


def at(elapsed_hours: float) -> datetime:
    return T0 + timedelta(hours=elapsed_hours)


FLIPPED = paired(1000, agree=0.02, shift=0.85, spread=0.1)

CASES = [
    # (id, measurements, hours since start, action, words in the reason)
    ("healthy after the duration → first canary step", shadow_measurements(), 1, "step_up", "shadow passed"),
    (
        "healthy before the duration → hold",
        shadow_measurements(),
        0.1,
        "hold",
        "shadowing: 6.0 min of 30.0 min",
    ),
    ("too few mirrored requests → hold", shadow_measurements(50), 1, "hold", "waiting for samples"),
    (
        "label flip → rejected by agreement",
        shadow_measurements(paired=FLIPPED),
        0.1,
        "rollback",
        "rejected in shadow",
    ),
    (
        "5xx storm on the mirrored calls → rejected at once (critical), even below the floor",
        shadow_measurements(100, candidate=arm(100, errors=0.5)),
        0.02,
        "rollback",
        "critical check failed: error_rate",
    ),
    (
        "slow candidate → rejected (critical latency)",
        shadow_measurements(candidate=arm(1000, latency_ms=60.0)),
        0.1,
        "rollback",
        "latency",
    ),
    (
        "50 % slower under mirroring → left to the canary (shadow latency margin)",
        shadow_measurements(candidate=arm(1000, latency_ms=30.0)),
        1,
        "step_up",
        "shadow passed",
    ),
    (
        "candidate not ready → rejected (availability)",
        shadow_measurements(candidate_ready=False),
        0.1,
        "rollback",
        "availability",
    ),
    (
        "probability shift alone → rejected",
        shadow_measurements(paired=paired(1000, agree=0.99, shift=0.2, spread=0.05)),
        0.1,
        "rollback",
        "probability_shift",
    ),
    (
        "max duration in shadow without data → rejected",
        shadow_measurements(10),
        49,
        "rollback",
        "maximum duration",
    ),
    (
        "an unmeasurable blocking check holds",
        shadow_measurements(problems={"error_rate": "log unreadable"}),
        1,
        "hold",
        "could not be measured",
    ),
]


@pytest.mark.parametrize(
    ("measurements", "hours", "action", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_shadow_rules(measurements: Measurements, hours: float, action: str, words: str) -> None:
    decision = decide(POLICY, shadowing(), measurements, at(hours))
    assert decision.action == action, decision.reason
    assert words in decision.reason
    # The shadow phase never gives users to the candidate except by moving on to the first step.
    assert decision.traffic == (POLICY.steps[0] if action == "step_up" else 0)


def test_shadow_checks_are_the_shadow_set() -> None:
    names = {c.name for c in decide(POLICY, shadowing(), shadow_measurements(), at(1)).checks}
    assert "probability_shift" in names
    assert "agreement" in names
    assert "error_rate" in names
    assert not names & {"input_drift", "prediction_drift"}
    canary = replace(shadowing(), phase=Phase.PROGRESSING, traffic=20)
    canary_names = {c.name for c in decide(POLICY, canary, shadow_measurements(), at(1)).checks}
    assert "probability_shift" not in canary_names
    assert "input_drift" in canary_names


def test_shadow_floors_come_from_the_shadow_policy() -> None:
    # 150 pairs: above a shadow min_samples of 100, below the canary's 200 per arm.
    policy = POLICY.model_copy(update={"shadow": ShadowPolicy(enabled=True, duration="1m", min_samples=100)})
    flipped = paired(150, agree=0.0, shift=0.9, spread=0.05)
    decision = decide(policy, shadowing(), shadow_measurements(150, paired=flipped), at(0.1))
    assert decision.action == "rollback"
    verdicts = {c.name: c.verdict for c in decision.checks}
    assert verdicts["agreement"] == "fail"
    assert verdicts["probability_shift"] == "fail"


def test_agreement_reason_speaks_of_mirrored_requests() -> None:
    decision = decide(POLICY, shadowing(), shadow_measurements(paired=FLIPPED), at(0.1))
    agreement = next(c for c in decision.checks if c.name == "agreement")
    assert "mirrored requests (identical inputs)" in agreement.reason


def test_canary_alpha_split_is_unchanged_by_the_shadow_check() -> None:
    plain = RolloutPolicy(checks={"probability_shift": {"enabled": False}})
    assert RolloutPolicy().alpha_for("error_rate") == pytest.approx(plain.alpha_for("error_rate"))
    assert RolloutPolicy().alpha_for("probability_shift") == 0.0
    assert RolloutPolicy().for_shadow().alpha_for("probability_shift") > 0.0


@pytest.mark.parametrize(
    ("n", "mean", "sd", "verdict"),
    [
        (500, 0.0, 0.0, "pass"),  # identical answers: confidently no shift
        (20, 0.0, 0.0, "inconclusive"),  # too few to be sure of anything
        (200, 0.9, 0.05, "fail"),  # a flip
        (5000, 0.03, 0.05, "fail"),  # a small but real shift beyond 2 points
        (5000, 0.005, 0.05, "pass"),
        (5000, -0.03, 0.05, "pass"),  # a decrease is not harm for increase_is_bad
    ],
)
def test_compare_paired(n: int, mean: float, sd: float, verdict: str) -> None:
    result = compare_paired(
        MeanSummary(n=n, mean=mean, variance=sd**2),
        direction="increase_is_bad",
        tolerance=0.02,
        alpha=0.025,
        min_samples=30,
    )
    assert result.verdict == verdict
    assert result.ci_low <= mean <= result.ci_high


def test_compare_paired_holds_alpha_on_identical_models() -> None:
    # Paired differences of two equal models: centred noise. Looking after every 250 pairs up to
    # 5,000, the share of runs that ever fail stays below α.
    import numpy as np

    rng = np.random.default_rng(7)
    alpha, runs, failed = 0.05, 200, 0
    for _ in range(runs):
        d = np.clip(rng.normal(0.0, 0.05, 5000), -1, 1)
        cumsum, cumsq = np.cumsum(d), np.cumsum(d * d)
        for n in range(250, 5001, 250):
            summary = MeanSummary.from_sums(n, float(cumsum[n - 1]), float(cumsq[n - 1]))
            if (
                compare_paired(summary, direction="increase_is_bad", alpha=alpha, min_samples=30).verdict
                == "fail"
            ):
                failed += 1
                break
    assert failed / runs <= alpha
