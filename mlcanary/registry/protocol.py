"""The registry seam: :class:`ModelRegistry` (the rollout's
:class:`~mlcanary.rollout.versions.VersionRegistry` plus registering and loading models) and what
travels through it.

:class:`mlcanary.registry.mlflow_registry.MlflowRegistry` implements it on MLflow; the in-memory
:class:`mlcanary.testing.fakes.InMemoryRegistry` implements it for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from mlcanary.data.schema import FeatureSpec
from mlcanary.rollout.versions import ModelVersionInfo, VersionRegistry


@dataclass(frozen=True)
class LoadedModel:
    """A version's model and its inputs: ``model`` is the estimator itself for a scikit-learn-style
    model (``predict_proba`` over a raw-feature DataFrame) or the pyfunc model; ``scorer`` scores
    any of them as the model servers do (:class:`~mlcanary.registry.model_loader.ScoringModel`)."""

    name: str
    version: str
    model: Any
    features: tuple[FeatureSpec, ...]
    scorer: Any = None


@dataclass(frozen=True)
class NewVersion:
    """Everything registered with a new version, in one training run.

    ``reference`` is a sample of the training features, stored with the version as the drift
    reference; ``input_example`` is a few rows shown in the MLflow UI and used for the signature.
    """

    model: Any
    features: tuple[FeatureSpec, ...]
    reference: pd.DataFrame
    input_example: pd.DataFrame
    metrics: Mapping[str, float]
    params: Mapping[str, str]
    tags: Mapping[str, str]
    run_name: str
    pip_requirements: tuple[str, ...] = ()


class ModelRegistry(VersionRegistry, Protocol):
    """Registry operations mlcanary needs: versions, aliases and tags
    (:class:`~mlcanary.rollout.versions.VersionRegistry`, with its errors and idempotence), plus
    registering a new version and loading a version's model and drift reference back."""

    def register(self, name: str, new: NewVersion) -> ModelVersionInfo: ...

    def load_model(self, name: str, version: str) -> LoadedModel: ...

    def load_reference(self, name: str, version: str) -> pd.DataFrame: ...
