"""What the monitor measured for both arms over the same window: the judge's only input.

Adapters (the inference-log store, Prometheus, Evidently) produce these values; only ``decide()``
judges them. Counts are cumulative since the release started, so the sequential tests see all the
evidence; ``window_*`` counts cover the last tick only (for bursts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from mlcanary.rollout.stats import MeanSummary


@dataclass(frozen=True)
class Percentiles:
    """Latency percentiles in milliseconds."""

    p50: float
    p95: float
    p99: float


@dataclass(frozen=True)
class LabelOutcomes:
    """One arm's predictions that have a ground-truth label, among requests old enough to have one.

    The confusion-matrix cells count labelled predictions at the serving threshold; the sums cover
    the ``scored`` labelled rows that also carry a positive-class probability p: the Brier score
    (p − y)² and the log loss −log(p if y = 1 else 1 − p), p clipped to [1e-15, 1 − 1e-15], each with
    the sum of its squares so that a test can use their variance.
    """

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    true_negatives: int = 0
    scored: int = 0
    brier_sum: float = 0.0
    brier_sq_sum: float = 0.0
    log_loss_sum: float = 0.0
    log_loss_sq_sum: float = 0.0

    @property
    def labeled(self) -> int:
        return self.true_positives + self.false_positives + self.false_negatives + self.true_negatives

    @property
    def correct(self) -> int:
        return self.true_positives + self.true_negatives

    @property
    def predicted_positive(self) -> int:
        return self.true_positives + self.false_positives

    @property
    def actual_positive(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labeled if self.labeled else None

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.predicted_positive if self.predicted_positive else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.actual_positive if self.actual_positive else None

    @property
    def f1(self) -> float | None:
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else None

    @property
    def brier(self) -> float | None:
        return self.brier_sum / self.scored if self.scored else None

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.scored if self.scored else None


class ProxyErrorCount(NamedTuple):
    """5xx the proxy answered for an arm whose server could not: since the release started
    (``total``) and in the last tick's window (``window``)."""

    total: int
    window: int


@dataclass(frozen=True)
class ArmMetrics:
    """Cumulative measurements of one arm since the release started.

    ``slow`` counts requests slower than the *champion's* P95 over the same window (so about 5 % of
    the champion's own requests); ``labels`` are the outcomes of its labelled predictions (see
    :class:`LabelOutcomes`). ``requests`` and ``errors`` are what the model server answered;
    ``proxy_errors`` (and ``window_proxy_errors`` for the last tick) are requests routed to this arm
    that the proxy answered with a 5xx of its own because the server could not (connection refused
    or reset, timeout: a crashed or hung server). They are in no other count, and the error checks
    add them to both sides: :attr:`routed` requests, :attr:`failed` of them. ``answered`` counts
    successful (2xx) answers, ``probabilities`` the answered rows that held a positive-class
    probability (``predictions`` those with a label).
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
    labels: LabelOutcomes = field(default_factory=LabelOutcomes)
    window_requests: int = 0
    window_errors: int = 0
    answered: int = 0
    probabilities: int = 0
    proxy_errors: int = 0
    window_proxy_errors: int = 0

    @property
    def routed(self) -> int:
        """Requests routed to this arm: answered by its server or, failing that, by the proxy."""
        return self.requests + self.proxy_errors

    @property
    def failed(self) -> int:
        """Routed requests that got a 5xx, from the server or from the proxy on its behalf."""
        return self.errors + self.proxy_errors

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.routed if self.routed else None

    @property
    def positive_rate(self) -> float | None:
        return self.positives / self.predictions if self.predictions else None

    @property
    def labeled(self) -> int:
        return self.labels.labeled

    @property
    def correct(self) -> int:
        return self.labels.correct

    @property
    def accuracy(self) -> float | None:
        return self.labels.accuracy


@dataclass(frozen=True)
class Agreement:
    """Paired comparison: logged inputs re-scored by the other model.

    ``agree`` of ``n`` inputs got the same label from both models; ``mean_abs_dp`` is the mean
    absolute difference of their probabilities (None when a model gives labels only).
    """

    n: int
    agree: int
    mean_abs_dp: float | None

    @property
    def rate(self) -> float | None:
        return self.agree / self.n if self.n else None


@dataclass(frozen=True)
class PairedScores:
    """The shadow phase's pairs: live requests answered by the champion whose mirrored copy the
    candidate answered too (the very same inputs), joined by request id.

    ``live`` counts the champion's answered requests since the phase began, ``mirrored`` the
    candidate's answers to mirrored copies (errors included), ``pairs`` the instances both models
    predicted, ``agree`` those with the same label, ``probability_diff`` the candidate − champion
    positive-class probability over the pairs carrying both (``None`` without any) and
    ``mean_abs_dp`` its mean absolute value.
    """

    live: int
    mirrored: int
    pairs: int
    agree: int
    probability_diff: MeanSummary | None = None
    mean_abs_dp: float = 0.0

    @property
    def share(self) -> float | None:
        """The share of live requests that reached the candidate as a mirrored copy."""
        return self.mirrored / self.live if self.live else None

    @property
    def agreement(self) -> Agreement:
        """The pairs as the paired-agreement check reads them (no re-scoring needed)."""
        return Agreement(n=self.pairs, agree=self.agree, mean_abs_dp=self.mean_abs_dp)


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
    answering logs nothing, so the inference log alone cannot see it. ``label_cutoff``: the label
    metrics of both arms cover requests received before it (the policy's label delay).
    ``unmeasured`` maps a metric to why it cannot have data at all: a model that does not give what
    it needs (e.g. no probability); the check then reports no data with that reason. In the shadow
    phase ``candidate`` is the candidate's answers to mirrored requests and ``paired`` the pairs of
    answers to the same requests."""

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
    label_cutoff: datetime | None = None
    paired: PairedScores | None = None
    problems: dict[str, str] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)
