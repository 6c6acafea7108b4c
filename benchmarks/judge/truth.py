"""What is true in each simulated scenario: the two arms' error rates, latency distributions and
model behaviour (positive rate, outcomes against labels, paired agreement).

The model behaviour is not made up: :func:`measure_models` trains the project's own pipelines on the
bundled synthetic card-transaction data and measures, on fresh rows, what a champion, a mildly
better candidate, a label-flipped candidate (P(positive) and P(negative) swapped), a candidate with a
preprocessing bug (the amount read in cents) and the champion under drifting inputs do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np
import pandas as pd
from scipy import stats

from mlcanary.data.synthetic import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    DriftKnobs,
    generate_transactions,
)
from models.pipeline import build_pipeline

THRESHOLD = 0.3
"""The serving threshold (the demo profile's ``training.decision_threshold``)."""


@dataclass(frozen=True)
class Latency:
    """Latency in ms: a log-normal body (median, log-sd) and, with ``tail_share`` > 0, a heavier
    log-normal tail (``tail_factor`` × the median, log-sd ``tail_sigma``) such as GC pauses."""

    median: float = 14.0
    sigma: float = 0.2
    tail_share: float = 0.0
    tail_factor: float = 8.0
    tail_sigma: float = 0.5

    def scaled(self, factor: float) -> Latency:
        return replace(self, median=self.median * factor)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        body = stats.norm.cdf((np.log(x) - math.log(self.median)) / self.sigma)
        if not self.tail_share:
            return body
        tail = stats.norm.cdf((np.log(x) - math.log(self.median * self.tail_factor)) / self.tail_sigma)
        return (1 - self.tail_share) * body + self.tail_share * tail

    @cache  # noqa: B019 - a handful of frozen instances per run
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        xs = np.geomspace(self.median / 50, self.median * self.tail_factor * 50, 20_000)
        return self.cdf(xs), xs

    @cache  # noqa: B019 - a handful of frozen instances per run
    def percentiles(self) -> tuple[float, float, float]:
        """True P50, P95 and P99 in ms."""
        return tuple(float(x) for x in self.quantile(np.array([0.5, 0.95, 0.99])))  # type: ignore[return-value]

    def quantile(self, q: np.ndarray | float) -> np.ndarray:
        """Inverse CDF (exact for the body, interpolated on a fine grid with a tail)."""
        q = np.asarray(q, dtype=float)
        if not self.tail_share:
            return np.exp(math.log(self.median) + self.sigma * stats.norm.ppf(q))
        probabilities, xs = self._grid()
        return np.exp(np.interp(q, probabilities, np.log(xs)))


@dataclass(frozen=True)
class Outcomes:
    """One model's behaviour on traffic: shares of predictions by (predicted, true) label."""

    tp: float
    fp: float
    fn: float
    tn: float

    @property
    def positive_rate(self) -> float:
        return self.tp + self.fp

    @property
    def accuracy(self) -> float:
        return self.tp + self.tn

    def cells(self) -> np.ndarray:
        return np.array([self.tp, self.fp, self.fn, self.tn])


@dataclass(frozen=True)
class ArmTruth:
    """Everything true about one arm."""

    error_rate: float
    latency: Latency
    outcomes: Outcomes


@dataclass(frozen=True)
class Scenario:
    """A candidate against a champion, with the answer known: ``bad`` releases should be rolled back,
    good ones promoted. ``agreement`` is the share of identical labels on the same inputs;
    ``drift`` (optional) gives both arms' outcomes and the agreement at the start and the end of
    the window, interpolated in between (slowly drifting inputs)."""

    name: str
    title: str
    bad: bool
    champion: ArmTruth
    candidate: ArmTruth
    agreement: float
    drift_end: tuple[Outcomes, Outcomes, float] | None = None

    def at(self, progress: float) -> tuple[Outcomes, Outcomes, float]:
        """(champion outcomes, candidate outcomes, agreement) at ``progress`` ∈ [0, 1] of the window."""
        start = (self.champion.outcomes, self.candidate.outcomes, self.agreement)
        if self.drift_end is None:
            return start
        w = min(max(progress, 0.0), 1.0)
        champion = Outcomes(*((1 - w) * start[0].cells() + w * self.drift_end[0].cells()))
        candidate = Outcomes(*((1 - w) * start[1].cells() + w * self.drift_end[1].cells()))
        return champion, candidate, (1 - w) * start[2] + w * self.drift_end[2]


@dataclass(frozen=True)
class ModelTruth:
    """What the real models do on fresh synthetic traffic (see the module docstring)."""

    champion: Outcomes
    better: Outcomes
    better_agreement: float
    flipped: Outcomes
    flipped_agreement: float
    cents_bug: Outcomes
    cents_agreement: float
    drifted_champion: Outcomes
    rows: int
    shifts: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per candidate model (``better``, ``flipped``, ``cents_bug``): the mean and variance of its
    positive-class probability minus the champion's on the same rows (the shadow phase's pairs)."""


def _outcomes(proba: np.ndarray, label: np.ndarray) -> Outcomes:
    predicted = proba >= THRESHOLD
    truth = label == 1
    n = len(label)
    return Outcomes(
        tp=float(np.sum(predicted & truth) / n),
        fp=float(np.sum(predicted & ~truth) / n),
        fn=float(np.sum(~predicted & truth) / n),
        tn=float(np.sum(~predicted & ~truth) / n),
    )


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a >= THRESHOLD) == (b >= THRESHOLD)))


def measure_models(train_rows: int = 20_000, test_rows: int = 50_000, seed: int = 7) -> ModelTruth:
    """Train a logistic-regression champion on a quarter of ``train_rows`` and the same pipeline on
    all of them (a mildly better candidate: lower log loss on fresh rows), then measure both and the
    candidate's faulty variants on ``test_rows`` fresh rows, and the champion under a covariate shift
    of 1 σ."""
    train = generate_transactions(train_rows, seed=seed)
    features = {"numeric": NUMERIC_FEATURES, "categorical": CATEGORICAL_FEATURES}
    champion = build_pipeline("logistic_regression", None, **features, seed=seed)
    better = build_pipeline("logistic_regression", None, **features, seed=seed)
    x, y = train.drop(columns=[TARGET]), train[TARGET]
    champion.fit(x[: train_rows // 4], y[: train_rows // 4])
    better.fit(x, y)

    def score(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inputs = frame.drop(columns=[TARGET])
        return (
            champion.predict_proba(inputs)[:, 1],
            better.predict_proba(inputs)[:, 1],
            frame[TARGET].to_numpy(),
        )

    test = generate_transactions(test_rows, seed=seed + 1)
    p_champion, p_better, label = score(test)
    cents = test.drop(columns=[TARGET]).assign(amount=test["amount"] * 100)
    p_cents = better.predict_proba(cents)[:, 1]
    p_flipped = 1.0 - p_better
    drifted = generate_transactions(test_rows, seed=seed + 2, knobs=DriftKnobs(covariate_shift=1.0))
    d_champion, _, d_label = score(drifted)
    return ModelTruth(
        champion=_outcomes(p_champion, label),
        better=_outcomes(p_better, label),
        better_agreement=_agreement(p_champion, p_better),
        flipped=_outcomes(p_flipped, label),
        flipped_agreement=_agreement(p_champion, p_flipped),
        cents_bug=_outcomes(p_cents, label),
        cents_agreement=_agreement(p_champion, p_cents),
        drifted_champion=_outcomes(d_champion, d_label),
        rows=test_rows,
        shifts={
            name: (float(np.mean(p - p_champion)), float(np.var(p - p_champion, ddof=1)))
            for name, p in (("better", p_better), ("flipped", p_flipped), ("cents_bug", p_cents))
        },
    )


BASE_LATENCY = Latency()
"""14 ms median, log-sd 0.2: the local model server's single-row latency (docs/benchmarks.md)."""


def scenarios(models: ModelTruth) -> list[Scenario]:
    """The benchmark's scenarios (issue: identical models, a mildly better one, 5xx and latency
    regressions, a label flip, a preprocessing bug, slow input drift, heavy-tailed latency)."""
    champ = ArmTruth(error_rate=0.01, latency=BASE_LATENCY, outcomes=models.champion)
    better = replace(champ, outcomes=models.better)
    heavy = Latency(tail_share=0.03)
    low_errors = replace(champ, error_rate=0.001)
    return [
        Scenario("aa", "identical models (A/A)", False, champ, champ, 1.0),
        Scenario("better", "a mildly better model", False, champ, better, models.better_agreement),
        Scenario(
            "err_1_3", "5xx 1 % → 3 %", True, champ, replace(better, error_rate=0.03), models.better_agreement
        ),
        Scenario(
            "err_01_05",
            "5xx 0.1 % → 0.5 %",
            True,
            low_errors,
            replace(low_errors, outcomes=models.better, error_rate=0.005),
            models.better_agreement,
        ),
        Scenario(
            "lat_30",
            "latency +30 %",
            True,
            champ,
            replace(better, latency=BASE_LATENCY.scaled(1.3)),
            models.better_agreement,
        ),
        Scenario(
            "lat_x3",
            "latency × 3",
            True,
            champ,
            replace(better, latency=BASE_LATENCY.scaled(3.0)),
            models.better_agreement,
        ),
        Scenario(
            "flip",
            "label flip (P(positive) and P(negative) swapped)",
            True,
            champ,
            replace(better, outcomes=models.flipped),
            models.flipped_agreement,
        ),
        Scenario(
            "cents",
            "preprocessing bug (amount read in cents)",
            True,
            champ,
            replace(better, outcomes=models.cents_bug),
            models.cents_agreement,
        ),
        Scenario(
            "drift",
            "identical models under slow input drift (0 → 1 σ over 48 h)",
            False,
            champ,
            champ,
            1.0,
            drift_end=(models.drifted_champion, models.drifted_champion, 1.0),
        ),
        Scenario(
            "heavy_tail",
            "a good model, heavy-tailed latency on both arms (3 % of requests 8× slower)",
            False,
            replace(champ, latency=heavy),
            replace(better, latency=heavy),
            models.better_agreement,
        ),
    ]
