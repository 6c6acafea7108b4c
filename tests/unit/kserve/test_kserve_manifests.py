"""Everything the KServe backend renders validates against the real CRD schemas (strictly: an unknown
field is an error), and the pure helpers mean what they say."""

from __future__ import annotations

import pytest
from fake_kube import schemas
from fake_kube.server import merge_patch

from mlcanary.config import KServeSettings
from mlcanary.serving.kserve.manifests import (
    ModelChange,
    inference_service,
    model_change_patch,
    traffic_patch,
    virtual_service,
    virtual_service_weights,
)
from mlcanary.serving.kserve.objects import (
    DeploymentMode,
    extend_history,
    mode_of,
    parse_mode,
    read_history,
    version_of_revision,
    write_history,
)
from mlcanary.serving.kserve.storage import StorageError, storage_uri_for

CHANGE = ModelChange(
    "fraud", "2", "s3://mlflow/1/models/m-abc/artifacts", "1", [(1, "1"), (2, "2")], "s3://x/1", True
)


@pytest.mark.parametrize("runtime", ["mlflow", "sklearn"])
@pytest.mark.parametrize("mode", list(DeploymentMode))
@pytest.mark.parametrize("serve_as", [None, "fraud"])
def test_rendered_inference_services_validate(
    runtime: str, mode: DeploymentMode, serve_as: str | None
) -> None:
    settings = KServeSettings(runtime=runtime)  # type: ignore[arg-type]
    obj = inference_service(
        "fraud", CHANGE, settings, mode=mode, canary_percent=20, arm="candidate", serve_as=serve_as
    )
    assert schemas.errors(obj) == []
    model = obj["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == ("v2" if runtime == "mlflow" else "v1")
    assert model["runtime"] == ("kserve-mlserver" if runtime == "mlflow" else "kserve-sklearnserver")
    assert obj["spec"]["predictor"]["logger"] == {
        "mode": "all",
        "url": "http://mlcanary-collector.mlcanary.svc.cluster.local/events",
        "metadataHeaders": ["X-Request-Id"],  # pairs a mirrored copy with its original
    }
    # Every patch applied to it still validates.
    for patch in (
        model_change_patch(CHANGE, settings, resource_version="7", canary_percent=0, serve_as=serve_as),
        model_change_patch(CHANGE, settings, resource_version="7", canary_percent=None),
        traffic_patch(50, resource_version="8"),
        traffic_patch(None, resource_version="8"),
    ):
        assert schemas.errors(merge_patch(obj, patch)) == []


def test_the_validator_is_strict_enough_to_catch_mistakes() -> None:
    obj = inference_service("fraud", CHANGE, KServeSettings(), mode=DeploymentMode.KNATIVE)
    obj["spec"]["predictor"]["canaryTrafficPercentage"] = 20  # a typo the API server would prune silently
    obj["spec"]["predictor"]["logger"]["mode"] = "everything"
    found = " ".join(schemas.errors(obj))
    assert "canaryTrafficPercentage" in found
    assert "everything" in found


def test_our_virtual_service_validates_and_reads_back_its_weights() -> None:
    settings = KServeSettings()
    vs = virtual_service("fraud", "fraud", "fraud-canary", 20, settings, resource_version="3")
    assert schemas.errors(vs) == []
    assert virtual_service_weights(vs, settings) == {"champion": 80, "candidate": 20}
    alone = virtual_service("fraud", "fraud", None, 0, settings)
    assert schemas.errors(alone) == []
    assert virtual_service_weights(alone, settings) == {"champion": 100, "candidate": 0}


@pytest.mark.parametrize(
    ("spelling", "mode"),
    [
        ("Knative", DeploymentMode.KNATIVE),
        ("Serverless", DeploymentMode.KNATIVE),
        ("serverless", DeploymentMode.KNATIVE),
        ("Standard", DeploymentMode.STANDARD),
        ("RawDeployment", DeploymentMode.STANDARD),
    ],
)
def test_both_spellings_of_the_mode(spelling: str, mode: DeploymentMode) -> None:
    assert parse_mode(spelling) is mode
    annotated = {"metadata": {"annotations": {"serving.kserve.io/deploymentMode": spelling}}}
    assert (
        mode_of(
            annotated, DeploymentMode.KNATIVE if mode is DeploymentMode.STANDARD else DeploymentMode.STANDARD
        )
        is mode
    )
    from_status = {"metadata": {}, "status": {"deploymentMode": spelling}}
    assert mode_of(from_status, DeploymentMode.KNATIVE) is mode


def test_unknown_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="ModelMesh"):
        parse_mode("ModelMesh")


def test_revision_history() -> None:
    history = extend_history([], None, "1")
    assert history == [(1, "1")]
    history = extend_history(history, "fraud-predictor-00001", "2")
    history = extend_history(history, "fraud-predictor-00002", "1")  # a rollback restores v1
    assert [version_of_revision(history, f"fraud-predictor-0000{n}") for n in (1, 2, 3, 4)] == [
        "1",
        "2",
        "1",
        "1",
    ]
    assert version_of_revision(history, "no-number") is None
    assert read_history({"mlcanary.io/revisions": write_history(history)}) == history
    assert read_history({"mlcanary.io/revisions": "not json"}) == []


@pytest.mark.parametrize(
    "uri",
    [
        "s3://mlflow/1/models/m-1/artifacts",
        "gs://b/p",
        "pvc://models/fraud/2",
        "https://host/model.tar.gz",
        "hf://org/m",
    ],
)
def test_storage_uris_kserve_reads_pass_through(uri: str) -> None:
    assert storage_uri_for(uri) == uri


@pytest.mark.parametrize(
    ("uri", "hint"),
    [
        ("models:/fraud/2", "no models:/ scheme"),
        ("models:/m-0123456789", "no models:/ scheme"),
        ("mlflow-artifacts:/1/models/m-1/artifacts", "--no-serve-artifacts"),
        ("runs:/abc/model", "only reachable through MLflow"),
        ("file:///home/me/mlruns/1/abc/artifacts", "pvc://"),
        ("/home/me/mlruns/1", "local disk"),
        ("ftp://host/model", "supported: s3://"),
    ],
)
def test_storage_uris_kserve_cannot_read_are_refused_with_guidance(uri: str, hint: str) -> None:
    with pytest.raises(StorageError) as caught:
        storage_uri_for(uri)
    assert hint in str(caught.value)


def test_proxied_artifacts_resolve_through_the_configured_destination() -> None:
    assert (
        storage_uri_for("mlflow-artifacts:/1/models/m-1/artifacts", proxied_root="s3://mlflow/")
        == "s3://mlflow/1/models/m-1/artifacts"
    )
    assert (
        storage_uri_for("mlflow-artifacts://mlflow:5000/1/abc/artifacts/model", proxied_root="s3://mlflow")
        == "s3://mlflow/1/abc/artifacts/model"
    )
