"""Paired disagreement: the same logged inputs scored by both models.

Comparing the two arms' prediction distributions mixes model differences with traffic
differences; scoring the *same* inputs with both models isolates the model. The monitor takes the
inputs each arm logged and has them scored by the other model as well (``agreement_from_logs``),
so every request of the window counts, whichever arm served it.

Cost is bounded like drift: at most ``max_rows`` inputs per call (a seeded random sample), so a tick
costs two ``predict_proba`` calls on a few thousand rows whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlcanary.data.schema import FeatureSpec
from mlcanary.registry.model_loader import ScoringModel
from mlcanary.rollout.measurements import Agreement
from mlcanary.rollout.model_outputs import OutputNames, read_outputs
from mlcanary.signals.drift_inputs import sample_rows


class ProbabilisticModel(Protocol):
    """A fitted binary classifier over a raw-feature DataFrame (e.g. a scikit-learn pipeline)."""

    def predict_proba(self, frame: pd.DataFrame) -> Any: ...


def model_features(model: object) -> tuple[str, ...] | None:
    """The input columns a model was fitted on (scikit-learn's ``feature_names_in_``), if known."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return None
    return tuple(str(name) for name in names)


def _model_inputs(model: object, inputs: pd.DataFrame, role: str) -> pd.DataFrame:
    required = model_features(model)
    if required is None:
        return inputs
    missing = [name for name in required if name not in inputs.columns]
    if missing:
        raise ValueError(
            f"inputs lack column(s) required by the {role} model: {', '.join(missing)} "
            f"(inputs have: {', '.join(map(str, inputs.columns))})"
        )
    return inputs[list(required)]


def _answers(
    model: Any, inputs: pd.DataFrame, role: str, threshold: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (0/1) and, when the model gives them, positive-class probabilities for ``inputs``."""
    if isinstance(model, ScoredModel):
        return model.answers(inputs, role)
    return _legacy_answers(model, inputs, role, threshold)


def _legacy_answers(
    model: ProbabilisticModel, inputs: pd.DataFrame, role: str, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(model.predict_proba(_model_inputs(model, inputs, role)), dtype=float)
    if raw.ndim != 2 or raw.shape != (len(inputs), 2):
        raise ValueError(
            f"the {role} model returned probabilities of shape {raw.shape}; expected ({len(inputs)}, 2)"
        )
    proba = raw[:, 1]
    bad = int(np.count_nonzero(~np.isfinite(proba)))
    if bad:
        raise ValueError(f"the {role} model returned {bad} non-finite probabilities of {len(proba)}")
    return (proba >= threshold).astype(int), proba


@dataclass(frozen=True)
class ScoredModel:
    """A loaded MLflow model (:class:`~mlcanary.model_loader.ScoringModel`) with how its answers
    are read (``model.outputs``): what paired agreement re-scores logged inputs with."""

    scorer: ScoringModel
    names: OutputNames
    threshold: float = 0.5

    def answers(self, inputs: pd.DataFrame, role: str) -> tuple[np.ndarray, np.ndarray | None]:
        schema = self.scorer.inputs
        if schema.kind != "columns":
            raise ValueError(f"the {role} model takes a tensor: logged inputs are not re-scored")
        needed = [spec.name for spec in schema.columns]
        missing = [name for name in needed if name not in inputs.columns]
        if missing:
            raise ValueError(
                f"inputs lack column(s) required by the {role} model: {', '.join(missing)} "
                f"(inputs have: {', '.join(map(str, inputs.columns))})"
            )
        data = _typed(inputs[needed], schema.columns)
        reading = read_outputs(self.scorer.predict(data), len(data), self.names, self.threshold)
        if reading.problem is not None:
            raise ValueError(f"the {role} model gave an unusable answer: {reading.problem}")
        if reading.labels is None or any(label is None for label in reading.labels):
            raise NoLabelsError(f"the {role} model gives no class label")
        proba = None if reading.probabilities is None else np.asarray(reading.probabilities, dtype=float)
        return np.asarray(reading.labels, dtype=int), proba


class NoLabelsError(ValueError):
    """A model whose answers hold no class label: agreement cannot be measured."""


def _typed(frame: pd.DataFrame, columns: Sequence[FeatureSpec]) -> pd.DataFrame:
    """Logged values back in the dtypes the model's signature declares."""
    typed = {}
    for spec in columns:
        series = frame[spec.name]
        if spec.dtype == "double":
            series = pd.to_numeric(series, errors="coerce").astype(float)
        elif spec.dtype == "long" and not series.isna().any():
            series = pd.to_numeric(series, errors="coerce").astype("int64")
        elif spec.dtype == "boolean" and not series.isna().any():
            series = series.astype(bool)
        typed[spec.name] = series.reset_index(drop=True)
    return pd.DataFrame(typed)


def _check_arguments(threshold: float, max_rows: int) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be within (0, 1), got {threshold}")
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")


def paired_agreement(
    champion_model: ProbabilisticModel | ScoredModel,
    candidate_model: ProbabilisticModel | ScoredModel,
    inputs: pd.DataFrame,
    *,
    threshold: float = 0.5,
    max_rows: int = 5_000,
    seed: int = 0,
) -> Agreement:
    """Score the same ``inputs`` with both models and count how often they agree.

    A label is ``P(positive) >= threshold``; ``agree`` counts inputs given the same label by both
    models and ``mean_abs_dp`` is the mean absolute difference of their positive-class
    probabilities. Above ``max_rows`` inputs a seeded random sample of ``max_rows`` is scored
    (deterministic in ``inputs``, ``max_rows`` and ``seed``), and ``n`` is the sample size. No
    inputs give ``Agreement(0, 0, 0.0)`` (the judge reads ``n == 0`` as no data).

    Each model receives the columns it was fitted on (``feature_names_in_``), in its own order;
    extra input columns are ignored, and missing ones raise ``ValueError`` naming them. A model
    without ``feature_names_in_`` receives the inputs as they are. ``ValueError`` also for
    probabilities that are not one ``(n, 2)`` array of finite numbers, or arguments out of range.
    """
    _check_arguments(threshold, max_rows)
    if len(inputs) == 0:
        return Agreement(n=0, agree=0, mean_abs_dp=0.0)
    sample = sample_rows(inputs, max_rows, seed)
    champion_labels, champion = _answers(champion_model, sample, "champion", threshold)
    candidate_labels, candidate = _answers(candidate_model, sample, "candidate", threshold)
    same = champion_labels == candidate_labels
    return Agreement(
        n=len(sample),
        agree=int(np.count_nonzero(same)),
        mean_abs_dp=None
        if champion is None or candidate is None
        else float(np.mean(np.abs(champion - candidate))),
    )


def combine(parts: Sequence[Agreement]) -> Agreement:
    """One :class:`Agreement` over disjoint sets of inputs (``mean_abs_dp`` weighted by ``n``)."""
    n = sum(part.n for part in parts)
    if n == 0:
        return Agreement(n=0, agree=0, mean_abs_dp=0.0)
    counted = [part for part in parts if part.n]
    dp = (
        None
        if any(part.mean_abs_dp is None for part in counted)
        else sum((part.mean_abs_dp or 0.0) * part.n for part in counted) / n
    )
    return Agreement(n=n, agree=sum(part.agree for part in parts), mean_abs_dp=dp)


def agreement_from_logs(
    champion_model: ProbabilisticModel | ScoredModel,
    candidate_model: ProbabilisticModel | ScoredModel,
    champion_arm_inputs: pd.DataFrame,
    candidate_arm_inputs: pd.DataFrame,
    *,
    threshold: float = 0.5,
    max_rows: int = 5_000,
    seed: int = 0,
) -> Agreement:
    """Agreement over both arms' logged inputs: each arm's inputs also scored by the other model.

    The champion arm's inputs are re-scored with the candidate and the candidate arm's with the
    champion (each compared with its own model's score on the same rows); the two results are
    combined with :func:`combine`. ``max_rows`` bounds each arm separately, so at most
    ``2 * max_rows`` inputs are scored by each model. Errors as in :func:`paired_agreement`.
    """
    _check_arguments(threshold, max_rows)
    parts = [
        paired_agreement(
            champion_model, candidate_model, arm, threshold=threshold, max_rows=max_rows, seed=seed
        )
        for arm in (champion_arm_inputs, candidate_arm_inputs)
    ]
    return combine(parts)
