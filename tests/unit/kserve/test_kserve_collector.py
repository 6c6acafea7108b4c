"""The collector in a cluster: KServe's logger events name the pod, not the arm; the pod's revision
is mapped to its version and arm through the InferenceService on the fake API server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from fake_kube.server import FakeKubeApi

from mlcanary.serving.kserve.arms import ArmResolver
from mlcanary.serving.kserve.backend import KServeBackend
from mlcanary.telemetry.collector import create_collector_app
from mlcanary.telemetry.store import InferenceLogStore


def kserve_event(
    kind: str, rid: str, pod: str, body: object, isvc: str = "fraud"
) -> tuple[dict[str, str], bytes]:
    """Headers exactly as KServe's logger agent sends them (no mlcanary extensions)."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": rid,
        "ce-type": f"org.kubeflow.serving.inference.{kind}",
        "ce-source": pod,
        "ce-time": "2026-01-01T12:00:00Z",
        "ce-inferenceservicename": isvc,
        "ce-namespace": "mlcanary",
        "ce-component": "predictor",
        "content-type": "application/json",
    }
    return headers, json.dumps(body).encode()


def test_logger_events_are_attributed_to_arms_and_versions(
    api: FakeKubeApi, backend: KServeBackend, tmp_path: Path
) -> None:
    backend.deploy("fraud", "1", "2", 20)
    pods = {
        "champion": "fraud-predictor-00001-deployment-7c9d8b5f4-abcde",
        "candidate": "fraud-predictor-00002-deployment-5d8f9c7b6-x7k2q",
    }
    with InferenceLogStore(f"sqlite:///{tmp_path / 'inference.db'}") as store:
        app = create_collector_app(store, resolve_arm=ArmResolver(backend, ttl_s=60))

        async def send() -> list[int]:
            codes = []
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
                for arm, pod in pods.items():
                    for n in range(3):
                        rid = f"{arm}-{n}"
                        for kind, body in (
                            (
                                "request",
                                {
                                    "inputs": [
                                        {"name": "amount", "shape": [1], "datatype": "FP64", "data": [9.5]}
                                    ]
                                },
                            ),
                            (
                                "response",
                                {
                                    "outputs": [
                                        {"name": "predict", "shape": [1], "datatype": "INT64", "data": [1]}
                                    ]
                                },
                            ),
                        ):
                            headers, content = kserve_event(kind, rid, pod, body)
                            codes.append(
                                (await client.post("/events", headers=headers, content=content)).status_code
                            )
            return codes

        reads_before = len(api.calls("GET", "inferenceservices/fraud"))
        assert set(asyncio.run(send())) == {200}
        rows = store.fetch("fraud", None)
    by_arm = {(row.arm, row.version) for row in rows.itertuples()}
    assert by_arm == {("champion", "1"), ("candidate", "2")}
    assert len(rows) == 6
    # Cached per pod: a busy collector does not read the API for every event.
    assert len(api.calls("GET", "inferenceservices/fraud")) - reads_before <= 2 * 2


def test_a_mirrored_copy_pairs_with_the_original_through_istios_request_id(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """KServe's logger gives each pod's events its own ``ce-id``; the ``X-Request-Id`` it passes on
    in ``ce-metadata`` (``metadataHeaders``) is the same on a copy and its original."""
    from datetime import UTC, datetime

    from mlcanary.serving.kserve.knative import isvc_ref
    from mlcanary.telemetry.shadow import fetch_pairs

    standard = make(deployment_mode="Standard")
    standard.deploy("fraud", "1", "2", 0)
    standard.set_shadow("fraud", 1.0)
    candidate = standard.standard.api.get(isvc_ref("fraud-canary", standard.settings.namespace))
    assert candidate is not None
    assert candidate["spec"]["predictor"]["logger"]["metadataHeaders"] == ["X-Request-Id"]

    pods = {  # pod: (its InferenceService, the ce-id its logger made up, the label it answers)
        "fraud-predictor-7c9d8b5f4-abcde": ("fraud", "0b1e-champion-uuid", 0),
        "fraud-canary-predictor-5d8f9c7b6-x7k2q": ("fraud-canary", "77aa-candidate-uuid", 1),
    }
    request = {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [9.5]}]}
    with InferenceLogStore(f"sqlite:///{tmp_path / 'inference.db'}") as store:
        app = create_collector_app(store, resolve_arm=ArmResolver(standard, ttl_s=60))

        async def send() -> list[int]:
            codes = []
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
                for pod, (isvc, ce_id, label) in pods.items():
                    answer = {
                        "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [label]}]
                    }
                    for kind, body in (("request", request), ("response", answer)):
                        headers, content = kserve_event(kind, ce_id, pod, body, isvc)
                        headers["ce-metadata"] = json.dumps({"X-Request-Id": ["req-7"]})
                        codes.append(
                            (await client.post("/events", headers=headers, content=content)).status_code
                        )
            return codes

        assert set(asyncio.run(send())) == {200}
        pairs = fetch_pairs(
            store,
            "fraud",
            datetime(2000, 1, 1, tzinfo=UTC),  # the window is in receive time
            datetime(2100, 1, 1, tzinfo=UTC),
            champion_version="1",
            candidate_version="2",
        )
    assert list(pairs["request_id"]) == ["req-7"]
    assert (pairs["champion_prediction"].iloc[0], pairs["candidate_prediction"].iloc[0]) == (0, 1)


def test_metadata_request_id_is_read_leniently() -> None:
    from mlcanary.telemetry.events import metadata_request_id

    assert metadata_request_id('{"X-Request-Id": ["abc"]}') == "abc"
    assert metadata_request_id('{"x-request-id": "abc"}') == "abc"
    assert metadata_request_id('{"Other": ["x"]}') is None
    assert metadata_request_id("not json") is None
    assert metadata_request_id('["X-Request-Id"]') is None
    assert metadata_request_id('{"X-Request-Id": []}') is None
    assert metadata_request_id(None) is None
