"""The model version a model server exposes, and a placeholder request to warm it up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlcanary.data.model_inputs import InputSchema
from mlcanary.data.schema import FeatureSpec
from mlcanary.registry.model_loader import ScoringModel, classes_of
from mlcanary.rollout.model_outputs import OutputNames


@dataclass(frozen=True)
class ServedModel:
    """The model version a server exposes.

    ``scorer`` is the loaded MLflow model (:class:`~mlcanary.registry.model_loader.ScoringModel`): its input
    schema decides how requests are decoded and its named outputs are returned as MLServer names
    them; ``outputs`` says which of them hold the label and the probability (``model.outputs``).
    For tests and backward compatibility, a scikit-learn-style ``predictor`` with ``features`` may
    be given instead (it is wrapped in a scorer). ``arm`` is normally ``"champion"`` or
    ``"candidate"``. Raises ``ValueError`` for an empty name, version or arm, no or duplicate
    features, or a threshold outside [0, 1].
    """

    name: str
    version: str
    arm: str
    predictor: Any = None
    features: tuple[FeatureSpec, ...] = ()
    threshold: float = 0.5
    scorer: ScoringModel | None = None
    outputs: OutputNames = field(default_factory=OutputNames)

    def __post_init__(self) -> None:
        for attribute in ("name", "version", "arm"):
            if not getattr(self, attribute):
                raise ValueError(f"ServedModel.{attribute} must not be empty")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"ServedModel.threshold must be within [0, 1], got {self.threshold}")
        if self.predictor is not None or self.scorer is None:
            if not self.features:
                raise ValueError("ServedModel.features must name at least one feature")
            names = [spec.name for spec in self.features]
            if len(set(names)) != len(names):
                raise ValueError(f"ServedModel.features has duplicate names: {names}")
            scorer = ScoringModel(
                inputs=InputSchema(kind="columns", columns=tuple(self.features)),
                flavors=("sklearn",),
                path="sklearn",
                model=self.predictor,
                threshold=self.threshold,
                classes=classes_of(self.predictor),
            )
            object.__setattr__(self, "scorer", scorer)
        elif not self.features:
            object.__setattr__(self, "features", tuple(self.scorer.inputs.columns))

    @property
    def model(self) -> ScoringModel:
        assert self.scorer is not None
        return self.scorer


def placeholder_request(schema: InputSchema) -> dict[str, Any]:
    """A V1 request of one placeholder row for ``schema`` (zeros, false, empty strings)."""
    if schema.kind == "tensor":
        assert schema.tensor is not None
        dims = [1 if d == -1 else d for d in schema.tensor.shape[1:]]
        row: Any = np.zeros(dims, dtype=schema.tensor.dtype).tolist()
        return {"instances": [row]}
    placeholder = {"double": 0.0, "long": 0, "boolean": False, "string": ""}
    return {"instances": [{spec.name: placeholder[spec.dtype] for spec in schema.columns}]}
