"""Models a user registers with the plain MLflow API (not ``mlcanary train``), for the BYOM tests.

(The README's two examples, a pyfunc and a pipeline with a custom transformer, are the others.)
Every class here is pickled *by value* (``cloudpickle.register_pickle_by_value``), as classes
defined in a user's own training script are, so the model servers load them without this module.
"""

from __future__ import annotations

from typing import Any

import cloudpickle
import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlcanary.config import Settings


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


def pipeline(x: pd.DataFrame, y: pd.Series) -> Pipeline:
    numeric, categorical = split_columns(x)
    features = ColumnTransformer(
        [("num", StandardScaler(), numeric), ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)]
    )
    return Pipeline([("features", features), ("clf", LogisticRegression(max_iter=500))]).fit(x, y)


def _experiment(settings: Settings) -> str:
    """The user's experiment, its artifacts beside the stack's (never in the working directory)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    found = client.get_experiment_by_name("user-training")
    if found is not None:
        return found.experiment_id
    return client.create_experiment("user-training", artifact_location=settings.artifact_location)


def tensor_rows(x: pd.DataFrame) -> np.ndarray:
    """The numeric features as one float tensor ``[n, k]`` (what a tensor model takes)."""
    numeric, _ = split_columns(x)
    return x[numeric].to_numpy(dtype=np.float64)


def _lightgbm_pipeline(x: pd.DataFrame, y: pd.Series) -> Pipeline:
    import lightgbm

    numeric, categorical = split_columns(x)
    encode = ColumnTransformer(
        [("num", "passthrough", numeric), ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)]
    )
    classifier = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1)
    return Pipeline([("features", encode), ("clf", classifier)]).fit(x, y)


def _log_flipped(x: pd.DataFrame, y: pd.Series, model: str) -> Any:
    """A LightGBM pipeline fitted on inverted labels (it flags nearly every transaction the
    champion passes), saved with skops (MLflow's default) and the trusted types skops names for
    it, as MLflow asks a user to list them."""
    flipped = _lightgbm_pipeline(x, 1 - y)
    return mlflow.sklearn.log_model(
        flipped,
        name="model",
        signature=infer_signature(x, flipped.predict_proba(x)[:, 1]),
        input_example=x.head(3),
        registered_model_name=model,
        skops_trusted_types=[
            "collections.OrderedDict",
            "lightgbm.basic.Booster",
            "lightgbm.sklearn.LGBMClassifier",
        ],
        pip_requirements=_REQUIREMENTS,
    )


def _log_tensor_lightgbm(x: pd.DataFrame, y: pd.Series, model: str) -> Any:
    """LightGBM's own MLflow flavor, on one float tensor ``[n, k]`` (no column names)."""
    import lightgbm
    from mlflow import lightgbm as mlflow_lightgbm

    array = tensor_rows(x)
    booster = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1).fit(array, y)
    return mlflow_lightgbm.log_model(
        booster,
        name="model",
        signature=infer_signature(array, booster.predict(array)),
        registered_model_name=model,
        pip_requirements=_REQUIREMENTS,
    )


def _log_sklearn(x: pd.DataFrame, y: pd.Series, model: str, *, signature: bool = True) -> Any:
    """A plain pipeline saved with cloudpickle, with a signature or (``signature=False``) without."""
    fitted = pipeline(x, y)
    return mlflow.sklearn.log_model(
        fitted,
        name="model",
        serialization_format="cloudpickle",
        signature=infer_signature(x, fitted.predict(x)) if signature else None,
        registered_model_name=model,
        pip_requirements=_REQUIREMENTS,
    )


def _log_pyfunc(
    python_model: mlflow.pyfunc.PythonModel, example: pd.DataFrame, output: Any, model: str
) -> Any:
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        signature=infer_signature(example, output),
        registered_model_name=model,
        pip_requirements=_REQUIREMENTS,
    )


def register(settings: Settings, kind: str, x: pd.DataFrame, y: pd.Series) -> str:
    """Log and register one model of ``kind`` with plain MLflow calls; returns its version.

    Kinds: ``flipped`` (LightGBM, skops), ``tensor-lightgbm``, ``no-signature``, ``other-inputs``
    (one column fewer than the champion), and the pyfuncs ``labels``, ``raises``, ``nan``.
    """
    model = settings.model.name
    example = x.head(5)
    with mlflow.start_run(experiment_id=_experiment(settings)):
        if kind == "flipped":
            logged = _log_flipped(x, y, model)
        elif kind == "tensor-lightgbm":
            logged = _log_tensor_lightgbm(x, y, model)
        elif kind == "no-signature":
            logged = _log_sklearn(x, y, model, signature=False)
        elif kind == "other-inputs":
            logged = _log_sklearn(x.drop(columns=[x.columns[-1]]), y, model)
        elif kind == "labels":
            labels_only = LabelsOnly(pipeline(x, y))
            logged = _log_pyfunc(labels_only, example, labels_only.predict(None, example), model)
        else:
            failing = {"raises": Raises(), "nan": ReturnsNaN()}[kind]
            logged = _log_pyfunc(failing, example, np.zeros(len(example)), model)
    return str(logged.registered_model_version)


def set_alias(settings: Settings, alias: str, version: str) -> None:
    """Point ``@alias`` of the stack's model at ``version``, as a user (or CI) does."""
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.set_registered_model_alias(settings.model.name, alias, version)
