"""The rollout policy (``configs/rollout.yaml``): traffic steps, timing, sample floors and checks.

Durations are written as ``90s``, ``15m``, ``1h``, ``2d`` (or a number of seconds). Each check is
keyed by the metric it judges; ``critical`` failures roll back at once, other failures block
promotion, ``advisory`` checks are reported and never block.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from mlcanary.rollout.durations import format_duration, parse_duration

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]

MetricName = Literal[
    "availability",
    "error_rate",
    "error_burst",
    "latency",
    "latency_p95",
    "positive_rate",
    "agreement",
    "prediction_drift",
    "input_drift",
    "accuracy",
]
Direction = Literal["increase_is_bad", "decrease_is_bad", "change_is_bad"]
TWO_ARM_METRICS: frozenset[str] = frozenset(
    {"error_rate", "latency", "latency_p95", "positive_rate", "accuracy"}
)
ONE_ARM_METRICS: frozenset[str] = frozenset({"error_burst", "agreement", "prediction_drift", "input_drift"})
"""Checks that compare a value with their ``threshold`` (which the policy therefore requires)."""


class CheckPolicy(BaseModel):
    """How one metric is judged.

    Two-arm checks (error_rate, latency, latency_p95, positive_rate, accuracy) compare the candidate
    with the champion with an anytime-valid confidence sequence: they fail when the harm is
    confidently beyond ``tolerance`` and pass when it is confidently within it. One-arm checks
    (error_burst, agreement, prediction_drift, input_drift) compare a value with ``threshold``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="judge this metric at all")
    critical: bool = Field(False, description="a failure rolls back at once")
    advisory: bool = Field(False, description="reported only: never blocks promotion or rolls back")
    direction: Direction = Field("increase_is_bad", description="which change of the metric is harm")
    tolerance: float = Field(
        0.0, ge=0.0, description="harm accepted before failing (effect-size floor); > 0 to ever pass"
    )
    relative: bool = Field(False, description="tolerance is a share of the champion's value")
    threshold: float | None = Field(None, description="limit for one-arm checks (see each metric)")
    must_have_data: bool = Field(True, description="no data blocks promotion (never promotes)")


def _default_checks() -> dict[str, CheckPolicy]:
    return {
        # The serving layer reports the candidate arm not ready while it should take traffic (a
        # crashed process: the front door answers 503 and nothing reaches the inference log).
        "availability": CheckPolicy(critical=True, must_have_data=False),
        # 5xx rate, candidate vs champion: a real regression of more than one point rolls back.
        "error_rate": CheckPolicy(critical=True, tolerance=0.01),
        # "Any 5xx from the canary? Kill it": in the last tick window, at least `threshold` 5xx
        # that are also more than `tolerance` of the candidate's requests.
        "error_burst": CheckPolicy(critical=True, threshold=5, tolerance=0.2),
        # Mean log-latency, candidate vs champion: more than 20 % slower rolls back.
        "latency": CheckPolicy(critical=True, tolerance=0.2, relative=True),
        # Share of requests slower than the champion's P95 (5 % on the champion by definition).
        "latency_p95": CheckPolicy(tolerance=0.05),
        # Share of positive predictions: a shift of more than 2 points either way blocks promotion.
        "positive_rate": CheckPolicy(direction="change_is_bad", tolerance=0.02),
        # Paired: both models scoring the same logged inputs agree on at least `threshold` of them.
        "agreement": CheckPolicy(direction="decrease_is_bad", threshold=0.8, must_have_data=False),
        # Evidently drift of the candidate's probabilities against the champion's. Advisory: a good
        # model of another family reshapes the score distribution (0.11 seen at 99.6 % agreement);
        # paired agreement is the blocking model-level check.
        "prediction_drift": CheckPolicy(advisory=True, threshold=0.1, must_have_data=False),
        # Evidently share of drifted input columns against the training reference (traffic, not
        # the model, so advisory by default).
        "input_drift": CheckPolicy(advisory=True, threshold=0.5, must_have_data=False),
        # From ground-truth feedback: accuracy more than 2 points lower blocks promotion.
        "accuracy": CheckPolicy(direction="decrease_is_bad", tolerance=0.02, must_have_data=False),
    }


class ApprovalPolicy(BaseModel):
    """A human gate before promotion (off by default).

    When ``required``, a release the judge would promote waits in the ``awaiting_approval`` phase at
    its last traffic step; the monitor keeps judging it (a critical failure still rolls back at
    once) until a human approves (promote) or rejects (roll back), for instance from the Prefect UI.
    With no answer within ``timeout`` the release follows ``on_timeout``; ``promote`` still needs
    every blocking check passing at that tick, otherwise it rolls back (missing data never promotes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = Field(False, description="pause for a human approve / reject before promoting")
    timeout: Duration = Field(
        timedelta(hours=24), description="how long a release waits for an answer before on_timeout"
    )
    on_timeout: Literal["rollback", "promote"] = Field(
        "rollback", description="what a release with no answer within the timeout does"
    )

    @model_validator(mode="after")
    def _positive(self) -> ApprovalPolicy:
        if self.timeout <= timedelta(0):
            raise ValueError("rollout.approval.timeout must be positive")
        return self


class RolloutPolicy(BaseModel):
    """When to step up, promote or roll back (see ``configs/rollout.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[int] = Field(
        default_factory=lambda: [20],
        min_length=1,
        description="candidate traffic percent at each step, increasing, each 1-99 (promotion is 100)",
    )
    min_bake_per_step: Duration = Field(
        timedelta(hours=1), description="least time at a step before stepping up or promoting"
    )
    min_duration: Duration = Field(timedelta(hours=24), description="least time before promotion")
    max_duration: Duration = Field(
        timedelta(hours=48), description="when an undecided release follows on_max_duration"
    )
    tick_interval: Duration = Field(
        timedelta(minutes=15), description="how often the monitor runs (its schedule)"
    )
    min_samples_per_arm: int = Field(
        200, ge=1, description="requests each arm needs before any two-arm check is judged"
    )
    alpha: float = Field(
        0.05, gt=0.0, lt=0.5, description="false-rollback rate of a good release, over the whole window"
    )
    on_max_duration: Literal["rollback", "promote"] = Field(
        "rollback", description="what an inconclusive release does at max_duration"
    )
    checks: dict[MetricName, CheckPolicy] = Field(
        default_factory=_default_checks, description="per-metric judgement; unlisted metrics keep defaults"
    )
    approval: ApprovalPolicy = Field(
        default_factory=ApprovalPolicy, description="optional human approval before promotion"
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_checks(cls, data: Any) -> Any:
        # A policy file lists only the checks (and fields) it changes.
        if isinstance(data, dict) and isinstance(data.get("checks"), dict):
            defaults = {k: v.model_dump() for k, v in _default_checks().items()}
            merged = dict(defaults)
            for name, override in data["checks"].items():
                if isinstance(override, dict) and name in defaults:
                    merged[name] = {**defaults[name], **override}
                else:
                    merged[name] = override
            data = {**data, "checks": merged}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RolloutPolicy:
        if any(not 1 <= s <= 99 for s in self.steps):
            raise ValueError("rollout.steps: each step must be within 1-99 (promotion sends 100)")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"rollout.steps must increase: {self.steps}")
        if self.max_duration < self.min_duration:
            raise ValueError("rollout.max_duration must be at least rollout.min_duration")
        for name, check in self.checks.items():
            if name in ONE_ARM_METRICS and check.enabled and check.threshold is None:
                raise ValueError(
                    f"rollout.checks.{name}.threshold is required (it is what the check compares)"
                )
        return self

    def enabled_checks(self) -> dict[str, CheckPolicy]:
        return {name: check for name, check in self.checks.items() if check.enabled}

    @property
    def alpha_per_check(self) -> float:
        """Bonferroni share of ``alpha`` for each sequential two-arm check that can block a release,
        so the chance that any of them fails a good release stays at most ``alpha``."""
        blocking = [
            name
            for name, check in self.enabled_checks().items()
            if name in TWO_ARM_METRICS and not check.advisory
        ]
        return self.alpha / max(1, len(blocking))
