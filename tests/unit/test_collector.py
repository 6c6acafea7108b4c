"""The CloudEvents collector over HTTP (Starlette test client) on a real SQLite store, and its parsing."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette

from mlcanary.telemetry.aggregate import aggregate
from mlcanary.telemetry.cloudevents_ingest import (
    MalformedEvent,
    Prediction,
    parse_request_payload,
    parse_response_payload,
)
from mlcanary.telemetry.collector import create_collector_app
from mlcanary.telemetry.store import InferenceLogStore

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class TestClient:
    """A synchronous httpx client over the ASGI app (no network, no lifespan needed)."""

    __test__ = False

    def __init__(self, app: Starlette) -> None:
        self._portal_context = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_context.__enter__()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://collector")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._portal.call(self._client.aclose)
        self._portal_context.__exit__(None, None, None)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InferenceLogStore]:
    with InferenceLogStore(f"sqlite:///{tmp_path / 'inference.db'}") as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(store: InferenceLogStore, clock: FakeClock) -> Iterator[TestClient]:
    app = create_collector_app(store, pairing_timeout_s=30.0, max_body_bytes=4096, clock=clock)
    test_client = TestClient(app)
    try:
        yield test_client
    finally:
        test_client.close()


def headers(
    kind: str,
    rid: str,
    *,
    arm: str | None = "candidate",
    version: str | None = "7",
    latency: float | None = 8.25,
    status: int | None = 200,
    model: str = "fraud",
) -> dict[str, str]:
    result = {
        "Ce-Specversion": "1.0",
        "CE-ID": rid,
        "ce-type": REQUEST if kind == "request" else RESPONSE,
        "ce-source": f"mlcanary/local/{model}/{arm}/v{version}",
        "ce-time": "2025-03-01T11:59:59.5Z",
        "ce-inferenceservicename": model,
        "ce-namespace": "local",
        "ce-component": "predictor",
        "ce-endpoint": "v1",
        "content-type": "application/json",
    }
    if arm is not None:
        result["ce-mlcanaryarm"] = arm
    if version is not None:
        result["ce-mlcanaryversion"] = version
    if kind == "response":
        if latency is not None:
            result["ce-mlcanarylatencyms"] = str(latency)
        if status is not None:
            result["ce-mlcanarystatus"] = str(status)
    return result


def post(client: TestClient, kind: str, rid: str, body: Any, **kwargs: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/events", content=content, headers=headers(kind, rid, **kwargs))


V1_REQUEST = {"instances": [{"amount": 12.5, "country": "NL"}]}
V1_RESPONSE = {"predictions": [1], "probabilities": [0.83]}


@pytest.mark.parametrize("response_first", [False, True])
def test_pair_in_either_order(
    client: TestClient, store: InferenceLogStore, clock: FakeClock, response_first: bool
) -> None:
    halves = [("request", V1_REQUEST), ("response", V1_RESPONSE)]
    if response_first:
        halves.reverse()
    replies = []
    for kind, body in halves:
        replies.append(post(client, kind, "req-1", body))
        clock.now += timedelta(milliseconds=10)
    assert [reply.status_code for reply in replies] == [200, 200]
    assert [reply.json()["paired"] for reply in replies] == [0, 1]

    frame = store.fetch("fraud")
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["request_id"] == "req-1"
    assert (row["amount"], row["country"]) == (12.5, "NL")
    assert (row["prediction"], row["probability"]) == (1, 0.83)
    assert (row["arm"], row["version"], row["status_code"], row["latency_ms"]) == (
        "candidate",
        "7",
        200,
        8.25,
    )
    assert row["protocol"] == "v1"
    assert row["source"] == "mlcanary/local/fraud/candidate/v7"
    assert row["received_at"] == T0
    assert row["event_time"] == datetime(2025, 3, 1, 11, 59, 59, 500000, tzinfo=UTC)

    stats = client.get("/stats").json()
    assert stats["events_accepted"] == 2
    assert (stats["request_events"], stats["response_events"]) == (1, 1)
    assert stats["paired_rows_written"] == 1
    assert stats["pending_requests"] == stats["pending_responses"] == 0


def test_root_path_accepts_events_too(client: TestClient, store: InferenceLogStore) -> None:
    reply = client.post("/", content=json.dumps(V1_REQUEST), headers=headers("request", "r"))
    assert reply.status_code == 200
    assert store.count("fraud") == 1


def test_batch_of_three_becomes_three_rows(client: TestClient, store: InferenceLogStore) -> None:
    instances = [{"amount": float(i), "country": "DE"} for i in range(3)]
    assert post(client, "request", "b", {"instances": instances}).status_code == 200
    reply = post(client, "response", "b", {"predictions": [0, 1, 0], "probabilities": [0.1, 0.7, 0.2]})
    assert reply.json() == {"id": "b", "rows": 3, "paired": 3}
    frame = store.fetch("fraud")
    assert list(frame["instance_index"]) == [0, 1, 2]
    assert list(frame["amount"]) == [0.0, 1.0, 2.0]
    assert list(frame["prediction"]) == [0, 1, 0]
    assert list(frame["probability"]) == [0.1, 0.7, 0.2]


def test_list_instances_are_stored_as_lists(client: TestClient, store: InferenceLogStore) -> None:
    post(client, "request", "l", {"instances": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})
    post(client, "response", "l", {"predictions": [0, 1]})
    frame = store.fetch("fraud")
    assert list(frame["2"]) == [3.0, 6.0]
    assert list(frame["prediction"]) == [0, 1]
    assert frame["probability"].isna().all()


def test_v2_columnar_inputs_and_named_outputs(client: TestClient, store: InferenceLogStore) -> None:
    request = {
        "inputs": [
            {"name": "amount", "shape": [2], "datatype": "FP64", "data": [10.0, 20.0]},
            {"name": "country", "shape": [2, 1], "datatype": "BYTES", "data": [["NL"], ["FR"]]},
        ]
    }
    response = {
        "model_name": "fraud",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 1]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.9, 0.1, 0.35, 0.65]},
        ],
    }
    assert post(client, "request", "v2", request).status_code == 200
    assert post(client, "response", "v2", response).status_code == 200
    frame = store.fetch("fraud")
    assert list(frame["amount"]) == [10.0, 20.0]
    assert list(frame["country"]) == ["NL", "FR"]
    assert list(frame["prediction"]) == [0, 1]
    assert list(frame["probability"]) == [0.1, 0.65]
    assert set(frame["protocol"]) == {"v2"}


def test_v2_single_2d_tensor_is_stored_as_lists(client: TestClient, store: InferenceLogStore) -> None:
    request = {
        "inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]
    }
    post(client, "request", "t", request)
    frame = store.fetch("fraud")
    assert list(frame["0"]) == [1, 4]
    assert list(frame["2"]) == [3, 6]


def test_kserve_agent_events_without_extensions(client: TestClient, store: InferenceLogStore) -> None:
    kserve = {"arm": None, "version": None, "latency": None, "status": None}
    post(client, "request", "k", {"instances": [[0.5, 1.5], [2.5, 3.5]]}, **kserve)
    post(client, "response", "k", {"predictions": [[0.2, 0.8], [0.7, 0.3]]}, **kserve)
    frame = store.fetch("fraud")
    assert frame["arm"].isna().all()
    assert frame["version"].isna().all()
    assert frame["latency_ms"].isna().all()
    assert set(frame["status_code"]) == {200}  # KServe logs only 200 responses
    assert list(frame["prediction"]) == [1, 0]
    assert list(frame["probability"]) == [0.8, 0.3]
    assert set(frame["source"]) == {"mlcanary/local/fraud/None/vNone"}


def test_duplicate_delivery_does_not_duplicate(client: TestClient, store: InferenceLogStore) -> None:
    for _ in range(2):
        assert post(client, "request", "d", {"instances": [{"a": 1}, {"a": 2}]}).status_code == 200
        assert post(client, "response", "d", {"predictions": [1, 0]}).status_code == 200
    assert store.count("fraud") == 2
    assert client.get("/stats").json()["events_accepted"] == 4


def test_error_response_with_a_plain_text_body_is_stored(
    client: TestClient, store: InferenceLogStore
) -> None:
    post(client, "request", "e", {"instances": [{"a": 1}, {"a": 2}]})
    reply = post(client, "response", "e", b"upstream connect error", status=503, latency=1.5)
    assert reply.status_code == 200
    frame = store.fetch("fraud")
    assert list(frame["status_code"]) == [503, 503]
    summary = aggregate(store, "fraud", T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert summary["candidate"].errors_5xx == 1
    assert summary["candidate"].requests == 1


def _without(name: str) -> dict[str, str]:
    result = headers("request", "m")
    return {key: value for key, value in result.items() if key.lower() != name}


@pytest.mark.parametrize(
    ("event_headers", "body", "message"),
    [
        (_without("ce-id"), V1_REQUEST, "ce-id"),
        ({**headers("request", "m"), "Ce-Specversion": "0.3"}, V1_REQUEST, "ce-specversion"),
        ({**headers("request", "m"), "ce-type": "com.example.other"}, V1_REQUEST, "ce-type"),
        (_without("ce-source"), V1_REQUEST, "ce-source"),
        (_without("ce-inferenceservicename"), V1_REQUEST, "ce-inferenceservicename"),
        ({**headers("request", "m"), "ce-mlcanaryarm": "blue"}, V1_REQUEST, "ce-mlcanaryarm"),
        ({**headers("request", "m"), "ce-time": "yesterday"}, V1_REQUEST, "ce-time"),
        ({**headers("response", "m"), "ce-mlcanarystatus": "abc"}, V1_RESPONSE, "ce-mlcanarystatus"),
        ({**headers("response", "m"), "ce-mlcanarylatencyms": "-1"}, V1_RESPONSE, "ce-mlcanarylatencyms"),
        (headers("request", "m"), b"{not json", "not valid JSON"),
        (headers("request", "m"), b"", "empty"),
        (headers("response", "m"), b"<html>oops</html>", "not valid JSON"),
        (headers("request", "m"), {"rows": [1, 2]}, "neither 'instances'"),
        (headers("request", "m"), {"instances": []}, "non-empty"),
        (headers("request", "m"), {"instances": [1, 2]}, "instances[0]"),
        (headers("response", "m"), {"result": 1}, "neither 'predictions'"),
        (headers("response", "m"), {"predictions": [1, 0], "probabilities": [0.5]}, "as long as"),
        (
            headers("request", "m"),
            {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0]}]},
            "needs 3 values",
        ),
        ({**headers("request", "m"), "ce-id": "x" * 300}, V1_REQUEST, "longer than"),
        (
            {**headers("request", "m"), "content-type": "application/cloudevents-batch+json"},
            V1_REQUEST,
            "JSON array",
        ),
    ],
)
def test_malformed_events_are_rejected_and_counted(
    client: TestClient, store: InferenceLogStore, event_headers: dict[str, str], body: Any, message: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = client.post("/events", content=content, headers=event_headers)
    assert reply.status_code == 400
    assert message.lower() in reply.json()["error"].lower()
    assert store.count("fraud") == 0
    stats = client.get("/stats").json()
    assert (stats["malformed"], stats["events_accepted"]) == (1, 0)


def test_oversize_body_is_413(client: TestClient, store: InferenceLogStore) -> None:
    body = {"instances": [{"blob": "x" * 5000}]}
    reply = post(client, "request", "big", body)
    assert reply.status_code == 413
    assert "exceeds" in reply.json()["error"]
    assert client.get("/stats").json()["oversize"] == 1
    assert store.count("fraud") == 0


def test_structured_mode(client: TestClient, store: InferenceLogStore) -> None:
    event = {
        "specversion": "1.0",
        "id": "s1",
        "type": REQUEST,
        "source": "pod-abc",
        "time": "2025-03-01T12:00:00Z",
        "inferenceservicename": "fraud",
        "mlcanaryarm": "champion",
        "datacontenttype": "application/json",
        "data": {"instances": [{"amount": 3.0}]},
    }
    response = {
        **event,
        "type": RESPONSE,
        "mlcanarystatus": 200,
        "data_base64": base64.b64encode(json.dumps({"predictions": [0]}).encode()).decode(),
    }
    del response["data"]
    for document in (event, response):
        reply = client.post(
            "/events", content=json.dumps(document), headers={"content-type": "application/cloudevents+json"}
        )
        assert reply.status_code == 200, reply.text
    frame = store.fetch("fraud")
    assert (frame.loc[0, "amount"], frame.loc[0, "prediction"], frame.loc[0, "arm"]) == (3.0, 0, "champion")


def test_store_failure_is_503(
    client: TestClient, store: InferenceLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    monkeypatch.setattr(store, "write_rows", broken)
    monkeypatch.setattr(store, "record_feedback_many", broken)
    monkeypatch.setattr(store, "ping", broken)
    reply = post(client, "request", "x", V1_REQUEST)
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "1"
    assert "retry" in reply.json()["error"]
    assert client.post("/feedback", json={"request_id": "x", "label": 1}).status_code == 503
    assert client.get("/healthz").status_code == 503
    assert client.get("/stats").json()["store_errors"] == 2


def test_feedback_single_list_and_upsert(client: TestClient, store: InferenceLogStore) -> None:
    post(client, "request", "f", {"instances": [{"a": 1}, {"a": 2}]})
    post(client, "response", "f", {"predictions": [0, 1]})
    assert client.post("/feedback", json={"request_id": "f", "label": 1}).json() == {"recorded": 1}
    reply = client.post(
        "/feedback",
        json=[{"request_id": "f", "label": 0}, {"request_id": "f", "label": 1, "instance_index": 1}],
    )
    assert reply.json() == {"recorded": 2}
    frame = store.fetch("fraud")
    assert list(frame["label"]) == [0, 1]
    assert client.get("/stats").json()["feedback_recorded"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "f", "label": 2},
        {"request_id": "f", "label": True},
        {"request_id": "f", "label": "1"},
        {"request_id": "", "label": 1},
        {"label": 1},
        {"request_id": "f", "label": 1, "instance_index": -1},
        [{"request_id": "f", "label": 1}, {"request_id": "g"}],
        "not an object",
    ],
)
def test_invalid_feedback_is_400(client: TestClient, store: InferenceLogStore, body: Any) -> None:
    reply = client.post("/feedback", json=body)
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("invalid feedback")
    assert client.get("/stats").json()["feedback_rejected"] == 1


def test_feedback_that_is_not_json_is_400(client: TestClient) -> None:
    reply = client.post("/feedback", content=b"{oops")
    assert reply.status_code == 400
    assert reply.json() == {"error": "feedback body is not valid JSON"}


def test_healthz_and_unknown_routes(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/events").status_code == 405
    assert client.get("/nope").status_code == 404


def test_stats_split_pending_from_unpaired(client: TestClient, clock: FakeClock) -> None:
    post(client, "request", "old", V1_REQUEST)
    clock.now += timedelta(seconds=40)
    post(client, "request", "new", V1_REQUEST)
    post(client, "response", "lonely", V1_RESPONSE)
    stats = client.get("/stats").json()
    assert (stats["pending_requests"], stats["unpaired_requests"]) == (1, 1)
    assert (stats["pending_responses"], stats["unpaired_responses"]) == (1, 0)
    assert stats["pairing_timeout_s"] == 30.0


def test_app_rejects_nonsense_settings(store: InferenceLogStore) -> None:
    with pytest.raises(ValueError, match="pairing_timeout_s"):
        create_collector_app(store, pairing_timeout_s=0)
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_collector_app(store, max_body_bytes=0)


# ---- payload parsing (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"predictions": [1, 0]}, [Prediction(1, None), Prediction(0, None)]),
        ({"predictions": [True, 1.0]}, [Prediction(1, None), Prediction(1, None)]),
        ({"predictions": [[0.3, 0.7]]}, [Prediction(1, 0.7)]),
        ({"predictions": [[0.2, 0.5, 0.3]]}, [Prediction(1, None)]),
        ({"predictions": [0.42]}, [Prediction(None, 0.42)]),
        ({"predictions": ["1", "fraud"]}, [Prediction(1, None), Prediction(None, None)]),
        ({"predictions": [1], "probabilities": [[0.1, 0.9]]}, [Prediction(1, 0.9)]),
        ({"predictions": [1], "probabilities": [7.0]}, [Prediction(1, None)]),
        ({"predictions": [10**30]}, [Prediction(None, None)]),
        (
            {
                "outputs": [
                    {"name": "predict_proba", "shape": [1, 2], "datatype": "FP32", "data": [[0.6, 0.4]]}
                ]
            },
            # Without a label output the label is P(positive) >= the threshold, as the servers read it.
            [Prediction(0, 0.4)],
        ),
        (
            {"outputs": [{"name": "output-0", "shape": [2, 1], "datatype": "INT64", "data": [1, 0]}]},
            [Prediction(1, None), Prediction(0, None)],
        ),
    ],
)
def test_response_payloads(payload: Any, expected: list[Prediction]) -> None:
    assert parse_response_payload(payload)[1] == expected


def test_request_payload_v2_inputs_must_agree_on_rows() -> None:
    payload = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
            {"name": "b", "shape": [3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]},
        ]
    }
    with pytest.raises(MalformedEvent, match="batch size"):
        parse_request_payload(payload)


def test_request_payload_nan_becomes_null() -> None:
    from mlcanary.telemetry.cloudevents_ingest import _load_json

    protocol, features = parse_request_payload(_load_json(b'{"instances": [{"a": NaN}]}', "request"))
    assert (protocol, features) == ("v1", [{"a": None}])
