"""What every drift detector compares: both sides sampled to a bounded size (seeded, so the same
inputs always give the same answer), then typed alike (numeric as float, categorical as text), with
a clear ``ValueError`` for inputs that cannot be compared."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import pandas as pd

from mlcanary.data.schema import FeatureKind, FeatureSpec, infer_schema

Scores: TypeAlias = pd.Series | np.ndarray | Sequence[float]
"""Positive-class probabilities, one per row."""


def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows of ``frame``, chosen uniformly at random without replacement.

    Deterministic in ``(frame, max_rows, seed)`` (row order included); rows keep their original
    order and the index is reset. A frame already small enough is returned whole (a copy).
    """
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    positions = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[positions].reset_index(drop=True)


def sample_array(values: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` of ``values``, a seeded sample in their original order."""
    if len(values) <= max_rows:
        return values
    positions = np.sort(np.random.default_rng(seed).choice(len(values), size=max_rows, replace=False))
    return values[positions]


def _check_share_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"input drift threshold is a share of columns in (0, 1], got {threshold}")


def check_method_threshold(threshold: float) -> None:
    """``ValueError`` unless ``threshold`` is a positive finite number."""
    if not (np.isfinite(threshold) and threshold > 0.0):
        raise ValueError(f"drift threshold must be a positive number, got {threshold}")


def _as_kind(series: pd.Series, kind: FeatureKind, side: str) -> pd.Series:
    if kind == "numeric":
        try:
            return pd.to_numeric(series, errors="raise").astype(float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {series.name!r} of the {side} data is not numeric: {exc}") from exc
    # Categories are compared as text so that e.g. True and "True" are one category on both sides.
    text = series.astype(object)
    return text.where(text.isna(), text.astype(str))


def prepare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[FeatureSpec] | None,
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[FeatureSpec, ...]]:
    """The columns to compare, typed alike on both sides (numeric as float, categorical as text).

    Raises ``ValueError`` naming the problem: an empty frame, ``features`` missing from a side, no
    common columns, a numeric column that does not parse as numbers, or a column with no values
    at all on one side (Evidently cannot compare it).
    """
    for side, frame in (("reference", reference), ("current", current)):
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"the {side} data is empty ({frame.shape[0]} rows, {frame.shape[1]} columns)")
    if features is not None:
        specs = tuple(features)
        if not specs:
            raise ValueError("features is empty: nothing to compare")
        names = [spec.name for spec in specs]
        for side, frame in (("reference", reference), ("current", current)):
            missing = [name for name in names if name not in frame.columns]
            if missing:
                raise ValueError(f"the {side} data lacks feature column(s): {', '.join(missing)}")
    else:
        common = [name for name in reference.columns if name in current.columns]
        if not common:
            raise ValueError(
                "reference and current data have no columns in common "
                f"(reference: {', '.join(map(str, reference.columns))}; "
                f"current: {', '.join(map(str, current.columns))})"
            )
        specs = infer_schema(reference, common)
    ref = pd.DataFrame({s.name: _as_kind(reference[s.name], s.kind, "reference") for s in specs})
    cur = pd.DataFrame({s.name: _as_kind(current[s.name], s.kind, "current") for s in specs})
    for side, frame in (("reference", ref), ("current", cur)):
        blank = [str(name) for name in frame.columns if frame[name].isna().all()]
        if blank:
            raise ValueError(f"the {side} data has no values in column(s): {', '.join(blank)}")
    return ref, cur, specs


def prepare_scores(scores: Scores, side: str) -> tuple[np.ndarray, int]:
    """The finite positive-class probabilities as a 1-D float array, and how many were dropped.

    Raises ``ValueError`` for non-numeric or 2-D input (pass ``predict_proba(x)[:, 1]``) and when no
    finite score is left.
    """
    try:
        values = np.asarray(scores, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{side} scores are not numeric: {exc}") from exc
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"{side} scores must be one probability per row (e.g. predict_proba(x)[:, 1]); "
            f"got shape {values.shape}"
        )
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"{side} scores are empty (no finite values among {values.size})")
    return finite, values.size - finite.size


def sampled_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[FeatureSpec] | None,
    max_rows: int,
    seed: int,
    threshold: float,
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[FeatureSpec, ...]]:
    """Both sides sampled to ``max_rows``, then typed: what every detector compares."""
    _check_share_threshold(threshold)
    # Sample before typing: converting the columns of a million logged rows costs more than
    # Evidently does on the sample.
    return prepare_frames(
        sample_rows(reference, max_rows, seed), sample_rows(current, max_rows, seed), features
    )
