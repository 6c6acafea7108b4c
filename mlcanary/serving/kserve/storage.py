"""Where KServe reads a model version from: an MLflow version resolved to a storage URI.

KServe's storage initializer understands ``s3://``, ``gs://``, ``pvc://<claim>/<path>``,
``http(s)://``, Azure blob (``https://<account>.blob.core.windows.net/…``), ``hf://`` and ``oci://``.
It has **no** ``models:/`` scheme, and a proxied ``mlflow-artifacts:/`` URI points at the MLflow
server's artifact proxy, which KServe cannot read. :func:`storage_uri_for` refuses both (and local
paths) with what to configure instead; :class:`MlflowStorageResolver` asks MLflow for a version's
artifact location first.
"""

from __future__ import annotations

import urllib.parse
from typing import Protocol

from mlcanary.rollout.serving import ServingError

KSERVE_SCHEMES: tuple[str, ...] = ("s3", "gs", "pvc", "http", "https", "hf", "oci")

_ARTIFACT_STORE_HELP = (
    "KServe reads models from object storage, not through MLflow. Run the MLflow server with an "
    "artifact store KServe can read and without the proxy, e.g. `mlflow server --backend-store-uri "
    "postgresql://… --default-artifact-root s3://mlflow --no-serve-artifacts` (and give the model pods "
    "the bucket's credentials: kserve.service_account), or keep the proxy and set "
    "kserve.proxied_artifacts_root to the server's --artifacts-destination (e.g. s3://mlflow)"
)


class StorageError(ServingError):
    """A model version's artifacts are somewhere KServe cannot read; the message says what to change."""


class StorageResolver(Protocol):
    """Turns a registered model version into the ``storageUri`` of its InferenceService."""

    def __call__(self, model: str, version: str) -> str: ...


def storage_uri_for(artifact_uri: str, *, proxied_root: str | None = None, what: str = "the model") -> str:
    """The storage URI KServe reads for ``artifact_uri`` (a version's download URI), or StorageError."""
    uri = artifact_uri.strip()
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "models":
        raise StorageError(
            f"{what}: {uri!r} is an MLflow registry URI; KServe has no models:/ scheme. Resolve the "
            f"version's artifact location first. {_ARTIFACT_STORE_HELP}"
        )
    if scheme in ("mlflow-artifacts", "runs"):
        if scheme == "mlflow-artifacts" and proxied_root:
            return proxied_root.rstrip("/") + "/" + parsed.path.lstrip("/")
        raise StorageError(
            f"{what}: artifacts at {uri!r} are only reachable through MLflow. {_ARTIFACT_STORE_HELP}"
        )
    if scheme in ("", "file"):
        raise StorageError(
            f"{what}: artifacts at {uri!r} are on a local disk the cluster cannot see. "
            f"{_ARTIFACT_STORE_HELP}; or put them on a volume and use pvc://<claim>/<path>"
        )
    if scheme not in KSERVE_SCHEMES:
        raise StorageError(
            f"{what}: KServe cannot read {uri!r} (scheme {scheme}://); supported: "
            + ", ".join(f"{s}://" for s in KSERVE_SCHEMES)
        )
    return uri


class MlflowStorageResolver:
    """Resolves ``(model, version)`` with ``MlflowClient.get_model_version_download_uri``."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None, proxied_root: str | None = None):
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.proxied_root = proxied_root

    def __call__(self, model: str, version: str) -> str:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        try:
            location = client.get_model_version_download_uri(model, str(version))
        except MlflowException as exc:
            raise StorageError(
                f"{model} v{version}: MLflow cannot locate the artifacts: {exc.message}"
            ) from exc
        return storage_uri_for(location, proxied_root=self.proxied_root, what=f"{model} v{version}")
