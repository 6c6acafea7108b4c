"""Input and prediction drift: the Evidently adapter, its validation and sampling, and the fake.

Tests that run Evidently are marked slow: the first one pays Evidently's import (~8-10 s on two
cores); each report after that takes about half a second on 5,000 rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlcanary.data.schema import FeatureSpec
from mlcanary.data.synthetic import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    DriftKnobs,
    generate_transactions,
)
from mlcanary.signals.drift import PREDICTION_COLUMN, DriftDetector, EvidentlyDriftDetector
from mlcanary.signals.drift_inputs import prepare_frames, sample_rows
from mlcanary.testing.drift import ThresholdDriftDetector
from models.pipeline import build_pipeline

SHIFTED = ("amount", "distance_from_home_km", "ratio_to_median_amount", "hour", "txn_count_24h")


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate_transactions(3_000, seed=1)[list(FEATURES)]


@pytest.fixture(scope="module")
def same_distribution() -> pd.DataFrame:
    return generate_transactions(3_000, seed=2)[list(FEATURES)]


@pytest.fixture(scope="module")
def shifted() -> pd.DataFrame:
    return generate_transactions(3_000, seed=3, knobs=DriftKnobs(covariate_shift=2.0))[list(FEATURES)]


@pytest.fixture(scope="module")
def model() -> Pipeline:
    train = generate_transactions(3_000, seed=10, knobs=DriftKnobs(fraud_rate=0.15))
    pipeline = build_pipeline(
        "logistic_regression", numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES
    )
    return pipeline.fit(train[list(FEATURES)], train[TARGET])


def _scores(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(frame))[:, 1]


class _BrokenPreprocessing:
    """Sends amounts in cents instead of dollars: a classic serving-side preprocessing bug."""

    def __init__(self, model: Pipeline) -> None:
        self.model = model

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(frame.assign(amount=frame["amount"] * 100))


# -- validation and sampling: no Evidently needed ------------------------------------------------


@pytest.mark.parametrize("detector", [EvidentlyDriftDetector(), ThresholdDriftDetector()])
def test_empty_inputs_are_rejected(detector: DriftDetector, reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="current data is empty"):
        detector.input_drift(reference, reference.iloc[:0], threshold=0.5)
    with pytest.raises(ValueError, match="reference data is empty"):
        detector.input_drift(pd.DataFrame(), reference, threshold=0.5)
    with pytest.raises(ValueError, match="candidate scores are empty"):
        detector.prediction_drift([0.1, 0.2], [], threshold=0.1)
    with pytest.raises(ValueError, match="champion scores are empty"):
        detector.prediction_drift([np.nan, np.nan], [0.1], threshold=0.1)


@pytest.mark.parametrize("detector", [EvidentlyDriftDetector(), ThresholdDriftDetector()])
def test_bad_columns_and_arguments_are_rejected(detector: DriftDetector, reference: pd.DataFrame) -> None:
    other = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    with pytest.raises(ValueError, match="no columns in common"):
        detector.input_drift(reference, other, threshold=0.5)
    features = [FeatureSpec("amount", "numeric", "double"), FeatureSpec("velocity", "numeric", "double")]
    with pytest.raises(ValueError, match="reference data lacks feature column\\(s\\): velocity"):
        detector.input_drift(reference, reference, threshold=0.5, features=features)
    with pytest.raises(ValueError, match="current data has no values in column\\(s\\): amount"):
        detector.input_drift(reference, reference.assign(amount=np.nan), threshold=0.5)
    with pytest.raises(ValueError, match="share of columns"):
        detector.input_drift(reference, reference, threshold=0.0)
    with pytest.raises(ValueError, match="one probability per row"):
        detector.prediction_drift(np.zeros((4, 2)), np.zeros((4, 2)), threshold=0.1)
    with pytest.raises(ValueError, match="positive number"):
        detector.prediction_drift([0.1], [0.2], threshold=-1.0)


def test_a_method_that_does_not_fit_a_column_kind_is_rejected(reference: pd.DataFrame) -> None:
    with pytest.raises(
        ValueError, match="'ks' does not apply to categorical column\\(s\\): merchant_category"
    ):
        EvidentlyDriftDetector(method="ks").input_drift(reference, reference, threshold=0.5)
    with pytest.raises(ValueError, match="'chisquare' does not apply to numeric column\\(s\\): probability"):
        EvidentlyDriftDetector(method="chisquare").prediction_drift([0.1], [0.2], threshold=0.05)
    with pytest.raises(ValueError, match="max_rows"):
        EvidentlyDriftDetector(max_rows=0)


def test_sampling_is_bounded_and_deterministic() -> None:
    frame = pd.DataFrame({"i": np.arange(1_000)})
    first = sample_rows(frame, 100, seed=7)
    assert len(first) == 100
    assert first.equals(sample_rows(frame, 100, seed=7))
    assert not first.equals(sample_rows(frame, 100, seed=8))
    assert first["i"].is_monotonic_increasing  # original order kept
    assert sample_rows(frame, 5_000, seed=7).equals(frame)


def test_columns_are_typed_from_features_or_dtypes(reference: pd.DataFrame) -> None:
    # Logged inputs may arrive as text (JSON); a numeric spec parses them, a categorical one
    # compares booleans and strings as the same categories.
    logged = reference.astype({"amount": str, "pin_used": bool})
    features = [FeatureSpec("amount", "numeric", "double"), FeatureSpec("pin_used", "categorical", "boolean")]
    ref, cur, specs = prepare_frames(reference.astype({"pin_used": bool}), logged, features)
    assert [s.name for s in specs] == ["amount", "pin_used"]
    assert cur["amount"].dtype == float
    assert set(cur["pin_used"]) == set(ref["pin_used"]) == {"True", "False"}
    _, _, inferred = prepare_frames(reference, reference.drop(columns=["hour"]), None)
    kinds = {s.name: s.kind for s in inferred}
    assert "hour" not in kinds
    assert kinds["channel"] == "categorical"
    assert kinds["amount"] == "numeric"
    with pytest.raises(ValueError, match="'amount' of the current data is not numeric"):
        prepare_frames(reference, reference.assign(amount="n/a"), features)


# -- the fake ------------------------------------------------------------------------------------


def test_fake_detector_scores_mean_shift(
    reference: pd.DataFrame, same_distribution: pd.DataFrame, shifted: pd.DataFrame, model: Pipeline
) -> None:
    fake = ThresholdDriftDetector(max_rows=1_000)
    calm = fake.input_drift(reference, same_distribution, threshold=0.5)
    assert calm.score.value < 0.5
    assert calm.score.rows == 1_000
    moved = fake.input_drift(reference, shifted, threshold=0.5, with_html=True)
    assert moved.score.value >= 0.5
    assert set(SHIFTED) <= set(moved.drifted_columns)
    assert moved.html is not None
    assert "<html" in moved.html
    flat = fake.prediction_drift(_scores(model, reference), np.full(500, 0.9), threshold=0.1)
    assert flat.columns[PREDICTION_COLUMN].drifted
    assert flat.score.value >= 0.1
    assert not flat.score.pvalue
    assert flat.columns[PREDICTION_COLUMN].method == "mean_shift"


# -- Evidently -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_shift_is_not_input_drift(reference: pd.DataFrame, same_distribution: pd.DataFrame) -> None:
    result = EvidentlyDriftDetector().input_drift(reference, same_distribution, threshold=0.5)
    assert result.score.value < 0.5
    assert not result.score.pvalue  # a share of columns: drift at or above the threshold
    assert result.score.rows == len(same_distribution)
    assert result.reference_rows == len(reference)
    assert set(result.columns) == set(FEATURES)
    assert result.columns["amount"].method == "wasserstein"
    assert result.columns["channel"].method == "jensenshannon"
    assert "wasserstein >= 0.1" in result.score.method
    assert "jensenshannon >= 0.1" in result.score.method
    assert result.html is None


@pytest.mark.slow
def test_covariate_shift_is_input_drift_on_the_shifted_columns(
    reference: pd.DataFrame, shifted: pd.DataFrame
) -> None:
    result = EvidentlyDriftDetector().input_drift(reference, shifted, threshold=0.5)
    assert result.score.value >= 0.5
    assert set(SHIFTED) <= set(result.drifted_columns)
    # Merchant mix is not moved by the generator's shift.
    assert not result.columns["merchant_category"].drifted
    assert result.score.detail is not None
    assert "amount" in result.score.detail


@pytest.mark.slow
def test_features_pick_and_type_the_columns(reference: pd.DataFrame, shifted: pd.DataFrame) -> None:
    features = [FeatureSpec("amount", "numeric", "double"), FeatureSpec("hour", "categorical", "long")]
    result = EvidentlyDriftDetector().input_drift(reference, shifted, threshold=0.5, features=features)
    assert list(result.columns) == ["amount", "hour"]
    assert result.columns["hour"].method == "jensenshannon"
    assert result.score.value == 1.0


@pytest.mark.slow
def test_pvalue_methods_drift_below_their_threshold(reference: pd.DataFrame, shifted: pd.DataFrame) -> None:
    numeric = list(NUMERIC_FEATURES[:3])
    result = EvidentlyDriftDetector(method="ks").input_drift(
        reference[numeric], shifted[numeric], threshold=0.5
    )
    amount = result.columns["amount"]
    assert amount.method == "ks"
    assert amount.threshold == 0.05
    assert amount.drifted
    assert amount.score < amount.threshold
    assert "ks < 0.05" in result.score.method
    assert not result.score.pvalue  # the share of drifted columns is not a p-value


@pytest.mark.slow
def test_sampling_bounds_rows_and_is_deterministic(reference: pd.DataFrame, shifted: pd.DataFrame) -> None:
    big_reference = pd.concat([reference] * 3, ignore_index=True)
    big_current = pd.concat([shifted] * 3, ignore_index=True)
    detector = EvidentlyDriftDetector(max_rows=2_000, seed=5)
    first = detector.input_drift(big_reference, big_current, threshold=0.5)
    again = detector.input_drift(big_reference, big_current, threshold=0.5)
    assert first.score.rows == 2_000
    assert first.reference_rows == 2_000
    assert first.score == again.score
    assert first.columns == again.columns


@pytest.mark.slow
def test_prediction_drift_of_the_same_model_is_none(
    model: Pipeline, reference: pd.DataFrame, same_distribution: pd.DataFrame
) -> None:
    champion = _scores(model, reference)
    candidate = pd.Series(_scores(model, same_distribution))
    result = EvidentlyDriftDetector().prediction_drift(champion, candidate, threshold=0.1)
    assert result.score.value < 0.1
    assert not result.columns[PREDICTION_COLUMN].drifted
    assert result.score.rows == len(candidate)
    assert result.score.method == "wasserstein >= 0.1 on P(positive)"


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["preprocessing", "constant"])
def test_prediction_drift_catches_a_broken_candidate(
    broken: str, model: Pipeline, reference: pd.DataFrame, same_distribution: pd.DataFrame
) -> None:
    champion = _scores(model, reference)
    if broken == "preprocessing":
        candidate = _scores(_BrokenPreprocessing(model), same_distribution)
    else:
        candidate = np.full(len(same_distribution), 0.5)
    result = EvidentlyDriftDetector().prediction_drift(champion, candidate, threshold=0.1)
    assert result.score.value >= 0.1
    assert not result.score.pvalue
    assert result.columns[PREDICTION_COLUMN].drifted


@pytest.mark.slow
def test_html_only_when_asked(model: Pipeline, reference: pd.DataFrame, shifted: pd.DataFrame) -> None:
    detector = EvidentlyDriftDetector(max_rows=1_000)
    report = detector.input_drift(reference, shifted, threshold=0.5, with_html=True)
    assert report.html is not None
    assert "<html" in report.html
    assert len(report.html) > 100_000
    assert "<html" not in repr(report)
    scores = _scores(model, reference)
    prediction = detector.prediction_drift(scores, scores[::-1], threshold=0.1, with_html=True)
    assert prediction.html is not None
    assert "<html" in prediction.html
    assert detector.prediction_drift(scores, scores, threshold=0.1).html is None
