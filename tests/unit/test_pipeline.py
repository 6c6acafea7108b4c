"""The scikit-learn pipeline factory named by ``model.factory``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlcanary.config import ModelSettings
from mlcanary.data.synthetic import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    DriftKnobs,
    generate_transactions,
)
from models.pipeline import ESTIMATORS, build_pipeline

ESTIMATOR_NAMES = sorted(ESTIMATORS)


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    # Small fits are slower with OpenMP threads fighting over a busy CI machine.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    # A higher fraud rate so that 2,000 rows hold enough positives for every estimator.
    return generate_transactions(2_000, seed=11, knobs=DriftKnobs(fraud_rate=0.15))


def _build(estimator: str, params: dict[str, Any] | None = None, seed: int = 0) -> Pipeline:
    return build_pipeline(
        estimator, params, numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES, seed=seed
    )


def _fit(estimator: str, frame: pd.DataFrame, params: dict[str, Any] | None = None, seed: int = 0):
    return _build(estimator, params, seed).fit(frame[list(FEATURES)], frame[TARGET])


@pytest.fixture(scope="module")
def fitted(frame: pd.DataFrame) -> dict[str, Pipeline]:
    return {name: _fit(name, frame) for name in ESTIMATOR_NAMES}


def test_estimators_match_the_config_choices() -> None:
    # Every estimator the config accepts can be built, and nothing else is offered.
    choices = ModelSettings.model_fields["estimator"].annotation.__args__
    assert set(choices) == set(ESTIMATORS)


@pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
def test_fit_and_predict_proba(fitted: dict[str, Pipeline], frame: pd.DataFrame, estimator: str) -> None:
    pipeline = fitted[estimator]
    x = frame[list(FEATURES)]
    proba = pipeline.predict_proba(x)
    assert proba.shape == (len(frame), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert list(pipeline.classes_) == [0, 1]
    labels = pipeline.predict(x)
    assert set(np.unique(labels)) <= {0, 1}
    # It learned something: the fraud rows get a higher average score than the others.
    y = frame[TARGET].to_numpy()
    assert proba[y == 1, 1].mean() > proba[y == 0, 1].mean() + 0.1


@pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
def test_pipeline_steps_and_columns(estimator: str) -> None:
    pipeline = _build(estimator)
    assert [name for name, _ in pipeline.steps] == ["preprocess", "estimator"]
    assert isinstance(pipeline.named_steps["estimator"], ESTIMATORS[estimator])
    columns = {name: list(cols) for name, _, cols in pipeline.named_steps["preprocess"].transformers}
    assert columns == {"numeric": list(NUMERIC_FEATURES), "categorical": list(CATEGORICAL_FEATURES)}


@pytest.mark.parametrize(
    ("numeric", "categorical", "expected"),
    [(["amount", "hour"], [], {"numeric"}), ([], ["channel"], {"categorical"})],
)
def test_only_one_kind_of_feature(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str], expected: set[str]
) -> None:
    pipeline = build_pipeline("logistic_regression", numeric=numeric, categorical=categorical)
    assert {name for name, _, _ in pipeline.named_steps["preprocess"].transformers} == expected
    pipeline.fit(frame[numeric + categorical], frame[TARGET])
    assert pipeline.predict_proba(frame[numeric + categorical]).shape == (len(frame), 2)


@pytest.mark.parametrize(
    ("estimator", "params", "numeric", "categorical", "fragments"),
    [
        ("xgboost", None, ["amount"], [], ["unknown estimator", "'xgboost'", "logistic_regression"]),
        ("", None, ["amount"], [], ["unknown estimator"]),
        ("random_forest", {"n_trees": 5}, ["amount"], [], ["unknown hyperparameter", "n_trees"]),
        (
            "logistic_regression",
            {"c": 1.0, "zzz": 1, "max_iter": 10},
            ["amount"],
            [],
            ["unknown hyperparameter", "c, zzz", "logistic_regression"],
        ),
        ("hist_gradient_boosting", None, [], [], ["at least one feature"]),
    ],
    ids=["estimator", "empty-estimator", "param", "params", "no-features"],
)
def test_invalid_build_raises_value_error(
    estimator: str,
    params: dict[str, Any] | None,
    numeric: list[str],
    categorical: list[str],
    fragments: list[str],
) -> None:
    with pytest.raises(ValueError, match=re.escape(fragments[0])) as excinfo:
        build_pipeline(estimator, params, numeric=numeric, categorical=categorical)
    for fragment in fragments:
        assert fragment in str(excinfo.value)


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("logistic_regression", {"C": 0.25, "max_iter": 50}),
        ("random_forest", {"n_estimators": 7, "max_depth": 4}),
        ("hist_gradient_boosting", {"max_iter": 20, "learning_rate": 0.3}),
    ],
)
def test_config_params_override_defaults(estimator: str, params: dict[str, Any]) -> None:
    default = _build(estimator).named_steps["estimator"].get_params()
    custom = _build(estimator, params).named_steps["estimator"].get_params()
    for key, value in params.items():
        assert custom[key] == value
        assert default[key] != value
    for key in set(default) - set(params):
        assert custom[key] == default[key], key


@pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
def test_seed_sets_random_state_unless_params_do(estimator: str) -> None:
    assert _build(estimator, seed=5).named_steps["estimator"].get_params()["random_state"] == 5
    explicit = _build(estimator, {"random_state": 9}, seed=5).named_steps["estimator"]
    assert explicit.get_params()["random_state"] == 9


def test_params_are_not_mutated() -> None:
    params = {"n_estimators": 5}
    _build("random_forest", params, seed=3)
    assert params == {"n_estimators": 5}


@pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
def test_unseen_category_and_missing_number_at_predict_time(
    fitted: dict[str, Pipeline], frame: pd.DataFrame, estimator: str
) -> None:
    rows = frame[list(FEATURES)].head(5).copy()
    rows["merchant_category"] = "crypto_exchange"
    rows["channel"] = "carrier_pigeon"
    rows["amount"] = rows["amount"].astype(float)
    rows.loc[rows.index[0], "amount"] = np.nan
    proba = fitted[estimator].predict_proba(rows)
    assert proba.shape == (5, 2)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("random_forest", {"n_estimators": 15}),
        ("hist_gradient_boosting", {"max_iter": 30, "early_stopping": True, "validation_fraction": 0.2}),
        ("logistic_regression", None),
    ],
)
def test_same_seed_same_predictions(frame: pd.DataFrame, estimator: str, params: dict | None) -> None:
    x = frame[list(FEATURES)]
    first = _fit(estimator, frame, params, seed=4).predict_proba(x)
    second = _fit(estimator, frame, params, seed=4).predict_proba(x)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("random_forest", {"n_estimators": 15}),
        ("hist_gradient_boosting", {"max_iter": 30, "early_stopping": True, "validation_fraction": 0.2}),
    ],
)
def test_seed_matters_for_randomised_estimators(
    frame: pd.DataFrame, estimator: str, params: dict[str, Any]
) -> None:
    x = frame[list(FEATURES)]
    first = _fit(estimator, frame, params, seed=4).predict_proba(x)
    other = _fit(estimator, frame, params, seed=5).predict_proba(x)
    assert not np.array_equal(first, other)
