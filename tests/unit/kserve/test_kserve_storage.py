"""MLflow versions resolved to storage URIs through the session's real MLflow store (SQLite)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mlcanary.serving.kserve.storage import MlflowStorageResolver, StorageError


def test_versions_resolve_to_their_artifact_location_or_are_refused(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    name = settings.model.name
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    client.create_registered_model(name)
    on_s3 = client.create_model_version(name, source="s3://mlflow/1/models/m-1/artifacts")
    local = client.create_model_version(
        name, source=(settings.state_dir / "mlruns" / "1" / "model").resolve().as_uri()
    )
    resolve = MlflowStorageResolver(settings.tracking_uri)
    assert resolve(name, on_s3.version) == "s3://mlflow/1/models/m-1/artifacts"
    with pytest.raises(StorageError, match="local disk the cluster cannot see"):
        resolve(name, local.version)
    with pytest.raises(StorageError, match="cannot locate"):
        resolve(name, "99")
