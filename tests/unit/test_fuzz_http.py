"""Bad input on every HTTP endpoint but the webhook (fuzzed in ``test_webhook.py``), issue 14 item 9.

Hypothesis sends arbitrary and half-valid input to the model server (V1 ``:predict``, V2 ``infer``
with and without the binary extension, metadata and readiness) serving a real scikit-learn pipeline,
and to the collector (CloudEvents ingest, feedback) on a real SQLite inference log, in-process over
Starlette's test client. The claims: never a 5xx, always a JSON ``{"error": ...}`` with a message
for a 4xx, and nothing written for rejected input (the model server logs no request event for a 4xx;
the collector writes no row and no label).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.testclient import TestClient

from mlcanary.data.schema import FeatureSpec, infer_schema
from mlcanary.data.synthetic import FEATURES, TARGET, generate_transactions
from mlcanary.serving.local.model_server import ServedModel, create_app
from mlcanary.telemetry.collector import create_collector_app
from mlcanary.telemetry.events import BATCH_CONTENT_TYPE, CE_TYPE_REQUEST, CE_TYPE_RESPONSE, InferenceEvent
from mlcanary.telemetry.store import InferenceLogStore
from models.pipeline import build_pipeline

MODEL = "fraud"
VERSION = "7"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
# A valid prediction costs a real pipeline's predict (tens of ms on a loaded machine): fewer examples.
FUZZ_MODEL = settings(FUZZ, max_examples=60)

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_garbage = st.binary(max_size=200) | st.text(max_size=200).map(str.encode)


class MemorySink:
    """The payload logger's place: keeps the events the server submits."""

    def __init__(self) -> None:
        self.events: list[InferenceEvent] = []

    def submit(self, event: InferenceEvent) -> bool:
        self.events.append(event)
        return True

    def stats(self) -> dict[str, int]:
        return {"enqueued": len(self.events)}

    def close(self, timeout: float) -> None:
        return None


@pytest.fixture(scope="module")
def features() -> tuple[FeatureSpec, ...]:
    return infer_schema(generate_transactions(500, seed=3), FEATURES)


@pytest.fixture(scope="module")
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture(scope="module")
def server(features: tuple[FeatureSpec, ...], sink: MemorySink) -> Iterator[TestClient]:
    frame = generate_transactions(1_000, seed=4)
    pipeline = build_pipeline(
        "logistic_regression",
        numeric=[s.name for s in features if s.kind == "numeric"],
        categorical=[s.name for s in features if s.kind == "categorical"],
    )
    pipeline.fit(frame[list(FEATURES)], frame[TARGET])
    served = ServedModel(
        name=MODEL, version=VERSION, arm="candidate", predictor=pipeline, features=features, threshold=0.5
    )
    app = create_app(served, sink=sink, max_body_bytes=16 * 1024, max_instances=20)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _value_for(spec: FeatureSpec) -> st.SearchStrategy[Any]:
    good = st.floats(-1e6, 1e6) if spec.kind == "numeric" else st.sampled_from(["NL", "DE", "US"])
    return good | _scalars


def _v1_bodies(features: tuple[FeatureSpec, ...]) -> st.SearchStrategy[Any]:
    names = [s.name for s in features]
    row = st.fixed_dictionaries({s.name: _value_for(s) for s in features}) | st.dictionaries(
        st.sampled_from(names) | st.text(max_size=6), _scalars, max_size=len(names) + 1
    )
    as_list = st.lists(_scalars, min_size=0, max_size=len(names) + 1)
    instances = st.lists(row | as_list | _json, max_size=25)
    return st.fixed_dictionaries({"instances": instances}) | st.dictionaries(
        st.sampled_from(["instances", "inputs", "parameters"]), _json, max_size=3
    )


_datatypes = st.sampled_from(["FP64", "FP32", "INT64", "INT32", "BOOL", "BYTES", "UINT8", "FP16"]) | st.text(
    max_size=5
)
_shapes = st.lists(st.integers(-3, 30) | st.just(2**40), max_size=3) | _json


def _v2_bodies(features: tuple[FeatureSpec, ...]) -> st.SearchStrategy[Any]:
    names = st.sampled_from([s.name for s in features]) | st.text(max_size=6)
    tensor = st.fixed_dictionaries(
        {
            "name": names,
            "shape": _shapes,
            "datatype": _datatypes,
            "data": st.lists(_scalars, max_size=8) | _json,
        },
        optional={"parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-1, 40)}) | _json},
    )
    request = st.fixed_dictionaries(
        {"inputs": st.lists(tensor, max_size=len(features) + 1) | _json},
        optional={
            "id": _scalars,
            "parameters": st.dictionaries(
                st.sampled_from(["content_type", "binary_data_output"]) | st.text(max_size=5),
                _json,
                max_size=2,
            ),
            "outputs": st.lists(
                st.fixed_dictionaries({"name": st.text(max_size=8)}, optional={"parameters": _json}),
                max_size=3,
            )
            | _json,
        },
    )
    return request | _json


def _assert_clear_4xx(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        payload = response.json()
        assert isinstance(payload.get("error"), str), payload
        assert payload["error"].strip(), payload


def _assert_nothing_logged_for_a_rejection(sink: MemorySink, before: int, status: int) -> None:
    new = sink.events[before:]
    if 400 <= status < 500:
        assert [event.ce_type for event in new] == [CE_TYPE_RESPONSE]  # the answer, never the input
        assert new[0].status == status
    else:
        assert [event.ce_type for event in new] == [CE_TYPE_REQUEST, CE_TYPE_RESPONSE]


@FUZZ_MODEL
@given(data=st.data())
def test_fuzz_v1_predict_never_5xx(server: TestClient, sink: MemorySink, features, data) -> None:  # type: ignore[no-untyped-def]
    body = data.draw(_v1_bodies(features).map(lambda v: json.dumps(v).encode()) | _garbage)
    content_type = data.draw(st.sampled_from(["application/json", "text/plain", ""]) | _header_text)
    before = len(sink.events)
    response = server.post(
        f"/v1/models/{MODEL}:predict",
        content=body,
        headers={"content-type": content_type},
    )
    _assert_clear_4xx(response)
    _assert_nothing_logged_for_a_rejection(sink, before, response.status_code)


@FUZZ_MODEL
@given(data=st.data())
def test_fuzz_v2_infer_never_5xx(server: TestClient, sink: MemorySink, features, data) -> None:  # type: ignore[no-untyped-def]
    payload = data.draw(_v2_bodies(features))
    text = json.dumps(payload).encode()
    binary = data.draw(st.binary(max_size=64))
    header = data.draw(st.none() | st.just(str(len(text))) | st.integers(-5, 400).map(str) | _header_text)
    headers = {}
    body = text
    if header is not None:
        headers["Inference-Header-Content-Length"] = header
        body = text + binary
    path = data.draw(
        st.sampled_from([f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/versions/{VERSION}/infer"])
    )
    before = len(sink.events)
    response = server.post(path, content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        _assert_clear_4xx(response)
    _assert_nothing_logged_for_a_rejection(sink, before, response.status_code)


@FUZZ
@given(
    name=st.text(min_size=1, max_size=12) | st.just(MODEL),
    version=st.none() | st.text(min_size=1, max_size=6) | st.just(VERSION),
    suffix=st.sampled_from(["", "/ready"]),
)
def test_fuzz_metadata_and_readiness_never_5xx(
    server: TestClient, name: str, version: str | None, suffix: str
) -> None:
    path = f"/v2/models/{quote(name, safe='')}"
    if version is not None:
        path += f"/versions/{quote(version, safe='')}"
    response = server.get(path + suffix)
    _assert_clear_4xx(response)
    served = name == MODEL and version in (None, VERSION)
    assert (response.status_code == 200) == served, (path, response.status_code)
    assert server.get(f"/v1/models/{quote(name, safe='')}").status_code == (200 if name == MODEL else 404)


def test_a_binary_request_with_nan_is_refused_not_a_500(server: TestClient, sink: MemorySink) -> None:
    """Found by the fuzz: a binary tensor holding NaN made the JSON form of the request (for the
    payload log) fail to encode, a 500."""
    header = json.dumps(
        {
            "inputs": [
                {"name": "amount", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
            ]
        }
    ).encode()
    before = len(sink.events)
    response = server.post(
        f"/v2/models/{MODEL}/infer",
        content=header + struct.pack("<d", math.nan),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]
    _assert_nothing_logged_for_a_rejection(sink, before, response.status_code)


def test_health_endpoints_answer(server: TestClient) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics/payload-logger"):
        assert server.get(path).status_code == 200, path
    assert server.post("/v2/health/live").status_code == 405


# -- the collector -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceLogStore]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "inference.db"
    with InferenceLogStore(f"sqlite:///{path}") as opened:
        yield opened


@pytest.fixture(scope="module")
def collector(store: InferenceLogStore) -> Iterator[TestClient]:
    app = create_collector_app(store, max_body_bytes=4096)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _rows(store: InferenceLogStore) -> tuple[int, ...]:
    """How many rows the inference log, its shadow log and the feedback table hold."""
    from mlcanary.telemetry.store import metadata

    with store.engine.connect() as connection:
        return tuple(
            connection.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
            for name in ("inference_log", "shadow_log", "feedback")
        )


def _ce_headers() -> st.SearchStrategy[dict[str, str]]:
    good = {
        "ce-specversion": st.just("1.0") | _header_text,
        "ce-id": st.uuids().map(str) | _header_text,
        "ce-type": st.sampled_from([CE_TYPE_REQUEST, CE_TYPE_RESPONSE]) | _header_text,
        "ce-source": st.just("mlcanary/local/fraud/candidate/v7") | _header_text,
        "ce-inferenceservicename": st.just(MODEL) | _header_text,
    }
    optional = {
        "ce-time": st.just("2025-03-01T11:59:59.5Z") | _header_text,
        "ce-mlcanaryarm": st.sampled_from(["champion", "candidate"]) | _header_text,
        "ce-mlcanaryversion": st.just("7") | _header_text,
        "ce-mlcanarystatus": st.sampled_from(["200", "400", "503"]) | _header_text,
        "ce-mlcanarylatencyms": st.just("8.5") | _header_text,
        "ce-mlcanaryshadow": st.sampled_from(["true", "false"]) | _header_text,
        "content-type": st.sampled_from(
            ["application/json", "application/cloudevents+json", "application/cloudevents-batch+json"]
        )
        | _header_text,
    }
    return st.fixed_dictionaries(good, optional=optional)


def _event_bodies() -> st.SearchStrategy[bytes]:
    payloads = (
        st.fixed_dictionaries(
            {
                "instances": st.lists(
                    st.dictionaries(st.text(max_size=6), _scalars, max_size=3) | _json, max_size=4
                )
            }
        )
        | st.fixed_dictionaries(
            {"predictions": st.lists(_scalars | _json, max_size=4)}, optional={"probabilities": _json}
        )
        | st.fixed_dictionaries({"inputs": _json})
        | st.fixed_dictionaries(
            {
                "outputs": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.text(max_size=6), "shape": _shapes, "datatype": _datatypes, "data": _json}
                    ),
                    max_size=3,
                )
                | _json
            }
        )
        | st.fixed_dictionaries(
            {
                "specversion": st.just("1.0"),
                "id": _header_text,
                "type": st.just(CE_TYPE_REQUEST) | _header_text,
                "source": _header_text,
                "data": _json,
            },
            optional={"data_base64": _header_text, "inferenceservicename": _header_text},
        )
        | _json
    )
    return payloads.map(lambda v: json.dumps(v).encode()) | _garbage


@FUZZ
@given(headers=_ce_headers(), body=_event_bodies())
def test_fuzz_cloudevents_never_5xx_and_rejections_write_nothing(
    collector: TestClient, store: InferenceLogStore, headers: dict[str, str], body: bytes
) -> None:
    before = _rows(store)
    response = collector.post("/events", content=body, headers=headers)
    assert response.status_code in (200, 400, 413), response.text
    if response.status_code != 200:
        _assert_clear_4xx(response)
        assert _rows(store) == before


def _structured_events() -> st.SearchStrategy[object]:
    """Events in CloudEvents' JSON format, half-valid: good attributes or fuzz, a payload or fuzz."""
    payload = st.sampled_from(
        [{"instances": [{"amount": 1.5}]}, {"predictions": [1]}, {"predictions": [[0.2, 0.8]]}]
    )
    return (
        st.fixed_dictionaries(
            {
                "specversion": st.just("1.0") | _header_text,
                "id": st.uuids().map(str) | _header_text | _scalars,
                "type": st.sampled_from([CE_TYPE_REQUEST, CE_TYPE_RESPONSE]) | _header_text,
                "source": st.just("mlcanary/local/fraud/candidate/v7") | _header_text,
                "inferenceservicename": st.just(MODEL) | _header_text | _scalars,
            },
            optional={
                "data": payload | _json,
                "data_base64": payload.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode())
                | _header_text
                | _scalars,
                "mlcanaryarm": st.sampled_from(["champion", "candidate"]) | _header_text,
                "mlcanarystatus": st.sampled_from(["200", "503"]) | _header_text | _scalars,
                "mlcanarylatencyms": st.just("8.5") | _header_text | _scalars,
                "time": st.just("2025-03-01T11:59:59.5Z") | _header_text,
            },
        )
        | _json
    )


@settings(FUZZ, max_examples=50)  # each example is up to 5 events (1,500 passed once, locally)
@given(events=st.lists(_structured_events(), max_size=5))
def test_fuzz_cloudevent_batches_never_5xx_and_account_for_every_event(
    collector: TestClient, store: InferenceLogStore, events: list[object]
) -> None:
    before = _rows(store)
    body = json.dumps(events).encode()
    response = collector.post("/events", content=body, headers={"content-type": BATCH_CONTENT_TYPE})
    assert response.status_code in (200, 413), response.text
    if response.status_code != 200:
        _assert_clear_4xx(response)
        assert _rows(store) == before
        return
    answer = response.json()
    assert answer["events"] == len(events) == answer["stored"] + len(answer["rejected"])
    assert all(isinstance(item["error"], str) and item["error"] for item in answer["rejected"])
    if answer["stored"] == 0:
        assert _rows(store) == before


_feedback_item = st.fixed_dictionaries(
    {"request_id": _header_text | _scalars, "label": st.sampled_from([0, 1]) | _scalars},
    optional={"instance_index": st.integers(-2, 3) | _scalars, "extra": _json},
)


@FUZZ
@given(
    body=(
        st.one_of(_feedback_item, st.lists(_feedback_item, max_size=4), _json).map(
            lambda v: json.dumps(v).encode()
        )
        | _garbage
    )
)
def test_fuzz_feedback_never_5xx_and_rejections_write_nothing(
    collector: TestClient, store: InferenceLogStore, body: bytes
) -> None:
    before = _rows(store)
    response = collector.post("/feedback", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 413), response.text
    if response.status_code != 200:
        _assert_clear_4xx(response)
        assert _rows(store) == before
