"""What the monitor measured for both arms over the same window: the judge's only input.

Adapters (the inference-log store, Prometheus, Evidently) produce these values; only ``decide()``
judges them. Counts are cumulative since the release started, so the sequential tests see all the
evidence; ``window_*`` counts cover the last tick only (for bursts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mlcanary.rollout.stats import MeanSummary


@dataclass(frozen=True)
class Percentiles:
    """Latency percentiles in milliseconds."""

    p50: float
    p95: float
    p99: float


@dataclass(frozen=True)
class ArmMetrics:
    """Cumulative measurements of one arm since the release started.

    ``slow`` counts requests slower than the *champion's* P95 over the same window (so about 5 % of
    the champion's own requests); ``correct`` counts labelled predictions that matched the label.
    """

    version: str | None = None
    requests: int = 0
    errors: int = 0
    log_latency: MeanSummary | None = None
    latency_ms: Percentiles | None = None
    slow: int = 0
    predictions: int = 0
    positives: int = 0
    mean_probability: float | None = None
    labeled: int = 0
    correct: int = 0
    window_requests: int = 0
    window_errors: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def positive_rate(self) -> float | None:
        return self.positives / self.predictions if self.predictions else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labeled if self.labeled else None


@dataclass(frozen=True)
class Agreement:
    """Paired comparison: logged inputs re-scored by the other model.

    ``agree`` of ``n`` inputs got the same label from both models; ``mean_abs_dp`` is the mean
    absolute difference of their probabilities.
    """

    n: int
    agree: int
    mean_abs_dp: float

    @property
    def rate(self) -> float | None:
        return self.agree / self.n if self.n else None


@dataclass(frozen=True)
class DriftScore:
    """An Evidently drift result reduced to one number and how it was computed.

    For prediction drift ``value`` is the drift score (distance or p-value per ``method``); for input
    drift it is the share of drifted columns. ``pvalue`` says the value is a p-value (drift *below*
    the policy's threshold) rather than a distance or a share (drift at or above it); the verdict is
    the drift check's, against the policy. ``rows`` is how many rows were compared (after sampling).
    """

    value: float
    method: str
    rows: int
    pvalue: bool = False
    detail: str | None = None


@dataclass(frozen=True)
class Measurements:
    """Everything measured at one tick. ``problems`` maps a metric to why it could not be measured
    (the check then reports ``error``, which never promotes). ``candidate_ready`` is what the
    serving layer observes of the candidate arm (None when unknown); a candidate that stopped
    answering logs nothing, so the inference log alone cannot see it."""

    start: datetime
    end: datetime
    window_start: datetime
    champion: ArmMetrics
    candidate: ArmMetrics
    agreement: Agreement | None = None
    prediction_drift: DriftScore | None = None
    input_drift: DriftScore | None = None
    candidate_ready: bool | None = None
    serving_detail: str | None = None
    problems: dict[str, str] = field(default_factory=dict)
