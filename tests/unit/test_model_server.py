"""The local model server (ASGI app) against a small real scikit-learn pipeline."""

from __future__ import annotations

import dataclasses
import inspect
import json
import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from mlcanary.data.schema import FeatureSpec, infer_schema
from mlcanary.data.synthetic import FEATURES, TARGET, generate_transactions
from mlcanary.serving.local.arm_servers import STOP_GRACE_S, ArmServers
from mlcanary.serving.local.backend import LocalBackend
from mlcanary.serving.local.model_server import ServedModel, create_app, is_shadow_host
from mlcanary.serving.local.payload_logger import DEFAULT_MAX_BACKOFF_S, DRAIN_ON_STOP_S, UVICORN_GRACEFUL_S
from mlcanary.telemetry.events import CE_TYPE_REQUEST, CE_TYPE_RESPONSE, InferenceEvent
from models.pipeline import build_pipeline

pytestmark = pytest.mark.anyio

MODEL = "fraud"
MAX_BODY = 64 * 1024
MAX_INSTANCES = 50


class MemorySink:
    """EventSink keeping events in a list; records ``close``."""

    def __init__(self) -> None:
        self.events: list[InferenceEvent] = []
        self.closed_with: float | None = None

    def submit(self, event: InferenceEvent) -> bool:
        self.events.append(event)
        return True

    def stats(self) -> dict[str, int]:
        return {"enqueued": len(self.events)}

    def close(self, timeout: float) -> None:
        self.closed_with = timeout


class Fitted:
    def __init__(self) -> None:
        frame = generate_transactions(2_000, seed=11)
        self.features: tuple[FeatureSpec, ...] = infer_schema(frame, FEATURES)
        self.pipeline = build_pipeline(
            "logistic_regression",
            numeric=[s.name for s in self.features if s.kind == "numeric"],
            categorical=[s.name for s in self.features if s.kind == "categorical"],
        )
        self.pipeline.fit(frame[list(FEATURES)], frame[TARGET])
        self.sample = generate_transactions(40, seed=12)[list(FEATURES)]
        self.expected = self.pipeline.predict_proba(self.sample)[:, 1]
        # A threshold inside the sample's range, so both labels occur and the rule is exercised.
        self.threshold = float(np.median(self.expected))

    def records(self, n: int) -> list[dict[str, Any]]:
        return self.sample.head(n).to_dict("records")


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    return Fitted()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def served(fitted: Fitted) -> ServedModel:
    return ServedModel(
        name=MODEL,
        version="7",
        arm="candidate",
        predictor=fitted.pipeline,
        features=fitted.features,
        threshold=fitted.threshold,
    )


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def client(served: ServedModel, sink: MemorySink) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(served, sink=sink, max_body_bytes=MAX_BODY, max_instances=MAX_INSTANCES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model") as c:
        yield c


def v2_payload(fitted: Fitted, n: int, **extra: Any) -> dict[str, Any]:
    datatype = {"double": "FP64", "long": "INT64", "boolean": "BOOL", "string": "BYTES"}
    rows = fitted.sample.head(n)
    inputs = [
        {"name": s.name, "shape": [n], "datatype": datatype[s.dtype], "data": rows[s.name].tolist()}
        for s in fitted.features
    ]
    return {"inputs": inputs, **extra}


# -- predictions ----------------------------------------------------------------------------------


async def test_v1_dict_instances_match_the_pipeline(client: httpx.AsyncClient, fitted: Fitted) -> None:
    response = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": fitted.records(40)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["probabilities"] == pytest.approx(fitted.expected.tolist(), rel=1e-12, abs=1e-15)
    assert body["predictions"] == [int(p >= fitted.threshold) for p in fitted.expected]
    assert set(body["predictions"]) == {0, 1}
    assert (body["model_name"], body["model_version"], body["arm"]) == (MODEL, "7", "candidate")


async def test_v1_list_instances_in_feature_order(client: httpx.AsyncClient, fitted: Fitted) -> None:
    instances = [list(row.values()) for row in fitted.records(5)]
    response = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    assert response.json()["probabilities"] == pytest.approx(
        fitted.expected[:5].tolist(), rel=1e-12, abs=1e-15
    )


async def test_v2_infer_round_trip(client: httpx.AsyncClient, fitted: Fitted) -> None:
    response = await client.post(f"/v2/models/{MODEL}/infer", json=v2_payload(fitted, 6, id="req-42"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL, "7", "req-42")
    # Named as MLServer's MLflow runtime names a model's array output, plus the class probabilities.
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["output-1"]["datatype"] == "INT64"
    assert outputs["output-1"]["shape"] == [6, 1]
    assert outputs["predict_proba"]["datatype"] == "FP64"
    assert outputs["predict_proba"]["shape"] == [6, 2]
    assert outputs["predict_proba"]["data"][1::2] == pytest.approx(
        fitted.expected[:6].tolist(), rel=1e-12, abs=1e-15
    )
    assert outputs["output-1"]["data"] == [int(p >= fitted.threshold) for p in fitted.expected[:6]]

    versioned = await client.post(f"/v2/models/{MODEL}/versions/7/infer", json=v2_payload(fitted, 2))
    assert versioned.status_code == 200
    assert versioned.json()["id"] == versioned.headers["x-request-id"]


async def test_health_status_and_metadata(client: httpx.AsyncClient, fitted: Fitted) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    status = await client.get(f"/v1/models/{MODEL}")
    assert status.json() == {"name": MODEL, "ready": True, "version": "7", "arm": "candidate"}
    assert (await client.get(f"/v2/models/{MODEL}/ready")).json() == {"name": MODEL, "ready": True}
    metadata = (await client.get(f"/v2/models/{MODEL}")).json()
    assert [i["name"] for i in metadata["inputs"]] == list(FEATURES)
    assert metadata["parameters"]["content_type"] == "pd"
    assert metadata["platform"] == "mlflow"
    assert metadata["versions"] == ["7"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/other"),
        ("POST", "/v1/models/other:predict"),
        ("GET", "/v2/models/other"),
        ("GET", "/v2/models/other/ready"),
        ("POST", "/v2/models/other/infer"),
        ("POST", f"/v2/models/{MODEL}/versions/6/infer"),
        ("GET", f"/v2/models/{MODEL}/versions/6"),
    ],
)
async def test_unknown_model_or_version_is_404_json(
    client: httpx.AsyncClient, sink: MemorySink, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"instances": [[1]]})
    assert response.status_code == 404
    assert "not served here" in response.json()["error"]
    assert sink.events == []


async def test_unknown_route_and_wrong_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert "/nope" in missing.json()["error"]
    wrong = await client.get(f"/v2/models/{MODEL}/infer")
    assert wrong.status_code == 405
    assert "error" in wrong.json()


# -- bad input ------------------------------------------------------------------------------------


def _row(fitted: Fitted, **changes: Any) -> dict[str, Any]:
    return {**fitted.records(1)[0], **changes}


BAD_V1: list[tuple[str, Any, int, str]] = [
    ("not json", b"{'instances': }", 400, "not valid JSON"),
    ("empty body", b"", 400, "empty"),
    ("array body", b"[1, 2]", 400, "JSON object"),
    ("no instances", b'{"inputs": []}', 400, '"instances"'),
    ("empty instances", b'{"instances": []}', 400, "empty"),
    ("short list", b'{"instances": [[1.0, 2]]}', 400, "2 values; expected 12"),
    ("unknown", lambda f: {"instances": [_row(f, colour="red")]}, 400, "colour"),
    ("missing", lambda f: {"instances": [{k: v for k, v in _row(f).items() if k != "hour"}]}, 400, "hour"),
    ("string for number", lambda f: {"instances": [_row(f, amount="12")]}, 422, "instances[0].amount"),
    ("number for string", lambda f: {"instances": [_row(f, channel=3)]}, 422, "instances[0].channel"),
    ("bool for number", lambda f: {"instances": [_row(f, amount=True)]}, 422, "boolean"),
    ("fractional long", lambda f: {"instances": [_row(f, hour=3.5)]}, 422, "instances[0].hour"),
    ("null", lambda f: {"instances": [_row(f, customer_age=None)]}, 422, "null"),
    ("too many", lambda f: {"instances": [_row(f)] * (MAX_INSTANCES + 1)}, 413, "limit of 50"),
]


@pytest.mark.parametrize(("case", "body", "status", "fragment"), BAD_V1, ids=[c[0] for c in BAD_V1])
async def test_v1_bad_input_is_4xx_and_the_server_keeps_serving(
    client: httpx.AsyncClient,
    sink: MemorySink,
    fitted: Fitted,
    case: str,
    body: Any,
    status: int,
    fragment: str,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body(fitted)).encode()
    response = await client.post(f"/v1/models/{MODEL}:predict", content=content)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    # A refused request sends only its response event (its body is no payload to store).
    assert [(e.ce_type.rsplit(".", 1)[-1], e.status) for e in sink.events] == [("response", status)]

    ok = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": fitted.records(2)})
    assert ok.status_code == 200


async def test_nan_and_infinity_literals_are_422(client: httpx.AsyncClient, fitted: Fitted) -> None:
    text = json.dumps({"instances": [list(_row(fitted).values())]})
    for literal in ("NaN", "Infinity", "-Infinity"):
        first = json.dumps(_row(fitted)["amount"])
        response = await client.post(f"/v1/models/{MODEL}:predict", content=text.replace(first, literal, 1))
        assert response.status_code == 422, literal
        assert "(amount)" in response.json()["error"]
        assert literal in response.json()["error"]


BAD_V2: list[tuple[str, Any, int, str]] = [
    ("no inputs", lambda p: {"instances": []}, 400, '"inputs"'),
    ("shape mismatch", lambda p: _v2_set(p, 0, shape=[5]), 400, "needs 5"),
    ("unknown input", lambda p: _v2_set(p, 0, name="colour"), 400, "colour"),
    ("missing input", lambda p: {"inputs": p["inputs"][1:]}, 400, "amount"),
    ("wrong datatype", lambda p: _v2_set(p, 0, datatype="BYTES"), 422, "does not fit"),
    ("string in FP64", lambda p: _v2_set(p, 0, data=["1", "2"]), 422, "inputs[0] (amount).data[0]"),
    ("too many rows", lambda p: _v2_set(p, 0, shape=[MAX_INSTANCES + 1]), 413, "limit of 50"),
]


def _v2_set(payload: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    inputs = [dict(i) for i in payload["inputs"]]
    inputs[index].update(changes)
    return {"inputs": inputs}


@pytest.mark.parametrize(("case", "mutate", "status", "fragment"), BAD_V2, ids=[c[0] for c in BAD_V2])
async def test_v2_bad_input_is_4xx_and_the_server_keeps_serving(
    client: httpx.AsyncClient, fitted: Fitted, case: str, mutate: Any, status: int, fragment: str
) -> None:
    response = await client.post(f"/v2/models/{MODEL}/infer", json=mutate(v2_payload(fitted, 2)))
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    ok = await client.post(f"/v2/models/{MODEL}/infer", json=v2_payload(fitted, 2))
    assert ok.status_code == 200


async def test_body_over_the_limit_is_413_by_content_length(
    client: httpx.AsyncClient, sink: MemorySink
) -> None:
    response = await client.post(f"/v1/models/{MODEL}:predict", content=b" " * (MAX_BODY + 1))
    assert response.status_code == 413
    assert str(MAX_BODY) in response.json()["error"]
    assert [(e.ce_type.rsplit(".", 1)[-1], e.status) for e in sink.events] == [("response", 413)]


async def test_body_over_the_limit_is_413_when_streamed_without_length(
    client: httpx.AsyncClient, fitted: Fitted
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    request = client.build_request("POST", f"/v1/models/{MODEL}:predict", content=chunks())
    assert "content-length" not in request.headers
    response = await client.send(request)
    assert response.status_code == 413
    ok = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": fitted.records(1)})
    assert ok.status_code == 200


async def test_invalid_content_length_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{MODEL}:predict", content=b"{}", headers={"content-length": "two"}
    )
    assert response.status_code == 400


# -- model failures --------------------------------------------------------------------------------


class Exploding:
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        raise RuntimeError("weights are corrupt")


class WrongShape:
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.zeros((len(frame), 3))


@pytest.mark.parametrize(
    ("predictor", "fragment"), [(Exploding(), "weights are corrupt"), (WrongShape(), "shape")]
)
async def test_predictor_failure_is_500_json_and_logged(
    fitted: Fitted, predictor: Any, fragment: str
) -> None:
    sink = MemorySink()
    served = ServedModel(MODEL, "7", "candidate", predictor, fitted.features)
    app = create_app(served, sink=sink)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model") as client:
        response = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": fitted.records(2)})
        assert response.status_code == 500
        assert fragment in response.json()["error"]
        assert [e.status for e in sink.events] == [None, 500]
        # The request event carries the body as received (a failure must not empty it: the
        # collector would refuse the event and the row would lose its features).
        assert json.loads(sink.events[0].body) == {"instances": fitted.records(2)}
        assert (await client.get("/v2/health/live")).status_code == 200


# -- request ids, headers and events ----------------------------------------------------------------


async def test_request_id_is_echoed_and_joins_the_events(
    client: httpx.AsyncClient, sink: MemorySink, fitted: Fitted
) -> None:
    response = await client.post(
        f"/v1/models/{MODEL}:predict",
        json={"instances": fitted.records(3)},
        headers={"x-request-id": "envoy-req-1"},
    )
    assert response.headers["x-request-id"] == "envoy-req-1"
    assert response.headers["x-mlcanary-server-arm"] == "candidate"
    assert float(response.headers["x-mlcanary-latency-ms"]) >= 0.0

    request_event, response_event = sink.events
    assert (request_event.ce_id, response_event.ce_id) == ("envoy-req-1", "envoy-req-1")
    assert (request_event.ce_type, response_event.ce_type) == (CE_TYPE_REQUEST, CE_TYPE_RESPONSE)
    assert json.loads(request_event.body) == {"instances": json.loads(json.dumps(fitted.records(3)))}
    assert response_event.body == response.content
    for event in (request_event, response_event):
        assert (event.model, event.arm, event.version) == (MODEL, "candidate", "7")
        assert event.source == f"mlcanary/local/{MODEL}/candidate/v7"
        assert event.headers["ce-namespace"] == "local"
        assert event.headers["ce-component"] == "predictor"
    assert (request_event.status, request_event.latency_ms) == (None, None)
    assert response_event.status == 200
    assert response_event.latency_ms == pytest.approx(
        float(response.headers["x-mlcanary-latency-ms"]), abs=1e-3
    )
    assert request_event.time <= response_event.time


async def test_request_id_is_generated_when_absent_or_unusable(
    client: httpx.AsyncClient, sink: MemorySink, fitted: Fitted
) -> None:
    for headers in ({}, {"x-request-id": "x" * 500}):
        response = await client.post(f"/v2/models/{MODEL}/infer", json=v2_payload(fitted, 1), headers=headers)
        generated = response.headers["x-request-id"]
        assert uuid.UUID(generated).version == 4
        assert response.json()["id"] == generated
        assert sink.events[-1].ce_id == sink.events[-2].ce_id == generated


async def test_a_failing_sink_does_not_fail_inference(served: ServedModel, fitted: Fitted) -> None:
    class Broken:
        def submit(self, event: InferenceEvent) -> bool:
            raise OSError("disk full")

    app = create_app(served, sink=Broken())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model") as client:
        response = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": fitted.records(1)})
    assert response.status_code == 200


async def test_payload_logger_metrics_endpoint(served: ServedModel, client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics/payload-logger")).json() == {"enabled": True, "enqueued": 0}
    app = create_app(served)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model") as bare:
        assert (await bare.get("/metrics/payload-logger")).json() == {"enabled": False}
        assert (await bare.post(f"/v1/models/{MODEL}:predict", content=b"{}")).status_code == 400


async def test_lifespan_warms_up_and_shutdown_closes_the_sink(served: ServedModel) -> None:
    calls: list[int] = []

    class Counting:
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            calls.append(len(frame))
            return served.predictor.predict_proba(frame)

    sink = MemorySink()
    app = create_app(dataclasses.replace(served, predictor=Counting()), sink=sink, shutdown_timeout=2.5)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sink.closed_with == 2.5
    assert calls == [1], "one warm-up prediction on start-up"
    assert sink.events == [], "the start-up warm-up prediction is not an inference event"


async def test_a_stopping_server_delivers_its_queued_events_before_it_is_killed(served: ServedModel) -> None:
    """A rollback stops the candidate's server while the collector may be behind (the soak found
    events dropped after the old 5-s drain): by default the sink gets the logger's retry span, and
    the process's stop grace covers uvicorn's graceful shutdown and that drain."""
    sink = MemorySink()
    app = create_app(served, sink=sink)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sink.closed_with == DRAIN_ON_STOP_S >= DEFAULT_MAX_BACKOFF_S * 10
    assert STOP_GRACE_S > UVICORN_GRACEFUL_S + DRAIN_ON_STOP_S
    for stopper in (ArmServers, LocalBackend):
        assert inspect.signature(stopper).parameters["stop_grace_s"].default == STOP_GRACE_S


def test_served_model_validates_its_fields(fitted: Fitted) -> None:
    with pytest.raises(ValueError, match="threshold"):
        ServedModel(MODEL, "1", "champion", fitted.pipeline, fitted.features, threshold=1.5)
    with pytest.raises(ValueError, match="duplicate"):
        ServedModel(MODEL, "1", "champion", fitted.pipeline, (fitted.features[0], fitted.features[0]))
    with pytest.raises(ValueError, match="version"):
        ServedModel(MODEL, "", "champion", fitted.pipeline, fitted.features)


async def test_client_disconnect_is_logged_as_499_not_5xx(served: ServedModel) -> None:
    sink = MemorySink()
    app = create_app(served, sink=sink)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/v1/models/{MODEL}:predict",
        "raw_path": f"/v1/models/{MODEL}:predict".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"model"), (b"x-request-id", b"gone-1")],
        "server": ("model", 80),
        "client": ("127.0.0.1", 5000),
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert [(e.ce_id, e.status) for e in sink.events] == [("gone-1", 499)]


async def test_a_mirrored_request_is_answered_and_logged_as_shadow(
    client: httpx.AsyncClient, sink: MemorySink, fitted: Fitted
) -> None:
    # Envoy (and Istio) append "-shadow" to the host of the copy it mirrors, before the port.
    live = await client.post(
        f"/v1/models/{MODEL}:predict", json={"instances": fitted.records(1)}, headers={"host": "door:8080"}
    )
    mirrored = await client.post(
        f"/v1/models/{MODEL}:predict",
        json={"instances": fitted.records(1)},
        headers={"host": "door-shadow:8080", "x-request-id": "live-1"},
    )
    assert live.status_code == mirrored.status_code == 200
    assert mirrored.json()["predictions"] == live.json()["predictions"]
    assert [e.shadow for e in sink.events] == [False, False, True, True]
    assert {e.ce_id for e in sink.events[2:]} == {"live-1"}


@pytest.mark.parametrize(
    ("host", "shadow"),
    [
        ("door-shadow:8080", True),
        ("127.0.0.1-shadow:8082", True),
        ("model.example.com-shadow", True),
        ("[::1]-shadow:80", True),
        ("door:8080", False),
        ("shadow:8080", False),
        ("[::1]:80", False),
        ("", False),
    ],
)
def test_shadow_hosts(host: str, shadow: bool) -> None:
    assert is_shadow_host(host) is shadow
