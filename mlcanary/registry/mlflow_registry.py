"""The MLflow adapter of the registry seam: aliases, version tags, registration and loading.

:class:`MlflowRegistry` implements :class:`mlcanary.registry.protocol.ModelRegistry` on any MLflow
tracking / registry URI (a ``sqlite:///`` file locally, an ``http://`` server in a cluster). It
uses an injected ``MlflowClient`` only, never MLflow's process-global tracking URI, so several
registries can live in one process.

Aliases are the source of truth for roles: ``@champion`` serves production, ``@candidate`` is the
version under canary. Everything mlcanary records on a version is a tag named in
:mod:`mlcanary.rollout.tags`.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from mlcanary.config import Settings
from mlcanary.data.model_inputs import InputSchema
from mlcanary.registry.protocol import LoadedModel, NewVersion
from mlcanary.registry.read_only import redacted
from mlcanary.registry.retry import NO_RETRY, RetryPolicy, call_with_retry
from mlcanary.registry.signature import signature_for
from mlcanary.rollout import tags
from mlcanary.rollout.versions import (
    ModelNotFoundError,
    ModelVersionInfo,
    RegistryError,
    SignatureMissingError,
    VersionNotFoundError,
)

REFERENCE_ARTIFACT = "reference/reference.parquet"
MODEL_ARTIFACT = "model"


def _is_not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


P = ParamSpec("P")
R = TypeVar("R")


def _retried(
    method: Callable[Concatenate[MlflowRegistry, P], R],
) -> Callable[Concatenate[MlflowRegistry, P], R]:
    """Retry the whole call on transient failures by the registry's :class:`RetryPolicy`; the
    registry calls it makes itself run once inside it (so retries never multiply)."""

    @functools.wraps(method)
    def wrapper(self: MlflowRegistry, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._in_call.active:
            return method(self, *args, **kwargs)
        self._in_call.active = True
        try:
            return call_with_retry(
                self.retry,
                f"{method.__name__}{args!r}",
                lambda: method(self, *args, **kwargs),
                where=f"MLflow at {redacted(self.registry_uri)}",
            )
        finally:
            self._in_call.active = False

    return wrapper


class _CallDepth(threading.local):
    active = False


class MlflowRegistry:
    """:class:`~mlcanary.registry.protocol.ModelRegistry` on an MLflow tracking server / registry.

    Every call but :meth:`register` is retried on transient failures by ``retry`` (see
    :mod:`mlcanary.registry.retry`; default: no retry) and then raises
    :class:`~mlcanary.rollout.versions.RegistryUnavailableError`. ``register`` is not: creating a
    run or a version twice is not idempotent."""

    def __init__(
        self,
        tracking_uri: str,
        registry_uri: str | None = None,
        *,
        experiment: str = "mlcanary",
        artifact_location: str | None = None,
        client: MlflowClient | None = None,
        serialization: str = "skops",
        retry: RetryPolicy = NO_RETRY,
    ) -> None:
        self.serialization = serialization
        self.retry = retry
        self._in_call = _CallDepth()
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.client = client or MlflowClient(tracking_uri=tracking_uri, registry_uri=self.registry_uri)

    # -- reading ---------------------------------------------------------------------------------

    @_retried
    def model_exists(self, name: str) -> bool:
        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if _is_not_found(exc):
                return False
            raise RegistryError(f"cannot read model {name!r}: {exc.message}") from exc
        return True

    @_retried
    def list_models(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    @_retried
    def aliases(self, name: str) -> dict[str, str]:
        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise ModelNotFoundError(f"model {name!r} is not registered") from None
            raise RegistryError(f"cannot read model {name!r}: {exc.message}") from exc
        # search_model_versions returns empty aliases; the registered model has them.
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def _info(self, mv: Any, aliases: Mapping[str, str]) -> ModelVersionInfo:
        version = str(mv.version)
        return ModelVersionInfo(
            name=mv.name,
            version=version,
            run_id=mv.run_id or None,
            source=mv.source,
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
            tags=dict(mv.tags or {}),
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
        )

    @_retried
    def get_version(self, name: str, version: str) -> ModelVersionInfo:
        aliases = self.aliases(name)
        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if _is_not_found(exc):
                raise VersionNotFoundError(f"model {name!r} has no version {version!r}") from None
            raise RegistryError(f"cannot read {name!r} version {version!r}: {exc.message}") from exc
        return self._info(mv, aliases)

    @_retried
    def version_for_alias(self, name: str, alias: str) -> ModelVersionInfo | None:
        version = self.aliases(name).get(alias)
        return None if version is None else self.get_version(name, version)

    @_retried
    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        aliases = self.aliases(name)
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self._info(mv, aliases) for mv in found), key=lambda v: int(v.version))

    # -- writing ---------------------------------------------------------------------------------

    @_retried
    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.get_version(name, version)
        self.client.set_registered_model_alias(name, alias, str(version))

    @_retried
    def delete_alias(self, name: str, alias: str) -> None:
        if alias not in self.aliases(name):
            return
        self.client.delete_registered_model_alias(name, alias)

    @_retried
    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        self.get_version(name, version)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value))

    def _experiment_id(self) -> str:
        existing = self.client.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        try:
            return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        except MlflowException:
            # Created concurrently by another process: read it back.
            created = self.client.get_experiment_by_name(self.experiment)
            if created is None:
                raise
            return created.experiment_id

    def register(self, name: str, new: NewVersion) -> ModelVersionInfo:
        """Log the model, its reference sample, metrics and params in one run; register a version.

        The run is marked FAILED if anything goes wrong before registration, so a crash never
        leaves a half-logged version in the registry.
        """
        import mlflow.sklearn  # heavy; only needed when registering or loading
        import skops.io

        run = self.client.create_run(self._experiment_id(), run_name=new.run_name, tags=dict(new.tags))
        run_id = run.info.run_id
        try:
            now = int(datetime.now(tz=UTC).timestamp() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in new.metrics.items()],
                params=[Param(k, str(v)[:6000]) for k, v in new.params.items()],
            )
            with tempfile.TemporaryDirectory(prefix="mlcanary-register-") as tmp:
                model_dir = Path(tmp) / MODEL_ARTIFACT
                fmt: dict[str, Any] = {"serialization_format": self.serialization}
                if self.serialization == "skops":
                    probe = Path(tmp) / "probe.skops"
                    skops.io.dump(new.model, probe)
                    # We built this pipeline ourselves, so every type in it is trusted on reload.
                    fmt["skops_trusted_types"] = skops.io.get_untrusted_types(file=probe)
                mlflow.sklearn.save_model(
                    new.model,
                    path=str(model_dir),
                    **fmt,
                    signature=signature_for(new.features),
                    input_example=new.input_example,
                    pip_requirements=list(new.pip_requirements) or None,
                )
                self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
                reference_file = Path(tmp) / Path(REFERENCE_ARTIFACT).name
                new.reference.to_parquet(reference_file, index=False)
                self.client.log_artifact(run_id, str(reference_file), str(Path(REFERENCE_ARTIFACT).parent))
        except Exception:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise RegistryError(f"cannot create model {name!r}: {exc.message}") from exc
        version_tags = {**new.tags, **tags.tagged({tags.REFERENCE_ARTIFACT: REFERENCE_ARTIFACT})}
        mv = self.client.create_model_version(
            name,
            source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT}",
            run_id=run_id,
            tags=version_tags,
        )
        return self.get_version(name, str(mv.version))

    # -- loading ---------------------------------------------------------------------------------

    @_retried
    def load_model(self, name: str, version: str) -> LoadedModel:
        from mlcanary.registry.model_loader import ModelLoadError, load_registered_model

        info = self.get_version(name, version)
        try:
            scorer = load_registered_model(self.client, self.tracking_uri, name, info.version)
        except ModelLoadError as exc:
            raise RegistryError(str(exc)) from exc
        return LoadedModel(
            name=name,
            version=info.version,
            model=scorer.model,
            features=tuple(scorer.inputs.columns),
            scorer=scorer,
        )

    @_retried
    def input_schema(self, name: str, version: str) -> InputSchema:
        """The inputs of ``name`` ``version`` from its signature (only its MLmodel file is read).

        Raises :class:`SignatureMissingError` (the message says how to fix it) without a usable
        signature and :class:`RegistryError` when the MLmodel file cannot be read.
        """
        from mlcanary.registry.model_loader import ModelLoadError, SignatureError, read_registered_inputs

        info = self.get_version(name, version)
        try:
            return read_registered_inputs(self.client, self.tracking_uri, name, info.version)
        except SignatureError as exc:
            raise SignatureMissingError(str(exc)) from exc
        except ModelLoadError as exc:
            raise RegistryError(str(exc)) from exc

    @_retried
    def load_reference(self, name: str, version: str) -> pd.DataFrame:
        info = self.get_version(name, version)
        if info.run_id is None:
            raise RegistryError(f"{name!r} version {version} has no run, so no reference sample")
        artifact = info.tag(tags.REFERENCE_ARTIFACT) or REFERENCE_ARTIFACT
        with tempfile.TemporaryDirectory(prefix="mlcanary-ref-") as tmp:
            local = self.client.download_artifacts(info.run_id, artifact, tmp)
            return pd.read_parquet(local)


def bound_mlflow_http_client(timeout_s: int) -> None:
    """Make each of MLflow's HTTP requests one attempt of at most ``timeout_s`` seconds, unless the
    environment already says otherwise: MLflow's client would otherwise retry a refused connection
    7 times over ~4 minutes (and a hung one for 120 s each) inside every call we retry ourselves.
    MLflow reads these variables at each request."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))


def registry_from_settings(settings: Settings) -> MlflowRegistry:
    """The MLflow registry the settings point at (creating the local state directory if needed),
    retrying by ``mlflow.retry``."""
    if settings.tracking_uri.startswith("sqlite:") or settings.registry_uri.startswith("sqlite:"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    retry = settings.mlflow.retry
    if settings.tracking_uri.startswith(("http:", "https:")):
        bound_mlflow_http_client(retry.request_timeout_s)
    return MlflowRegistry(
        settings.tracking_uri,
        settings.registry_uri,
        experiment=settings.mlflow.experiment,
        artifact_location=settings.artifact_location,
        serialization=settings.mlflow.serialization,
        retry=RetryPolicy(retry.attempts, retry.first_delay_s, retry.max_delay_s),
    )
