"""Standard mode (RawDeployment): KServe ignores canaryTrafficPercent there, so the backend runs two
InferenceServices and routes them with its own Istio VirtualService — on the fake API server."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube.controller import FakeKServe
from fake_kube.server import FakeKubeApi
from fake_kube.world import storage_uri

from mlcanary.rollout.serving import ServingError
from mlcanary.serving.kserve.backend import KServeBackend
from mlcanary.serving.kserve.objects import MODE_ANNOTATION

VS = ("networking.istio.io", "virtualservices", "mlcanary", "fraud-mlcanary")


def obj(api: FakeKubeApi, plural: str, name: str) -> dict[str, Any] | None:
    group = {"inferenceservices": "serving.kserve.io", "deployments": "apps"}[plural]
    return api.store.get((group, plural, "mlcanary", name))


def split(api: FakeKubeApi) -> list[tuple[str, int]]:
    vs = api.store.get(VS)
    assert vs is not None
    route = next(r for r in vs["spec"]["http"] if r["name"] == "split")
    return [(d["destination"]["host"], d.get("weight", 100)) for d in route["route"]]


@pytest.fixture
def standard(make) -> KServeBackend:  # type: ignore[no-untyped-def]
    return make(deployment_mode="RawDeployment")  # the old spelling, on purpose


def test_canary_runs_as_two_inference_services_and_our_virtual_service(
    api: FakeKubeApi, standard: KServeBackend
) -> None:
    status = standard.deploy("fraud", "1", "2", 20)
    assert status.traffic == {"champion": 80, "candidate": 20}
    assert status.arms["candidate"].version == "2"
    champion, candidate = (
        obj(api, "inferenceservices", "fraud"),
        obj(api, "inferenceservices", "fraud-canary"),
    )
    assert champion is not None
    assert candidate is not None
    assert champion["metadata"]["annotations"][MODE_ANNOTATION] == "Standard"
    assert "canaryTrafficPercent" not in champion["spec"]["predictor"]  # it would be silently ignored
    # The candidate answers under the public model name, so one URL reaches both arms.
    assert candidate["spec"]["predictor"]["model"]["env"] == [
        {"name": "MLSERVER_MODEL_NAME", "value": "fraud"}
    ]
    assert split(api) == [
        ("fraud-predictor.mlcanary.svc.cluster.local", 80),
        ("fraud-canary-predictor.mlcanary.svc.cluster.local", 20),
    ]
    vs = api.store.get(VS)
    assert vs is not None
    forced = {
        r["name"]: r["match"][0]["headers"]["x-mlcanary-arm"]["exact"]
        for r in vs["spec"]["http"]
        if "match" in r
    }
    assert forced == {"force-champion": "champion", "force-candidate": "candidate"}
    assert vs["spec"]["hosts"] == ["fraud.mlcanary.example.com"]


def test_step_promote_rolls_the_champion_and_retires_the_candidate(
    api: FakeKubeApi, standard: KServeBackend
) -> None:
    standard.deploy("fraud", "1", "2", 20)
    assert standard.set_traffic("fraud", 50).traffic == {"champion": 50, "candidate": 50}
    promoted = standard.promote("fraud")
    assert promoted.traffic == {"champion": 100, "candidate": 0}
    assert promoted.arms["champion"].version == "2"
    assert obj(api, "inferenceservices", "fraud-canary") is None
    deployment = obj(api, "deployments", "fraud-predictor")
    assert deployment is not None
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["internal.serving.kserve.io/storage-initializer-sourceuri"] == storage_uri(
        "fraud", "2"
    )
    assert split(api) == [("fraud-predictor.mlcanary.svc.cluster.local", 100)]
    # While the champion rolled, the candidate carried everything.
    weights = [
        [d.get("weight") for d in next(r for r in e.obj["spec"]["http"] if r["name"] == "split")["route"]]
        for e in api.store.events
        if e.key == VS
    ]
    assert [0, 100] in weights
    assert standard.promote("fraud").arms["champion"].version == "2"  # idempotent


def test_rollback_moves_traffic_first_then_deletes_the_candidate(
    api: FakeKubeApi, standard: KServeBackend
) -> None:
    standard.deploy("fraud", "1", "2", 50)
    status = standard.rollback("fraud")
    assert status.traffic == {"champion": 100, "candidate": 0}
    assert obj(api, "inferenceservices", "fraud-canary") is None
    writes = [(r.method, r.path.rsplit("/", 1)[-1]) for r in api.requests if r.method in ("PATCH", "DELETE")]
    assert writes[-2:] == [("PATCH", "fraud-mlcanary"), ("DELETE", "fraud-canary")]
    assert standard.rollback("fraud").traffic == {"champion": 100, "candidate": 0}


def test_a_broken_candidate_gets_no_weight_and_says_why(
    api: FakeKubeApi, kserve: FakeKServe, standard: KServeBackend
) -> None:
    kserve.break_model(storage_uri("fraud", "2"), "failed to load model: missing MLmodel")
    status = standard.deploy("fraud", "1", "2", 20)
    assert status.traffic == {"champion": 100, "candidate": 0}
    assert not status.arms["candidate"].ready
    assert "missing MLmodel" in (status.detail or "")
    with pytest.raises(ServingError, match="not ready"):
        standard.set_traffic("fraud", 20)


def test_a_cluster_defaulting_to_standard_is_detected_from_the_status(
    api: FakeKubeApi, kserve: FakeKServe, make
) -> None:  # type: ignore[no-untyped-def]
    """An InferenceService without the annotation runs in the cluster's default mode, which KServe
    reports in status.deploymentMode: the canary must not be a silent no-op there."""
    kserve.default_mode = "Standard"
    knative_config = make()  # configured for Knative, but the cluster says otherwise
    api.store.create(
        ("serving.kserve.io", "inferenceservices", "mlcanary", "fraud"),
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "fraud", "annotations": {"mlcanary.io/version": "1"}},
            "spec": {
                "predictor": {
                    "model": {"modelFormat": {"name": "mlflow"}, "storageUri": storage_uri("fraud", "1")}
                }
            },
        },
    )
    import time

    deadline = time.monotonic() + 5
    while "status" not in (obj(api, "inferenceservices", "fraud") or {}) and time.monotonic() < deadline:
        time.sleep(0.02)
    status = knative_config.deploy("fraud", "1", "2", 20)
    assert status.traffic == {"champion": 80, "candidate": 20}
    assert obj(api, "inferenceservices", "fraud-canary") is not None
    assert "canaryTrafficPercent" not in (obj(api, "inferenceservices", "fraud") or {})["spec"]["predictor"]


def test_workloads_and_pods_of_both_arms(api: FakeKubeApi, standard: KServeBackend) -> None:
    standard.deploy("fraud", "1", "2", 20)
    assert standard.workloads("fraud") == {
        "champion": ["fraud-predictor"],
        "candidate": ["fraud-canary-predictor"],
    }
    # Our VirtualService routes to each predictor's Service, named as its Deployment.
    assert standard.services("fraud") == standard.workloads("fraud")
    assert standard.arm_of_pod("fraud-canary", "fraud-canary-predictor-6c8d9-abcde") == (
        "fraud",
        "candidate",
        "2",
    )
    assert standard.arm_of_pod("fraud", "fraud-predictor-7f9c8-zyxwv") == ("fraud", "champion", "1")


def test_shadow_mirrors_the_split_route_to_the_candidate(api: FakeKubeApi, standard: KServeBackend) -> None:
    from fake_kube import schemas

    standard.deploy("fraud", "1", "2", 0)
    status = standard.set_shadow("fraud", 0.25)
    assert status.traffic == {"champion": 100, "candidate": 0}
    assert status.shadow == 0.25
    vs = api.store.get(VS)
    assert vs is not None
    route = next(r for r in vs["spec"]["http"] if r["name"] == "split")
    assert route["mirror"] == {
        "host": "fraud-canary-predictor.mlcanary.svc.cluster.local",
        "port": {"number": 80},
    }
    assert route["mirrorPercentage"] == {"value": 25.0}
    assert schemas.errors(vs) == []  # Istio's own CRD schema accepts it (the fake server checked too)
    # Forced routes never mirror; any weight change ends the mirroring.
    assert all("mirror" not in r for r in vs["spec"]["http"] if r["name"] != "split")
    stepped = standard.set_traffic("fraud", 20)
    assert (stepped.traffic, stepped.shadow) == ({"champion": 80, "candidate": 20}, 0.0)
    standard.set_shadow("fraud", 1.0)
    assert standard.rollback("fraud").shadow == 0.0


def test_shadow_refuses_a_missing_candidate(standard: KServeBackend) -> None:
    standard.deploy("fraud", "1")
    with pytest.raises(ServingError, match="no candidate"):
        standard.set_shadow("fraud", 0.5)


def test_knative_mode_says_the_shadow_needs_standard_mode(make) -> None:  # type: ignore[no-untyped-def]
    knative = make()
    knative.deploy("fraud", "1", "2", 0)
    with pytest.raises(ServingError, match="Standard"):
        knative.set_shadow("fraud", 0.5)
    with pytest.raises(ServingError, match="shadow share"):
        knative.set_shadow("fraud", 1.5)


def test_the_collector_files_a_mirrored_only_candidate_as_shadow(standard: KServeBackend) -> None:
    from datetime import UTC, datetime

    from mlcanary.serving.kserve.arms import ArmResolver
    from mlcanary.telemetry.events import CE_TYPE_REQUEST, InferenceEvent

    clock = [0.0]
    resolver = ArmResolver(standard, ttl_s=5.0, clock=lambda: clock[0])

    def logged(isvc: str) -> InferenceEvent:
        event = InferenceEvent(
            ce_id="r1",
            ce_type=CE_TYPE_REQUEST,
            source=f"{isvc}-predictor-7c9d8b5f4-abcde",
            time=datetime(2026, 1, 1, tzinfo=UTC),
            model=isvc,
        )
        return resolver(event)

    standard.deploy("fraud", "1", "2", 0)
    standard.set_shadow("fraud", 0.5)
    mirrored = logged("fraud-canary")
    assert (mirrored.model, mirrored.arm, mirrored.version, mirrored.shadow) == (
        "fraud",
        "candidate",
        "2",
        True,
    )
    assert logged("fraud").shadow is False  # the champion answers users
    standard.set_traffic("fraud", 20)
    assert logged("fraud-canary").shadow is True  # cached for ttl_s
    clock[0] = 10.0
    assert logged("fraud-canary").shadow is False  # a canary: its answers reach users


def test_leaving_the_shadow_pauses_with_no_mirror_and_no_weight(api: FakeKubeApi, make) -> None:  # type: ignore[no-untyped-def]
    """The collector tells a copy from a live answer by the route, cached ``arm_cache_s``: the step
    out of the shadow first stops the mirror with 0 % on the candidate and waits that long."""
    standard = make(deployment_mode="Standard", arm_cache_s=5.0)
    seen: list[tuple[float, list[tuple[str, int]], bool]] = []

    def sleep(seconds: float) -> None:
        vs = api.store.get(VS)
        assert vs is not None
        route = next(r for r in vs["spec"]["http"] if r["name"] == "split")
        seen.append((seconds, split(api), "mirror" in route))

    standard.standard.sleep = sleep
    standard.deploy("fraud", "1", "2", 0)
    standard.set_shadow("fraud", 0.5)
    assert standard.set_traffic("fraud", 20).traffic == {"champion": 80, "candidate": 20}
    assert seen == [
        (
            6.0,
            [
                ("fraud-predictor.mlcanary.svc.cluster.local", 100),
                ("fraud-canary-predictor.mlcanary.svc.cluster.local", 0),
            ],
            False,
        )
    ]
    standard.set_traffic("fraud", 50)  # a canary step: no mirror to leave, no pause
    assert len(seen) == 1
