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


def kserve_event(kind: str, rid: str, pod: str, body: object) -> tuple[dict[str, str], bytes]:
    """Headers exactly as KServe's logger agent sends them (no mlcanary extensions)."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": rid,
        "ce-type": f"org.kubeflow.serving.inference.{kind}",
        "ce-source": pod,
        "ce-time": "2026-01-01T12:00:00Z",
        "ce-inferenceservicename": "fraud",
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
