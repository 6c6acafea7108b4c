"""Models a user registers with the plain MLflow API (not ``mlcanary train``), for the BYOM tests.

Every class here is pickled *by value* (``cloudpickle.register_pickle_by_value``), as classes
defined in a user's own training script are, so the model servers load them without this module.
"""

from __future__ import annotations

from typing import Any

import cloudpickle
import mlflow
import mlflow.lightgbm
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


class LogAmount(BaseEstimator, TransformerMixin):
    """A user's own transformer: log1p of the numeric columns."""

    def fit(self, x: Any, y: Any = None) -> LogAmount:
        return self

    def transform(self, x: Any) -> Any:
        return np.log1p(np.clip(np.asarray(x, dtype=float), 0, None))


class FrameWithProbability(mlflow.pyfunc.PythonModel):
    """A pyfunc returning a frame with a label and a probability column (from a fitted pipeline)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        p = self.pipeline.predict_proba(model_input)[:, 1]
        return pd.DataFrame({"label": (p >= 0.5).astype(int), "probability": p})


class LabelsOnly(mlflow.pyfunc.PythonModel):
    """A pyfunc that gives class labels only (no probability)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return self.pipeline.predict(model_input)


class Raises(mlflow.pyfunc.PythonModel):
    """Loads fine, fails on every prediction."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        raise RuntimeError("feature store unreachable")


class ReturnsNaN(mlflow.pyfunc.PythonModel):
    """Loads fine, answers NaN probabilities."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"probability": np.full(len(model_input), np.nan)})


cloudpickle.register_pickle_by_value(__import__(__name__))

# Named outright: MLflow otherwise infers them by loading the model in a subprocess (seconds each).
_REQUIREMENTS = ["mlflow", "scikit-learn", "pandas", "numpy", "lightgbm"]


def split_columns(x: pd.DataFrame) -> tuple[list[str], list[str]]:
    numeric = [c for c in x.columns if x[c].dtype.kind in "if"]
    return numeric, [c for c in x.columns if c not in numeric]


def pipeline(x: pd.DataFrame, y: pd.Series, *, custom: bool = False) -> Pipeline:
    numeric, categorical = split_columns(x)
    scale: Any = Pipeline([("log", LogAmount()), ("scale", StandardScaler())]) if custom else StandardScaler()
    features = ColumnTransformer(
        [("num", scale, numeric), ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)]
    )
    return Pipeline([("features", features), ("clf", LogisticRegression(max_iter=500))]).fit(x, y)


def register(tracking_uri: str, model: str, kind: str, x: pd.DataFrame, y: pd.Series) -> str:
    """Log and register one model of ``kind`` with plain MLflow calls; returns its version."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment("user-training")
    fitted = pipeline(x, y, custom=kind == "cloudpickle")
    example = x.head(5)
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        if kind == "cloudpickle":
            logged = mlflow.sklearn.log_model(
                fitted,
                name="model",
                serialization_format="cloudpickle",
                signature=infer_signature(x, fitted.predict(x)),
                registered_model_name=model,
                pip_requirements=_REQUIREMENTS,
            )
        elif kind == "skops":
            logged = mlflow.sklearn.log_model(
                fitted,
                name="model",
                serialization_format="skops",
                skops_trusted_types=["numpy.dtype"],
                input_example=example,
                registered_model_name=model,
                pip_requirements=_REQUIREMENTS,
            )
        elif kind == "lightgbm":
            import lightgbm

            numeric, categorical = split_columns(x)
            encode = ColumnTransformer(
                [
                    ("num", "passthrough", numeric),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
                ]
            )
            boosted = Pipeline(
                [
                    ("features", encode),
                    ("clf", lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1)),
                ]
            ).fit(x, y)
            logged = mlflow.sklearn.log_model(
                boosted,
                name="model",
                serialization_format="cloudpickle",
                signature=infer_signature(x, boosted.predict(x)),
                registered_model_name=model,
                pip_requirements=_REQUIREMENTS,
            )
        elif kind == "no-signature":
            logged = mlflow.sklearn.log_model(
                fitted,
                name="model",
                serialization_format="cloudpickle",
                registered_model_name=model,
                pip_requirements=_REQUIREMENTS,
            )
        elif kind == "other-inputs":
            narrow = x.drop(columns=[x.columns[-1]])
            refit = pipeline(narrow, y)
            logged = mlflow.sklearn.log_model(
                refit,
                name="model",
                signature=infer_signature(narrow, refit.predict(narrow)),
                registered_model_name=model,
                pip_requirements=_REQUIREMENTS,
            )
        else:
            python_model = {
                "frame": FrameWithProbability(fitted),
                "labels": LabelsOnly(fitted),
                "raises": Raises(),
                "nan": ReturnsNaN(),
            }[kind]
            output = (
                python_model.predict(None, example) if kind in ("frame", "labels") else np.zeros(len(example))
            )
            logged = mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                signature=infer_signature(example, output),
                registered_model_name=model,
                pip_requirements=_REQUIREMENTS,
            )
    return str(logged.registered_model_version)


def set_candidate(tracking_uri: str, model: str, version: str) -> None:
    MlflowClient(tracking_uri, tracking_uri).set_registered_model_alias(model, "candidate", version)
