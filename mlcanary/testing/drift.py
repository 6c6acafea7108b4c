"""An in-memory drift detector for tests of other modules: no Evidently, the same contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlcanary.data.schema import FeatureSpec
from mlcanary.signals.drift import (
    DEFAULT_COLUMN_THRESHOLD,
    PREDICTION_COLUMN,
    ColumnDrift,
    DriftResult,
    input_score,
    prediction_score,
)
from mlcanary.signals.drift_inputs import (
    Scores,
    check_method_threshold,
    prepare_scores,
    sample_array,
    sampled_frames,
)


def _mean_shift(reference: pd.Series, current: pd.Series) -> float:
    ref = reference.dropna().to_numpy(dtype=float)
    cur = current.dropna().to_numpy(dtype=float)
    if ref.size == 0 or cur.size == 0:
        return 0.0 if ref.size == cur.size else float("inf")
    scale = max(float(np.std(ref)), 1e-3)
    return abs(float(np.mean(cur)) - float(np.mean(ref))) / scale


def _total_variation(reference: pd.Series, current: pd.Series) -> float:
    ref = reference.fillna("<missing>").value_counts(normalize=True)
    cur = current.fillna("<missing>").value_counts(normalize=True)
    joined = pd.concat([ref, cur], axis=1).fillna(0.0)
    return 0.5 * float(np.abs(joined.iloc[:, 0] - joined.iloc[:, 1]).sum())


@dataclass(frozen=True)
class ThresholdDriftDetector:
    """In-memory :class:`~mlcanary.signals.drift.DriftDetector`: no Evidently, the same contract.

    Numeric columns and scores are scored by the absolute mean shift in reference standard
    deviations (method ``"mean_shift"``), categorical columns by total variation distance
    (``"total_variation"``); a column drifts at or above ``column_threshold``, prediction drift at
    or above the ``threshold`` argument. Sampling, validation and errors match
    :class:`~mlcanary.signals.drift.EvidentlyDriftDetector`; ``with_html=True`` returns a small HTML table.
    """

    max_rows: int = 5_000
    seed: int = 0
    column_threshold: float = DEFAULT_COLUMN_THRESHOLD

    def __post_init__(self) -> None:
        if self.max_rows <= 0:
            raise ValueError(f"max_rows must be positive, got {self.max_rows}")
        check_method_threshold(self.column_threshold)

    def input_drift(
        self,
        reference: pd.DataFrame,
        current: pd.DataFrame,
        *,
        threshold: float,
        features: Sequence[FeatureSpec] | None = None,
        with_html: bool = False,
    ) -> DriftResult:
        """See :meth:`~mlcanary.signals.drift.DriftDetector.input_drift`."""
        ref, cur, specs = sampled_frames(reference, current, features, self.max_rows, self.seed, threshold)
        columns: dict[str, ColumnDrift] = {}
        for spec in specs:
            if spec.kind == "numeric":
                method, score = "mean_shift", _mean_shift(ref[spec.name], cur[spec.name])
            else:
                method, score = "total_variation", _total_variation(ref[spec.name], cur[spec.name])
            drifted = score >= self.column_threshold
            columns[spec.name] = ColumnDrift(spec.kind, method, score, self.column_threshold, drifted)
        return DriftResult(
            score=input_score(columns, rows=len(cur), reference_rows=len(ref)),
            columns=columns,
            reference_rows=len(ref),
            html=_fake_html(columns) if with_html else None,
        )

    def prediction_drift(
        self,
        champion_scores: Scores,
        candidate_scores: Scores,
        *,
        threshold: float,
        with_html: bool = False,
    ) -> DriftResult:
        """See :meth:`~mlcanary.signals.drift.DriftDetector.prediction_drift`."""
        check_method_threshold(threshold)
        champion, champion_dropped = prepare_scores(champion_scores, "champion")
        candidate, candidate_dropped = prepare_scores(candidate_scores, "candidate")
        champion = sample_array(champion, self.max_rows, self.seed)
        candidate = sample_array(candidate, self.max_rows, self.seed)
        dropped = champion_dropped + candidate_dropped
        score = _mean_shift(pd.Series(champion), pd.Series(candidate))
        column = ColumnDrift("numeric", "mean_shift", score, threshold, score >= threshold)
        columns = {PREDICTION_COLUMN: column}
        return DriftResult(
            score=prediction_score(column, candidate.size, champion.size, dropped),
            columns=columns,
            reference_rows=champion.size,
            html=_fake_html(columns) if with_html else None,
        )


def _fake_html(columns: Mapping[str, ColumnDrift]) -> str:
    rows = "".join(
        f"<tr><td>{name}</td><td>{c.method}</td><td>{c.score:.4g}</td><td>{c.drifted}</td></tr>"
        for name, c in columns.items()
    )
    return f"<html><body><table>{rows}</table></body></html>"
