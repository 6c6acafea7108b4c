"""Feature specs ↔ MLflow model signatures (inputs are the features, the output is P(positive))."""

from __future__ import annotations

from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from mlcanary.data.schema import FeatureDtype, FeatureSpec
from mlcanary.rollout.versions import RegistryError

# MLflow column types ↔ our feature dtypes (MLflow has no separate "categorical").
_TO_MLFLOW: dict[FeatureDtype, str] = {
    "double": "double",
    "long": "long",
    "boolean": "boolean",
    "string": "string",
}
_FROM_MLFLOW: dict[str, FeatureDtype] = {
    "double": "double",
    "float": "double",
    "long": "long",
    "integer": "long",
    "boolean": "boolean",
    "string": "string",
}


def signature_for(features: tuple[FeatureSpec, ...]) -> ModelSignature:
    """An MLflow signature whose inputs are exactly ``features`` and whose output is P(positive)."""
    inputs = Schema([ColSpec(_TO_MLFLOW[f.dtype], f.name) for f in features])
    outputs = Schema([ColSpec("double", "probability")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def features_from_signature(signature: ModelSignature | None) -> tuple[FeatureSpec, ...]:
    """Inverse of :func:`signature_for`: feature specs from a logged model's input schema."""
    if signature is None or signature.inputs is None:
        raise RegistryError("the model was logged without an input signature")
    specs = []
    for column in signature.inputs.inputs:
        type_name = str(getattr(column.type, "name", column.type)).lower()
        dtype = _FROM_MLFLOW.get(type_name)
        if dtype is None or column.name is None:
            raise RegistryError(f"unsupported input column in signature: {column}")
        kind = "numeric" if dtype in ("double", "long") else "categorical"
        specs.append(FeatureSpec(column.name, kind, dtype))
    return tuple(specs)
