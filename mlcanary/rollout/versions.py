"""The registry as the rollout sees it: model versions, their aliases and tags.

:class:`VersionRegistry` is the part of a model registry the engine and ``status`` need (aliases and
tags, never model files); the full registry seam,
:class:`mlcanary.registry.protocol.ModelRegistry`, adds registering and loading models, and
:class:`mlcanary.registry.mlflow_registry.MlflowRegistry` implements both on MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mlcanary.rollout.tags import tag_name


class RegistryError(Exception):
    """A registry operation that cannot be done; the message says what and why."""


class ModelNotFoundError(RegistryError):
    """The registered model does not exist."""


class VersionNotFoundError(RegistryError):
    """The model exists but the version does not."""


class RegistryUnavailableError(RegistryError):
    """The registry could not be reached (or kept failing) through every retry; nothing after the
    failed call was done, and the message names the call, the attempts and the last error."""


class SignatureMissingError(RegistryError):
    """The version has no usable input signature; the message says how to fix it."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version as mlcanary sees it (``version`` is MLflow's string)."""

    name: str
    version: str
    run_id: str | None
    source: str
    created_at: datetime
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def tag(self, key: str) -> str | None:
        """The value of the tag ``mlcanary.<key>`` (a name of :mod:`mlcanary.rollout.tags`), or None."""
        return self.tags.get(tag_name(key))


class VersionReader(Protocol):
    """Reading versions and aliases of a registered model (what ``status`` needs).

    Implementations raise :class:`ModelNotFoundError` / :class:`VersionNotFoundError` for missing
    entities and :class:`RegistryError` for anything else.
    """

    def model_exists(self, name: str) -> bool: ...

    def aliases(self, name: str) -> dict[str, str]:
        """Alias → version for a registered model."""
        ...

    def get_version(self, name: str, version: str) -> ModelVersionInfo: ...

    def version_for_alias(self, name: str, alias: str) -> ModelVersionInfo | None: ...

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        """All versions, oldest first."""
        ...


class VersionRegistry(VersionReader, Protocol):
    """Versions, aliases and tags of registered models: :class:`VersionReader` plus listing models
    and writing aliases and tags.

    Implementations raise :class:`ModelNotFoundError` / :class:`VersionNotFoundError` for missing
    entities and :class:`RegistryError` for anything else; alias operations are idempotent (setting
    an alias already there, deleting one that is gone).
    """

    def list_models(self) -> list[str]:
        """Names of every registered model."""
        ...

    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    def delete_alias(self, name: str, alias: str) -> None: ...

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None: ...
