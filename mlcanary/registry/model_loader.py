"""Load any MLflow model version for scoring: ``mlflow.pyfunc``, with a fast path for scikit-learn.

:func:`load_scoring_model` reads a downloaded model directory. Its inputs come from the signature
(:func:`input_schema_from_signature`; a model without one is refused with how to fix it). Then:

* **scikit-learn API** (the ``sklearn`` flavor, whatever its serialization — skops with its
  trusted types, cloudpickle or pickle — and other flavors whose raw model is a scikit-learn-style
  classifier, e.g. LightGBM's ``LGBMClassifier``): the estimator is called directly. A classifier
  with ``predict_proba`` answers ``output-1`` (the class labels, as MLServer names the output of
  ``pyfunc.predict``) and ``predict_proba`` (the class-probability matrix); the label of a binary
  classifier is ``classes_[1]`` when P(positive) >= the threshold. Without ``predict_proba`` the
  answer is ``output-1`` alone.
* **any other model** goes through ``mlflow.pyfunc.load_model(...).predict`` (schema enforcement
  included), and its answer is named as MLServer's MLflow runtime names it
  (:func:`named_outputs`): a DataFrame gives one output per column, a dict one per key, an array,
  a list or a Series ``output-1``.

MLflow is imported inside the functions (it takes seconds), so importing this module is cheap.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlcanary.data.model_inputs import TENSOR_DTYPES, InputSchema, TensorInput
from mlcanary.data.schema import FeatureDtype, FeatureSpec

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = "output-1"
"""The name MLServer's MLflow runtime gives a model's single (array) output."""
PROBA_OUTPUT = "predict_proba"

HOW_TO_LOG_A_SIGNATURE = (
    "log the model with a signature, e.g. mlflow.sklearn.log_model(model, name='model', "
    "signature=mlflow.models.infer_signature(X, model.predict(X))) or with input_example=X, "
    "register that version and set @candidate on it"
)

# MLflow column types ↔ our feature dtypes (MLflow has no separate "categorical").
_COLUMN_DTYPES: dict[str, FeatureDtype] = {
    "double": "double",
    "float": "double",
    "long": "long",
    "integer": "long",
    "boolean": "boolean",
    "string": "string",
}

ScoringPath = Literal["sklearn", "pyfunc"]


class ModelLoadError(RuntimeError):
    """A model version that cannot be loaded or scored; the message says why (one line)."""


class SignatureError(ModelLoadError):
    """A model version without a usable input signature; the message says how to fix it."""


def input_schema_from_signature(signature: Any, *, what: str = "the model") -> InputSchema:
    """An :class:`InputSchema` from an MLflow ``ModelSignature`` (raises :class:`SignatureError`)."""
    if signature is None or signature.inputs is None:
        raise SignatureError(f"{what} was logged without a signature: {HOW_TO_LOG_A_SIGNATURE}")
    schema = signature.inputs
    specs = list(schema.inputs)
    if schema.is_tensor_spec():
        if len(specs) != 1:
            names = ", ".join(str(spec.name) for spec in specs)
            raise SignatureError(
                f"{what} takes {len(specs)} named tensors ({names}); mlcanary serves models that take "
                "columns or one tensor"
            )
        spec = specs[0]
        dtype = str(np.dtype(spec.type))
        if dtype not in TENSOR_DTYPES:
            raise SignatureError(
                f"{what} takes a tensor of dtype {dtype}; supported: {sorted(TENSOR_DTYPES)}"
            )
        return InputSchema(
            kind="tensor", tensor=TensorInput(spec.name, dtype, tuple(int(d) for d in spec.shape))
        )
    columns = []
    optional = set()
    for index, column in enumerate(specs):
        type_name = str(getattr(column.type, "name", column.type)).lower()
        dtype = _COLUMN_DTYPES.get(type_name)
        if column.name is None:
            raise SignatureError(
                f"{what} has an unnamed input column (position {index}): log it with a DataFrame "
                "input example or named ColSpec inputs"
            )
        if dtype is None:
            raise SignatureError(
                f"{what} takes column {column.name!r} of type {type_name}; supported column types: "
                + ", ".join(sorted(_COLUMN_DTYPES))
            )
        kind = "numeric" if dtype in ("double", "long") else "categorical"
        columns.append(FeatureSpec(column.name, kind, dtype))
        if not getattr(column, "required", True):
            optional.add(column.name)
    return InputSchema(kind="columns", columns=tuple(columns), optional=frozenset(optional))


def read_input_schema(model_dir: str | Path, *, what: str = "the model") -> InputSchema:
    """The input schema in ``model_dir/MLmodel``."""
    from mlflow.models import Model

    try:
        meta = Model.load(str(model_dir))
    except Exception as exc:
        raise ModelLoadError(f"{what} has no readable MLmodel file: {type(exc).__name__}: {exc}") from exc
    return input_schema_from_signature(meta.signature, what=what)


def _column_array(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 0:
        array = array.reshape(1)
    return array


def named_outputs(raw: Any) -> list[tuple[str, np.ndarray]]:
    """A model's answer as (name, array) pairs, named as MLServer's MLflow runtime names them."""
    if isinstance(raw, pd.DataFrame):
        return [(str(column), raw[column].to_numpy()) for column in raw.columns]
    if isinstance(raw, Mapping):
        return [(str(key), _column_array(value)) for key, value in raw.items()]
    if isinstance(raw, pd.Series):
        return [(DEFAULT_OUTPUT, raw.to_numpy())]
    if isinstance(raw, np.ndarray | list | tuple):
        return [(DEFAULT_OUTPUT, _column_array(raw))]
    raise ModelLoadError(f"the model returned a {type(raw).__name__}; expected a DataFrame, dict or array")


def _sklearn_api(model: Any) -> bool:
    return callable(getattr(model, "predict", None))


def _classifier(model: Any) -> bool:
    return callable(getattr(model, "predict_proba", None)) and getattr(model, "classes_", None) is not None


def classes_of(model: Any) -> tuple[Any, ...] | None:
    classes = getattr(model, "classes_", None)
    return None if classes is None else tuple(np.asarray(classes).tolist())


@dataclass
class ScoringModel:
    """A loaded model version ready to score inputs decoded by the model servers.

    ``predict`` takes a DataFrame (column-based inputs, columns in signature order) or an array
    (tensor-based) and returns named outputs (see the module docstring); it raises whatever the
    model raises. ``classes`` are a classifier's ``classes_`` when known.
    """

    inputs: InputSchema
    flavors: tuple[str, ...]
    path: ScoringPath
    model: Any
    threshold: float = 0.5
    classes: tuple[Any, ...] | None = None
    _workdir: Any = field(default=None, repr=False)

    @property
    def flavor(self) -> str:
        """The model's own flavor (the first that is not ``python_function``)."""
        own = [name for name in self.flavors if name != "python_function"]
        return own[0] if own else "python_function"

    def predict(self, data: Any) -> list[tuple[str, np.ndarray]]:
        if self.path == "pyfunc":
            return named_outputs(self.model.predict(data))
        predict_proba = getattr(self.model, "predict_proba", None)
        if not callable(predict_proba):
            return [(DEFAULT_OUTPUT, _column_array(self.model.predict(data)))]
        proba = np.asarray(predict_proba(data))
        classes = np.asarray(self.classes if self.classes is not None else (0, 1))
        if proba.ndim != 2 or proba.shape[1] != len(classes):
            # Returned as it is: reading the answer reports the shape (a 500, refused at preflight).
            return [(PROBA_OUTPUT, proba)]
        if len(classes) == 2:
            labels = classes[(proba[:, 1] >= self.threshold).astype(int)]
        else:
            labels = classes[np.argmax(proba, axis=1)]
        return [(DEFAULT_OUTPUT, labels), (PROBA_OUTPUT, proba)]


def load_scoring_model(
    model_dir: str | Path, *, threshold: float = 0.5, what: str = "the model"
) -> ScoringModel:
    """Load the MLflow model in ``model_dir`` (see the module docstring).

    Raises :class:`SignatureError` without a usable signature and :class:`ModelLoadError` when the
    model cannot be loaded (the message names the exception, on one line).
    """
    from mlflow.models import Model

    inputs = read_input_schema(model_dir, what=what)
    meta = Model.load(str(model_dir))
    flavors = tuple(meta.flavors)
    try:
        if "sklearn" in meta.flavors:
            import mlflow.sklearn

            estimator = mlflow.sklearn.load_model(str(model_dir))
            return _sklearn_model(inputs, flavors, estimator, threshold)
        import mlflow.pyfunc

        pyfunc = mlflow.pyfunc.load_model(str(model_dir))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{what} cannot be loaded: {type(exc).__name__}: {_one_line(exc)}") from exc
    raw = _raw_model(pyfunc)
    if raw is not None and _classifier(raw) and meta.flavors.keys() & {"lightgbm", "xgboost", "catboost"}:
        return _sklearn_model(inputs, flavors, raw, threshold)
    return ScoringModel(inputs=inputs, flavors=flavors, path="pyfunc", model=pyfunc, threshold=threshold)


def _sklearn_model(
    inputs: InputSchema, flavors: tuple[str, ...], estimator: Any, threshold: float
) -> ScoringModel:
    if not _sklearn_api(estimator):
        raise ModelLoadError(f"the {flavors[0]} model has no predict method")
    return ScoringModel(
        inputs=inputs,
        flavors=flavors,
        path="sklearn",
        model=estimator,
        threshold=threshold,
        classes=classes_of(estimator),
    )


def _raw_model(pyfunc: Any) -> Any:
    try:
        return pyfunc.get_raw_model()
    except Exception:
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def download_model(client: Any, tracking_uri: str, name: str, version: str, destination: str | Path) -> Path:
    """Download registered ``name`` ``version`` into ``destination``; returns the model directory."""
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(name, str(version)),
        dst_path=str(destination),
        tracking_uri=tracking_uri,
    )
    return Path(local)


def load_registered_model(
    client: Any, tracking_uri: str, name: str, version: str, *, threshold: float = 0.5
) -> ScoringModel:
    """Download and load a registered version; its files live as long as the returned model."""
    workdir = tempfile.TemporaryDirectory(prefix="mlcanary-model-")
    try:
        local = download_model(client, tracking_uri, name, version, workdir.name)
        scoring = load_scoring_model(local, threshold=threshold, what=f"{name} v{version}")
    except ModelLoadError:
        workdir.cleanup()
        raise
    except Exception as exc:
        workdir.cleanup()
        raise ModelLoadError(
            f"{name} v{version} cannot be downloaded: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    scoring._workdir = workdir
    return scoring


def read_registered_inputs(client: Any, tracking_uri: str, name: str, version: str) -> InputSchema:
    """The input schema of a registered version (downloads its MLmodel file only)."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="mlcanary-mlmodel-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=client.get_model_version_download_uri(name, str(version)).rstrip("/")
                + "/MLmodel",
                dst_path=tmp,
                tracking_uri=tracking_uri,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"{name} v{version} has no readable MLmodel file: {type(exc).__name__}: {_one_line(exc)}"
            ) from exc
        return read_input_schema(Path(local).parent, what=f"{name} v{version}")
