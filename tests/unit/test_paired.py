"""Paired disagreement: the same logged inputs re-scored by champion and candidate."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlcanary.data.synthetic import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    DriftKnobs,
    generate_transactions,
)
from mlcanary.rollout.measurements import Agreement
from mlcanary.signals.paired import agreement_from_logs, combine, paired_agreement
from models.pipeline import build_pipeline


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return generate_transactions(3_000, seed=20, knobs=DriftKnobs(fraud_rate=0.3))


def _fit(frame: pd.DataFrame, labels: pd.Series) -> Pipeline:
    pipeline = build_pipeline(
        "logistic_regression", numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES
    )
    return pipeline.fit(frame[list(FEATURES)], labels)


@pytest.fixture(scope="module")
def champion(train: pd.DataFrame) -> Pipeline:
    return _fit(train, train[TARGET])


@pytest.fixture(scope="module")
def flipped(train: pd.DataFrame) -> Pipeline:
    return _fit(train, 1 - train[TARGET])


@pytest.fixture(scope="module")
def logged() -> pd.DataFrame:
    # Logged inputs carry more than the features (here the label); extra columns are ignored.
    return generate_transactions(2_000, seed=21)


def test_identical_models_agree_everywhere(champion: Pipeline, logged: pd.DataFrame) -> None:
    result = paired_agreement(champion, champion, logged)
    assert result == Agreement(n=len(logged), agree=len(logged), mean_abs_dp=0.0)
    assert result.rate == 1.0


def test_a_very_different_model_agrees_far_less(
    champion: Pipeline, flipped: Pipeline, logged: pd.DataFrame
) -> None:
    result = paired_agreement(champion, flipped, logged)
    assert result.n == len(logged)
    assert result.rate is not None
    assert result.rate < 0.5
    assert result.mean_abs_dp > 0.3


def test_counts_match_a_direct_computation(
    champion: Pipeline, flipped: Pipeline, logged: pd.DataFrame
) -> None:
    result = paired_agreement(champion, flipped, logged, threshold=0.3)
    x = logged[list(FEATURES)]
    p, q = champion.predict_proba(x)[:, 1], flipped.predict_proba(x)[:, 1]
    assert result.agree == int(np.sum((p >= 0.3) == (q >= 0.3)))
    assert result.mean_abs_dp == pytest.approx(float(np.mean(np.abs(p - q))))


def test_sampling_is_bounded_and_deterministic(
    champion: Pipeline, flipped: Pipeline, logged: pd.DataFrame
) -> None:
    first = paired_agreement(champion, flipped, logged, max_rows=500, seed=3)
    assert first.n == 500
    assert paired_agreement(champion, flipped, logged, max_rows=500, seed=3) == first
    other = paired_agreement(champion, flipped, logged, max_rows=500, seed=4)
    assert other.n == 500
    assert other != first


def test_missing_columns_are_named(champion: Pipeline, flipped: Pipeline, logged: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="required by the champion model: amount, channel"):
        paired_agreement(champion, flipped, logged.drop(columns=["amount", "channel"]))


def test_no_inputs_is_no_data(champion: Pipeline, logged: pd.DataFrame) -> None:
    assert paired_agreement(champion, champion, logged.iloc[:0]) == Agreement(0, 0, 0.0)
    assert agreement_from_logs(champion, champion, logged.iloc[:0], logged.iloc[:0]).n == 0


def test_bad_probabilities_and_arguments_are_rejected(champion: Pipeline, logged: pd.DataFrame) -> None:
    class OneColumn:
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return np.zeros((len(frame), 1))

    class NotANumber:
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return np.full((len(frame), 2), np.nan)

    with pytest.raises(ValueError, match="candidate model returned probabilities of shape"):
        paired_agreement(champion, OneColumn(), logged)
    with pytest.raises(ValueError, match="candidate model returned 2000 non-finite"):
        paired_agreement(champion, NotANumber(), logged)
    with pytest.raises(ValueError, match="threshold"):
        paired_agreement(champion, champion, logged, threshold=1.0)
    with pytest.raises(ValueError, match="max_rows"):
        paired_agreement(champion, champion, logged, max_rows=0)


def test_both_arms_are_combined(champion: Pipeline, flipped: Pipeline, logged: pd.DataFrame) -> None:
    champion_arm, candidate_arm = logged.iloc[:1_500], logged.iloc[1_500:]
    result = agreement_from_logs(champion, flipped, champion_arm, candidate_arm, max_rows=1_000, seed=1)
    parts = [
        paired_agreement(champion, flipped, arm, max_rows=1_000, seed=1)
        for arm in (champion_arm, candidate_arm)
    ]
    assert result.n == 1_000 + 500
    assert result.agree == parts[0].agree + parts[1].agree
    assert result.mean_abs_dp == pytest.approx(
        (parts[0].mean_abs_dp * 1_000 + parts[1].mean_abs_dp * 500) / 1_500
    )
    same = agreement_from_logs(champion, champion, champion_arm, candidate_arm)
    assert same == Agreement(n=len(logged), agree=len(logged), mean_abs_dp=0.0)


def test_combine_weights_by_size() -> None:
    assert combine([Agreement(10, 9, 0.1), Agreement(30, 15, 0.5)]) == Agreement(40, 24, pytest.approx(0.4))
    assert combine([]) == Agreement(0, 0, 0.0)
