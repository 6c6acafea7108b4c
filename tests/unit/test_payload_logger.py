"""CloudEvents inference events and their delivery by the PayloadLogger to a real local HTTP collector."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import numpy as np
import pandas as pd
import pytest

from mlcanary.data.schema import FeatureSpec
from mlcanary.serving.local import model_server
from mlcanary.serving.local.model_server import ServedModel, create_app
from mlcanary.serving.local.payload_logger import DEFAULT_LINGER_S, DEFAULT_MAX_BATCH, PayloadLogger
from mlcanary.telemetry.cloudevents_ingest import event_from_structured
from mlcanary.telemetry.events import (
    BATCH_CONTENT_TYPE,
    CE_TYPE_REQUEST,
    CE_TYPE_RESPONSE,
    InferenceEvent,
    local_source,
)

LOGGER_NAME = "mlcanary.serving.local.payload_logger"
WAIT = 10.0  # generous bound for a thread to reach a point; never asserted on


class Collector:
    """A real HTTP/1.1 server on 127.0.0.1 recording every POST; can answer any status or hold requests."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.arrived = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with collector._lock:
                    collector.received.append((headers, body, self.client_address[1]))
                collector.arrived.set()
                collector.gate.wait(WAIT * 3)
                self.send_response(collector.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/events"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.stop()


def make_event(n: int = 0, *, response: bool = False) -> InferenceEvent:
    return InferenceEvent(
        ce_id=f"req-{n}",
        ce_type=CE_TYPE_RESPONSE if response else CE_TYPE_REQUEST,
        source=local_source("fraud", "candidate", "7"),
        time=datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        model="fraud",
        arm="candidate",
        version="7",
        body=b'{"predictions":[1]}' if response else b'{"instances":[[1.5]]}',
        latency_ms=12.345 if response else None,
        status=200 if response else None,
        headers={"ce-namespace": "local", "ce-component": "predictor", "ce-endpoint": "candidate"},
    )


# -- InferenceEvent -----------------------------------------------------------------------------------


def test_event_headers_round_trip() -> None:
    for event in (make_event(1), make_event(1, response=True)):
        headers = event.to_headers()
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-time"] == "2026-05-01T12:30:15.123456Z"
        assert headers["content-type"] == "application/json"
        assert InferenceEvent.from_headers(headers, event.body) == event
    response_headers = make_event(1, response=True).to_headers()
    assert response_headers["ce-mlcanarylatencyms"] == "12.345"
    assert response_headers["ce-mlcanarystatus"] == "200"
    assert "ce-mlcanarystatus" not in make_event(1).to_headers()


def test_event_from_kserve_logger_headers() -> None:
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": "0009174a-24a8-4603-b098-09c8799950e9",
        "Ce-Type": CE_TYPE_RESPONSE,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Time": "2021-04-10T00:23:26.080736102Z",
        "Ce-Inferenceservicename": "sklearn-iris",
        "Ce-Namespace": "default",
        "Ce-Endpoint": "",
        "Content-Type": "application/json",
    }
    event = InferenceEvent.from_headers(headers, b'{"predictions": [1, 1]}')
    assert event.model == "sklearn-iris"
    assert (event.arm, event.version, event.status, event.latency_ms) == (None, None, None, None)
    assert event.time == datetime(2021, 4, 10, 0, 23, 26, 80736, tzinfo=UTC)
    assert event.headers["ce-namespace"] == "default"
    assert not event.is_request


def test_event_time_is_normalised_to_utc_and_defaults_when_absent() -> None:
    headers = make_event().to_headers()
    headers["ce-time"] = "2026-05-01T14:30:15+02:00"
    assert InferenceEvent.from_headers(headers, b"").time == datetime(2026, 5, 1, 12, 30, 15, tzinfo=UTC)
    del headers["ce-time"]
    stamp = datetime(2030, 1, 1, tzinfo=UTC)
    assert InferenceEvent.from_headers(headers, b"", received_at=stamp).time == stamp
    local = make_event().time.astimezone(timezone(timedelta(hours=-5)))
    assert InferenceEvent(**{**make_event().__dict__, "time": local}).time.tzinfo == UTC


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"ce-specversion": None}, "ce-specversion"),
        ({"ce-specversion": "0.3"}, "0.3"),
        ({"ce-id": None}, "ce-id"),
        ({"ce-id": "  "}, "ce-id"),
        ({"ce-type": "com.example.other"}, "com.example.other"),
        ({"ce-type": None}, "ce-type"),
        ({"ce-source": None}, "ce-source"),
        ({"ce-time": "yesterday"}, "ce-time"),
        ({"ce-time": "2026-05-01T12:00:00"}, "offset"),
        ({"ce-mlcanarystatus": "ok"}, "ce-mlcanarystatus"),
        ({"ce-mlcanarystatus": "42"}, "ce-mlcanarystatus"),
        ({"ce-mlcanarylatencyms": "fast"}, "ce-mlcanarylatencyms"),
        ({"ce-mlcanarylatencyms": "-1"}, "ce-mlcanarylatencyms"),
    ],
)
def test_event_from_headers_rejects_invalid_attributes(change: dict[str, str | None], fragment: str) -> None:
    headers = make_event(response=True).to_headers()
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(ValueError, match=fragment):
        InferenceEvent.from_headers(headers, b"")


def test_event_construction_rejects_a_naive_time_and_unknown_type() -> None:
    with pytest.raises(ValueError, match="timezone"):
        InferenceEvent(**{**make_event().__dict__, "time": datetime(2026, 1, 1)})
    with pytest.raises(ValueError, match="ce_type"):
        InferenceEvent(**{**make_event().__dict__, "ce_type": "request"})


# -- delivery -----------------------------------------------------------------------------------------


def delivered(collector: Collector) -> list[InferenceEvent]:
    """Every event the collector received, in order, from batches and from binary-mode POSTs alike."""
    events: list[InferenceEvent] = []
    for headers, body, _ in collector.received:
        if headers["content-type"] == BATCH_CONTENT_TYPE:
            events += [event_from_structured(doc, received_at=datetime.now(UTC)) for doc in json.loads(body)]
        else:
            events.append(InferenceEvent.from_headers(headers, body))
    return events


def test_delivers_queued_events_as_one_batch_over_one_connection(collector: Collector) -> None:
    sender = PayloadLogger(collector.url, linger_s=WAIT)  # the batch closes when full (4) or at close
    events = [make_event(1), make_event(1, response=True), make_event(2), make_event(2, response=True)]
    events.append(InferenceEvent(**{**make_event(3).__dict__, "body": b"\xff not json"}))
    events.append(InferenceEvent(**{**make_event(4).__dict__, "shadow": True}))
    assert all(sender.submit(event) for event in events)
    sender.close(timeout=WAIT)

    assert sender.stats() == {
        "enqueued": 6,
        "sent": 6,
        "dropped": 0,
        "failed": 0,
        "posts": 1,
        "pending": 0,
        "capacity": 10_000,
    }
    (headers, body, _), *rest = collector.received
    assert rest == []
    assert headers["content-type"] == BATCH_CONTENT_TYPE
    documents = json.loads(body)
    assert [doc["id"] for doc in documents] == ["req-1", "req-1", "req-2", "req-2", "req-3", "req-4"]
    assert documents[-1]["mlcanaryshadow"] == "true"
    response = documents[1]
    assert response["type"] == CE_TYPE_RESPONSE
    assert response["source"] == "mlcanary/local/fraud/candidate/v7"
    assert (response["mlcanaryarm"], response["mlcanaryversion"]) == ("candidate", "7")
    assert (response["mlcanarystatus"], response["mlcanarylatencyms"]) == ("200", "12.345")
    assert (response["specversion"], response["datacontenttype"]) == ("1.0", "application/json")
    assert base64.b64decode(response["data_base64"]) == b'{"predictions":[1]}'
    assert delivered(collector) == events, "every attribute and every payload byte survives the batch"


def test_max_batch_one_sends_binary_mode_like_kserve(collector: Collector) -> None:
    sender = PayloadLogger(collector.url, max_batch=1)
    events = [make_event(1), make_event(1, response=True), make_event(2), make_event(2, response=True)]
    assert all(sender.submit(event) for event in events)
    sender.close(timeout=WAIT)

    assert (sender.stats()["sent"], sender.stats()["posts"]) == (4, 4)
    assert [InferenceEvent.from_headers(h, body) for h, body, _ in collector.received] == events
    headers, body, _ = collector.received[1]
    assert headers["ce-id"] == "req-1"
    assert headers["ce-type"] == CE_TYPE_RESPONSE
    assert headers["ce-source"] == "mlcanary/local/fraud/candidate/v7"
    assert headers["ce-mlcanaryarm"] == "candidate"
    assert headers["ce-mlcanaryversion"] == "7"
    assert headers["ce-mlcanarystatus"] == "200"
    assert headers["content-type"] == "application/json"
    assert body == b'{"predictions":[1]}'
    assert len({port for _, _, port in collector.received}) == 1, "expected one keep-alive connection"


def test_batches_are_bounded_by_count_and_by_bytes(collector: Collector) -> None:
    collector.gate.clear()
    sender = PayloadLogger(collector.url, max_batch=3, linger_s=0.0)
    sender.submit(make_event(0))
    assert collector.arrived.wait(WAIT)
    events = [make_event(n) for n in range(1, 8)]
    for event in events:
        sender.submit(event)  # queued behind the held POST: batches of 3, 3, 1
    collector.gate.set()
    sender.close(timeout=WAIT)
    sizes = [len(json.loads(body)) for _, body, _ in collector.received]
    assert sizes == [1, 3, 3, 1]

    one = len(make_event(0).to_structured())
    small = Collector()
    try:
        small.gate.clear()
        sender = PayloadLogger(small.url, max_batch_bytes=2 * one + 3, linger_s=0.0)
        sender.submit(make_event(0))
        assert small.arrived.wait(WAIT)
        for event in events[:5]:
            sender.submit(event)  # one batch of 5 taken, sent as 2 + 2 + 1 (two fit: 2 + 2 * one + 1)
        small.gate.set()
        sender.close(timeout=WAIT)
        assert [len(json.loads(body)) for _, body, _ in small.received] == [1, 2, 2, 1]
        assert all(len(body) <= 2 * one + 3 for _, body, _ in small.received)
        assert [e.ce_id for e in delivered(small)] == [f"req-{n}" for n in range(6)]
    finally:
        small.stop()


def test_a_2xx_counts_the_events_the_collector_rejected_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    answer = {"events": 3, "stored": 2, "rows": 2, "paired": 0}
    answer["rejected"] = [{"index": 1, "id": "req-1", "error": "request body is not valid JSON"}]
    posts: list[httpx.Request] = []

    def collector(request: httpx.Request) -> httpx.Response:
        posts.append(request)
        return httpx.Response(200, json=answer)

    client = httpx.Client(transport=httpx.MockTransport(collector))
    sender = PayloadLogger("http://collector/", client=client, linger_s=WAIT)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        for n in range(3):
            sender.submit(make_event(n))
        sender.close(timeout=WAIT)
    assert len(posts) == 1, "a rejected event is not re-sent"
    stats = sender.stats()
    assert (stats["sent"], stats["failed"]) == (2, 1)
    assert "req-1" in caplog.text
    assert "not valid JSON" in caplog.text


def test_a_413_splits_the_batch_until_it_fits() -> None:
    sizes: list[int] = []

    def collector(request: httpx.Request) -> httpx.Response:
        count = len(json.loads(request.content))
        sizes.append(count)
        return httpx.Response(413 if count > 2 else 200)

    client = httpx.Client(transport=httpx.MockTransport(collector))
    sender = PayloadLogger("http://collector/", client=client, linger_s=WAIT, max_batch=5)
    for n in range(5):
        sender.submit(make_event(n))
    sender.close(timeout=WAIT)
    assert sizes == [5, 2, 3, 1, 2]
    assert (sender.stats()["sent"], sender.stats()["failed"]) == (5, 0)


def test_full_queue_drops_and_counts_without_blocking(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.gate.clear()
    sender = PayloadLogger(collector.url, max_queue=2)
    assert sender.submit(make_event(0))
    assert collector.arrived.wait(WAIT), "the worker never reached the collector"

    results: list[bool] = []
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        submitter = threading.Thread(
            target=lambda: results.extend(sender.submit(make_event(n)) for n in range(7))
        )
        submitter.start()
        submitter.join(WAIT)
        assert not submitter.is_alive(), "submit blocked on a full queue"
    assert results == [True, True, False, False, False, False, False]
    assert sender.stats()["dropped"] == 5
    assert sender.stats()["pending"] == 2
    drop_warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_warnings) == 1, "the first drop warns at once, the rest wait for the interval"

    collector.gate.set()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        sender.close(timeout=WAIT)
    stats = sender.stats()
    assert (stats["sent"], stats["dropped"], stats["failed"], stats["pending"]) == (3, 5, 0, 0)
    assert [event.ce_id for event in delivered(collector)] == ["req-0", "req-0", "req-1"]
    assert "dropped 4 event(s) (5 in total)" in caplog.text, "close reports drops not yet warned about"


def test_drop_warnings_are_rate_limited_by_the_clock(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    now = [100.0]

    def hold(request: httpx.Request) -> httpx.Response:
        gate.wait(WAIT)
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(hold))
    sender = PayloadLogger("http://collector/", max_queue=1, client=client, clock=lambda: now[0])
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
            sender.submit(make_event(0))
            while sender.stats()["pending"]:  # wait for the worker to take it
                gate.wait(0.01)
            assert sender.submit(make_event(1))
            for _ in range(3):
                assert not sender.submit(make_event(2))
            now[0] += 9.9
            assert not sender.submit(make_event(3))
            now[0] += 0.2
            assert not sender.submit(make_event(4))
        messages = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
        assert len(messages) == 2
        assert "dropped 1 event(s) (1 in total)" in messages[0]
        assert "dropped 4 event(s) (5 in total)" in messages[1]
    finally:
        gate.set()
        sender.close(timeout=WAIT)


def test_collector_500_is_retried_twice_then_counted_failed(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.status = 500
    sender = PayloadLogger(collector.url, retry_backoff=0.0, max_retries=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        sender.submit(make_event(1))
        sender.close(timeout=WAIT)
    assert len(collector.received) == 3
    assert (sender.stats()["failed"], sender.stats()["sent"]) == (1, 0)
    assert "HTTP 500" in caplog.text


def test_collector_rejection_is_not_retried(collector: Collector) -> None:
    collector.status = 400
    sender = PayloadLogger(collector.url, retry_backoff=0.0)
    sender.submit(make_event(1))
    sender.submit(make_event(2))
    sender.close(timeout=WAIT)
    assert sorted(event.ce_id for event in delivered(collector)) == ["req-1", "req-2"], "sent once each"
    assert sender.stats()["failed"] == 2


def test_unreachable_collector_counts_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = PayloadLogger(f"http://127.0.0.1:{port}/", retry_backoff=0.0, timeout=2.0)
    sender.submit(make_event(1))
    sender.close(timeout=WAIT)
    assert (sender.stats()["failed"], sender.stats()["sent"]) == (1, 0)


def test_close_gives_up_on_a_hung_collector_and_drops_the_rest(collector: Collector) -> None:
    collector.gate.clear()
    sender = PayloadLogger(collector.url)
    sender.submit(make_event(0))
    assert collector.arrived.wait(WAIT)
    for n in range(1, 4):
        sender.submit(make_event(n))
    sender.close(timeout=0.2)
    assert sender.stats()["dropped"] == 3
    assert sender.stats()["pending"] == 0
    assert not sender.submit(make_event(9))
    assert sender.stats()["dropped"] == 4


# -- model server + payload logger + collector -----------------------------------------------------


class Constant:
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.tile([0.3, 0.7], (len(frame), 1))


def test_model_server_events_reach_the_collector(collector: Collector) -> None:
    served = ServedModel("fraud", "3", "champion", Constant(), (FeatureSpec("amount", "numeric", "double"),))
    sender = PayloadLogger(collector.url)
    app = create_app(served, sink=sender)
    request_body = b'{"instances": [[1.5], [2.5]]}'

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            return [
                await client.post(
                    "/v1/models/fraud:predict", content=request_body, headers={"x-request-id": "a"}
                ),
                await client.post("/v1/models/fraud:predict", content=b"[]", headers={"x-request-id": "b"}),
            ]

    ok, bad = anyio.run(scenario)
    sender.close(timeout=WAIT)
    assert (ok.status_code, bad.status_code) == (200, 400)

    events = delivered(collector)
    assert [(e.ce_id, e.ce_type, e.status) for e in events] == [
        ("a", CE_TYPE_REQUEST, None),
        ("a", CE_TYPE_RESPONSE, 200),
        ("b", CE_TYPE_RESPONSE, 400),  # a refused request logs only its response
    ]
    assert events[0].body == request_body
    assert events[1].body == ok.content
    assert {(e.model, e.arm, e.version, e.source) for e in events} == {
        ("fraud", "champion", "3", "mlcanary/local/fraud/champion/v3")
    }
    assert all(e.latency_ms is not None and e.latency_ms >= 0 for e in events if not e.is_request)


def test_model_server_flags_size_the_loggers_batches(capsys: pytest.CaptureFixture[str]) -> None:
    base = [
        "--name",
        "m",
        "--version",
        "1",
        "--arm",
        "champion",
        "--port",
        "1",
        "--tracking-uri",
        "sqlite://",
    ]
    parsed = model_server._parse_args(base)
    assert (parsed.log_batch_events, parsed.log_linger_ms) == (DEFAULT_MAX_BATCH, DEFAULT_LINGER_S * 1000)
    parsed = model_server._parse_args([*base, "--log-batch-events", "1", "--log-linger-ms", "0"])
    assert (parsed.log_batch_events, parsed.log_linger_ms) == (1, 0.0)
    for bad in (["--log-batch-events", "0"], ["--log-linger-ms", "-1"], ["--log-linger-ms", "nan"]):
        with pytest.raises(SystemExit):
            model_server._parse_args([*base, *bad])
        assert bad[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch_bytes": 0}, "max_batch_bytes"),
        ({"linger_s": -0.1}, "linger_s"),
        ({"max_queue": 0}, "max_queue"),
    ],
)
def test_nonsense_batch_settings_are_refused(option: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        PayloadLogger("http://collector/", **option)  # type: ignore[arg-type]
