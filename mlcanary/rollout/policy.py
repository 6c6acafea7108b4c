"""The rollout policy (``configs/rollout.yaml``): traffic steps, timing, sample floors and checks.

Durations are written as ``90s``, ``15m``, ``1h``, ``2d`` (or a number of seconds). Each check is
keyed by the metric it judges. A failing check rolls the release back once both arms reached the
sample floor; a ``critical`` one may do so earlier (the fast path); ``advisory`` checks are reported
and never block. Sequential checks share ``alpha`` by their ``alpha_weight``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: Any) -> Any:
    """``"15m"`` → ``timedelta(minutes=15)``; numbers are seconds; timedeltas pass through."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
        raise ValueError(f"not a duration: {value!r} (write e.g. 90s, 15m, 1h, 2d)")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration in the units above."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


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
    "precision",
    "recall",
    "f1",
    "brier",
    "log_loss",
    "expected_cost",
]
Direction = Literal["increase_is_bad", "decrease_is_bad", "change_is_bad"]
LABEL_METRICS: frozenset[str] = frozenset(
    {"accuracy", "precision", "recall", "f1", "brier", "log_loss", "expected_cost"}
)
"""Business metrics from ground-truth labels (compared over requests old enough to have one)."""
TWO_ARM_METRICS: frozenset[str] = frozenset({"error_rate", "latency", "latency_p95", "positive_rate"}) | (
    LABEL_METRICS
)
"""Checks comparing the candidate with the champion through an anytime-valid confidence sequence."""
SEQUENTIAL_METRICS: frozenset[str] = TWO_ARM_METRICS | {"agreement"}
"""Checks whose verdict comes from an anytime-valid test and so spend a share of ``alpha``."""


class CheckPolicy(BaseModel):
    """How one metric is judged.

    Sequential checks (error_rate, latency, latency_p95, positive_rate and the label metrics
    accuracy, precision, recall, f1, brier, log_loss, expected_cost) compare the candidate with the
    champion with an anytime-valid confidence sequence at their share of the policy's ``alpha``:
    they **fail** when the harm is confidently beyond the margin ``tolerance + relative_tolerance ×
    champion`` and **pass** when it is confidently within it. ``agreement`` tests the paired
    agreement rate against ``threshold`` the same way. ``error_burst`` counts the last window's 5xx,
    the drift checks compare Evidently's score with ``threshold``. A wider ``pass_tolerance`` /
    ``pass_relative_tolerance`` lets a check fail early on a small harm and still pass an equal
    candidate in reasonable time (a harm between the two margins eventually fails).

    A failing check that is not advisory rolls the release back once both arms have
    ``min_samples_per_arm`` requests; a ``critical`` one is judged earlier, from
    ``critical_min_samples`` requests per arm (the fast path for hard failures such as 5xx).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="judge this metric at all")
    critical: bool = Field(
        False, description="fast path: judged (and rolled back on) before the sample floor"
    )
    advisory: bool = Field(False, description="reported only: never blocks promotion or rolls back")
    direction: Direction = Field("increase_is_bad", description="which change of the metric is harm")
    tolerance: float = Field(
        0.0, ge=0.0, description="absolute harm accepted before failing (effect-size floor)"
    )
    relative_tolerance: float = Field(
        0.0,
        ge=0.0,
        description="harm accepted as a share of the champion's value (latency: +0.1 = 10 % slower)",
    )
    pass_tolerance: float | None = Field(
        None,
        ge=0.0,
        description="absolute harm a pass must be confidently below (at least, and by default, tolerance)",
    )
    pass_relative_tolerance: float | None = Field(
        None,
        ge=0.0,
        description="the pass margin's share of the champion's value (at least relative_tolerance)",
    )
    threshold: float | None = Field(None, description="limit for one-arm checks (see each metric)")
    must_have_data: bool = Field(True, description="no data blocks promotion (never promotes)")
    detect: float | None = Field(
        None,
        gt=0.0,
        description="harm the test should catch fastest, in the tolerance's units (rate points; "
        "a relative change for latency); tunes the mixing variance. Default: the margin",
    )
    alpha_weight: float = Field(
        1.0, gt=0.0, description="this check's share of alpha, relative to the other sequential checks"
    )

    @model_validator(mode="after")
    def _relative_decrease_below_one(self) -> CheckPolicy:
        if self.direction != "increase_is_bad" and self.pass_margin[1] >= 1:
            raise ValueError("a relative tolerance must be < 1 when a decrease is harm")
        return self

    @property
    def pass_margin(self) -> tuple[float, float]:
        """(absolute, relative) margin a pass must be confidently within: the pass settings, never
        tighter than the failure margin (raising ``tolerance`` in a profile widens both)."""
        absolute = max(self.tolerance, self.pass_tolerance or 0.0)
        relative = max(self.relative_tolerance, self.pass_relative_tolerance or 0.0)
        return absolute, relative

    @model_validator(mode="before")
    @classmethod
    def _legacy_relative(cls, data: Any) -> Any:
        # `relative: true` (before relative_tolerance existed) meant "tolerance is relative".
        if isinstance(data, dict) and "relative" in data:
            data = dict(data)
            if data.pop("relative"):
                data["relative_tolerance"] = data.get("tolerance", 0.0)
                data["tolerance"] = 0.0
        return data


def _default_checks() -> dict[str, CheckPolicy]:
    # The reasoning behind each number, with the benchmark that measured it: docs/judging.md.
    return {
        # The serving layer reports the candidate arm not ready while it should take traffic (a
        # crashed process: the front door answers 503 and nothing reaches the inference log).
        "availability": CheckPolicy(critical=True, must_have_data=False),
        # 5xx rate, candidate vs champion: fails above champion × 1.02 + 0.02 points (any clear
        # increase), tuned to catch 1 % → 3 % within about 1,000 canary requests; passes once
        # confidently below champion × 2 + 0.2 points. Over half of alpha: the hard failure users
        # meet first.
        "error_rate": CheckPolicy(
            critical=True,
            tolerance=0.0002,
            relative_tolerance=0.02,
            pass_tolerance=0.002,
            pass_relative_tolerance=1.0,
            detect=0.02,
            alpha_weight=6.0,
        ),
        # "Any 5xx from the canary? Kill it": in the last tick window, at least `threshold` 5xx
        # that are also more than `tolerance` of the candidate's requests.
        "error_burst": CheckPolicy(critical=True, threshold=5, tolerance=0.2),
        # Geometric-mean latency, candidate vs champion: fails above +10 %, passes below +25 %.
        # Critical: log-latency is close to normal, so 50 requests per arm resolve +30 %.
        "latency": CheckPolicy(
            critical=True, relative_tolerance=0.1, pass_relative_tolerance=0.25, detect=0.3, alpha_weight=2.0
        ),
        # Share of requests slower than the champion's P95 (5 % on the champion by definition).
        "latency_p95": CheckPolicy(tolerance=0.05),
        # Share of positive predictions, either way: beyond ±(1 point + half the champion's share).
        "positive_rate": CheckPolicy(direction="change_is_bad", tolerance=0.01, relative_tolerance=0.5),
        # Paired: both models scoring the same logged inputs agree on at least `threshold` of them.
        "agreement": CheckPolicy(
            direction="decrease_is_bad", threshold=0.9, must_have_data=False, alpha_weight=0.5
        ),
        # Evidently drift of the candidate's probabilities against the champion's. Advisory: a good
        # model of another family reshapes the score distribution (0.11 seen at 99.6 % agreement);
        # paired agreement is the blocking model-level check.
        "prediction_drift": CheckPolicy(advisory=True, threshold=0.1, must_have_data=False),
        # Evidently share of drifted input columns against the training reference (traffic, not
        # the model, so advisory by default).
        "input_drift": CheckPolicy(advisory=True, threshold=0.5, must_have_data=False),
        # From ground-truth labels: accuracy more than 2 points lower fails.
        "accuracy": CheckPolicy(
            direction="decrease_is_bad", tolerance=0.02, must_have_data=False, alpha_weight=0.5
        ),
        # More business metrics from labels, off until a policy turns them on.
        **{
            name: CheckPolicy(
                enabled=False,
                direction="decrease_is_bad",
                tolerance=0.05,
                must_have_data=False,
                alpha_weight=0.5,
            )
            for name in ("precision", "recall", "f1")
        },
        **{
            name: CheckPolicy(enabled=False, relative_tolerance=0.1, must_have_data=False, alpha_weight=0.5)
            for name in ("brier", "log_loss", "expected_cost")
        },
    }


class CostMatrix(BaseModel):
    """What each outcome of a labelled prediction costs (``expected_cost`` is their mean per request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    true_positive: float = Field(0.0, description="cost of a correctly flagged positive")
    false_positive: float = Field(1.0, description="cost of flagging a negative (e.g. a review)")
    false_negative: float = Field(10.0, description="cost of missing a positive (e.g. a fraud loss)")
    true_negative: float = Field(0.0, description="cost of a correctly passed negative")


class LabelPolicy(BaseModel):
    """Ground-truth labels for the business metrics: how late they arrive, what errors cost.

    Only requests received at least ``delay`` before the tick are compared (the same cut-off for
    both arms), so an arm is not judged on the few labels that happened to arrive early.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay: Duration = Field(
        timedelta(hours=1), description="how long after a request its label is expected to arrive"
    )
    costs: CostMatrix = Field(default_factory=CostMatrix, description="cost of each outcome")


class ApprovalPolicy(BaseModel):
    """A human gate before promotion (off by default).

    When ``required``, a release the judge would promote waits in the ``awaiting_approval`` phase at
    its last traffic step; the monitor keeps judging it (a failing check still rolls back at
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
        200, ge=1, description="requests each arm needs before a failing check rolls back"
    )
    critical_min_samples: int = Field(
        50, ge=1, description="requests each arm needs before a critical two-arm check is judged"
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
    labels: LabelPolicy = Field(
        default_factory=LabelPolicy, description="label delay and cost matrix of the business metrics"
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
        return self

    def enabled_checks(self) -> dict[str, CheckPolicy]:
        return {name: check for name, check in self.checks.items() if check.enabled}

    def alpha_for(self, name: str) -> float:
        """The share of ``alpha`` the sequential check ``name`` may spend.

        ``alpha`` is split over the enabled, non-advisory sequential checks in proportion to their
        ``alpha_weight`` (a weighted Bonferroni split), so the chance that *any* of them fails a good
        release over the whole window stays at most ``alpha``. A check outside that set gets 0.
        """
        weights = {
            metric: check.alpha_weight
            for metric, check in self.enabled_checks().items()
            if metric in SEQUENTIAL_METRICS and not check.advisory
        }
        total = sum(weights.values())
        if name not in weights or total <= 0:
            return 0.0
        return self.alpha * weights[name] / total

    @property
    def fast_path_samples(self) -> int:
        """Requests per arm before a critical two-arm check is decisive (never above the floor)."""
        return min(self.critical_min_samples, self.min_samples_per_arm)
