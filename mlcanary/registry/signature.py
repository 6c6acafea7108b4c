"""Feature specs → the MLflow signature of a version `mlcanary train` logs (inputs are the features,
the output is P(positive)); the way back, for any model, is
:func:`mlcanary.registry.model_loader.input_schema_from_signature`."""

from __future__ import annotations

from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from mlcanary.data.schema import FeatureDtype, FeatureSpec

# Our feature dtypes → MLflow column types (MLflow has no separate "categorical").
_TO_MLFLOW: dict[FeatureDtype, str] = {
    "double": "double",
    "long": "long",
    "boolean": "boolean",
    "string": "string",
}


def signature_for(features: tuple[FeatureSpec, ...]) -> ModelSignature:
    """An MLflow signature whose inputs are exactly ``features`` and whose output is P(positive)."""
    inputs = Schema([ColSpec(_TO_MLFLOW[f.dtype], f.name) for f in features])
    outputs = Schema([ColSpec("double", "probability")])
    return ModelSignature(inputs=inputs, outputs=outputs)
