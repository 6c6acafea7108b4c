"""MLflow versions resolved to storage URIs through the session's real MLflow store (SQLite)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

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


def test_pickle_serialization_leaves_the_one_model_file_kserve_loads(make_settings) -> None:  # type: ignore[no-untyped-def]
    """KServe's sklearn server loads exactly one .pkl/.joblib from the model directory, and a stock
    MLServer has no skops: the kserve profile saves models with pickle."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from mlcanary.data.schema import FeatureSpec
    from mlcanary.registry.mlflow_registry import registry_from_settings
    from mlcanary.registry.protocol import NewVersion

    settings = make_settings(**{"mlflow.serialization": "pickle"})
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0], "hour": [1.0, 5.0, 9.0, 23.0]})
    model = LogisticRegression().fit(frame, [0, 0, 1, 1])
    features = (FeatureSpec("amount", "numeric", "double"), FeatureSpec("hour", "numeric", "double"))
    registry = registry_from_settings(settings)
    info = registry.register(
        settings.model.name,
        NewVersion(
            model, features, frame, frame.head(2), {"roc_auc": 1.0}, {}, {}, "pickled", ("scikit-learn",)
        ),
    )
    source = MlflowClient(tracking_uri=settings.tracking_uri).get_model_version_download_uri(
        settings.model.name, info.version
    )
    files = sorted(p.name for p in Path(urlparse(source).path).iterdir())
    assert [f for f in files if f.endswith((".pkl", ".joblib", ".pickle", ".skops"))] == ["model.pkl"]
    assert registry.load_model(settings.model.name, info.version).model is not None
    with pytest.raises(StorageError, match="local disk"):  # the session's store is local: refused for KServe
        MlflowStorageResolver(settings.tracking_uri)(settings.model.name, info.version)
