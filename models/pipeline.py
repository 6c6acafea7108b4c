"""scikit-learn pipeline factory: preprocessing + estimator, hyperparameters from config.

The training service imports the factory by the name in ``model.factory`` and calls it as
``build_pipeline(estimator, params, numeric=..., categorical=..., seed=...)``. The returned pipeline
takes a DataFrame of the raw feature columns and yields labels (``predict``) and class
probabilities (``predict_proba``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ESTIMATORS: dict[str, Callable[..., Any]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
}
# Defaults that differ from scikit-learn's, chosen for imbalanced tabular data.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_iter": 1000, "C": 1.0},
    "random_forest": {"n_estimators": 200, "min_samples_leaf": 3, "n_jobs": 1},
    "hist_gradient_boosting": {"max_iter": 200, "learning_rate": 0.08},
}


def build_pipeline(
    estimator: str,
    params: Mapping[str, Any] | None = None,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    seed: int = 0,
) -> Pipeline:
    """Return an unfitted ``Pipeline(preprocess → estimator)`` for a binary classifier.

    Numeric columns are median-imputed and standardised; categorical columns are imputed with
    their most frequent value and one-hot encoded, unknown categories ignored at predict time.
    Raises ``ValueError`` for an unknown estimator, an unknown hyperparameter or no features.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(sorted(ESTIMATORS))}")
    if not numeric and not categorical:
        raise ValueError("the pipeline needs at least one feature column")
    cls = ESTIMATORS[estimator]
    merged = {**_DEFAULTS[estimator], **dict(params or {})}
    valid = cls().get_params()
    unknown = sorted(set(merged) - set(valid))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) for {estimator}: {', '.join(unknown)}")
    if "random_state" in valid:
        merged.setdefault("random_state", seed)
    transformers = []
    if numeric:
        transformers.append(
            (
                "numeric",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                list(numeric),
            )
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                list(categorical),
            )
        )
    return Pipeline(
        [
            ("preprocess", ColumnTransformer(transformers, remainder="drop")),
            ("estimator", cls(**merged)),
        ]
    )
