"""The MLflow registry webhook receiver: signatures, replay, limits, emission, Prefect event, registration."""

from __future__ import annotations

import base64
import functools
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from mlcanary.triggers.delivery_log import MemoryDeliveryLog, SqliteDeliveryLog
from mlcanary.triggers.events import SUBSCRIBED_EVENTS, WebhookEvent
from mlcanary.triggers.prefect_events import (
    CANDIDATE_SET_EVENT,
    EmitError,
    PrefectEventEmitter,
    prefect_event_id,
)
from mlcanary.triggers.receiver import create_webhook_app
from mlcanary.triggers.registration import register_webhook
from mlcanary.triggers.server import WebhookConfigError, run_webhook
from mlcanary.triggers.signature import sign, verify_signature

SECRET = "test-secret-not-real"
NOW = 1_800_000_000.0


def clock() -> float:
    return NOW


def envelope(
    entity: str = "model_version_alias",
    action: str = "created",
    data: dict[str, Any] | None = None,
) -> bytes:
    data = {"name": "churn", "alias": "candidate", "version": "7"} if data is None else data
    body = {"entity": entity, "action": action, "timestamp": "2027-01-15T08:00:00+00:00", "data": data}
    return json.dumps(body).encode()


def signed_headers(
    body: bytes, *, delivery_id: str | None = None, timestamp: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(NOW) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(secret, delivery_id, ts, body),
    }


class Recorder:
    """An ``emit`` that records events and can be told to fail."""

    def __init__(self, failures: int = 0) -> None:
        self.events: list[WebhookEvent] = []
        self.failures = failures

    def __call__(self, event: WebhookEvent) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise EmitError("Prefect is down")
        self.events.append(event)


class TestClient:
    """A synchronous httpx client over the ASGI app; an app exception comes back as a 500, not raised."""

    __test__ = False

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._portal_context = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_context.__enter__()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://receiver")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._portal.call(self._client.aclose)
        self._portal_context.__exit__(None, None, None)


_clients: list[TestClient] = []


def make_client(emit: Any, **kwargs: Any) -> TestClient:
    client = TestClient(create_webhook_app(secret=SECRET, emit=emit, clock=clock, **kwargs))
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


@pytest.fixture
def emit() -> Recorder:
    return Recorder()


@pytest.fixture
def client(emit: Recorder) -> TestClient:
    return make_client(emit)


# ---------------------------------------------------------------------------------------------- signing


def test_sign_matches_mlflows_own_signature_function() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    payload = json.dumps({"entity": "model_version_alias", "action": "created", "data": {"n": "é"}})
    ours = sign(SECRET, "d-1", "1700000000", payload.encode("utf-8"))
    assert ours == _generate_hmac_signature(SECRET, "d-1", "1700000000", payload)
    assert verify_signature(SECRET, "d-1", "1700000000", payload.encode(), ours)
    assert not verify_signature("other", "d-1", "1700000000", payload.encode(), ours)
    assert not verify_signature(SECRET, "d-1", "1700000000", payload.encode(), ours.replace("v1,", "v2,"))
    assert not verify_signature(SECRET, "d-1", "1700000000", payload.encode(), "v1,not base64!")
    assert not verify_signature(SECRET, "d-1", "1700000000", payload.encode(), "é")


# ---------------------------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("path", ["/", "/webhook"])
def test_valid_candidate_alias_is_emitted_once_with_model_and_version(
    client: TestClient, emit: Recorder, path: str
) -> None:
    body = envelope()
    headers = signed_headers(body, delivery_id="delivery-1")
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"status": "emitted", "delivery_id": "delivery-1", "kind": "candidate_set"}
    assert len(emit.events) == 1
    event = emit.events[0]
    assert (event.kind, event.model, event.version, event.alias) == (
        "candidate_set",
        "churn",
        "7",
        "candidate",
    )
    assert event.delivery_id == "delivery-1"
    assert event.mlflow_timestamp == "2027-01-15T08:00:00+00:00"
    assert isinstance(event.version, str)


@pytest.mark.parametrize(
    ("entity", "action", "data", "kind"),
    [
        (
            "model_version_alias",
            "created",
            {"name": "churn", "alias": "champion", "version": "3"},
            "alias_created",
        ),
        ("model_version_alias", "deleted", {"name": "churn", "alias": "candidate"}, "alias_deleted"),
        ("model_version", "created", {"name": "churn", "version": "8", "run_id": None}, "version_created"),
    ],
)
def test_other_handled_events_are_accepted_and_recorded_but_not_emitted(
    client: TestClient, emit: Recorder, entity: str, action: str, data: dict[str, Any], kind: str
) -> None:
    body = envelope(entity, action, data)
    headers = signed_headers(body)
    response = client.post("/", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    assert response.json()["kind"] == kind
    assert emit.events == []
    assert headers["X-MLflow-Delivery-Id"] in client.app.state.delivery_log  # type: ignore[attr-defined]
    again = client.post("/", content=body, headers=headers)
    assert again.json()["status"] == "duplicate"


def test_candidate_alias_name_is_configurable(emit: Recorder) -> None:
    client = make_client(emit, candidate_alias="canary")
    body = envelope(data={"name": "m", "alias": "canary", "version": "2"})
    assert client.post("/", content=body, headers=signed_headers(body)).json()["status"] == "emitted"
    body = envelope()  # alias "candidate" is now just another alias
    assert client.post("/", content=body, headers=signed_headers(body)).json()["status"] == "accepted"
    assert [e.version for e in emit.events] == ["2"]


def test_unknown_signed_event_is_acknowledged_and_ignored(client: TestClient, emit: Recorder) -> None:
    body = envelope("registered_model", "created", {"name": "churn"})
    response = client.post("/", content=body, headers=signed_headers(body))
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert emit.events == []


def test_timestamp_at_the_tolerance_edge_is_accepted(emit: Recorder) -> None:
    client = make_client(emit, tolerance_s=60)
    for ts in (int(NOW) - 60, int(NOW) + 60):
        body = envelope()
        assert client.post("/", content=body, headers=signed_headers(body, timestamp=ts)).status_code == 200
    assert len(emit.events) == 2


# ---------------------------------------------------------------------------------------------- rejected


def _tampered(body: bytes) -> tuple[bytes, dict[str, str]]:
    headers = signed_headers(body)
    return body.replace(b'"7"', b'"8"'), headers


REJECTIONS: dict[str, Any] = {
    "wrong secret": lambda b: (b, signed_headers(b, secret="wrong")),
    "tampered body": _tampered,
    "missing signature": lambda b: (
        b,
        {k: v for k, v in signed_headers(b).items() if k != "X-MLflow-Signature"},
    ),
    "garbage signature": lambda b: (b, signed_headers(b) | {"X-MLflow-Signature": "v1,AAAA"}),
    "unprefixed signature": lambda b: (
        b,
        signed_headers(b) | {"X-MLflow-Signature": signed_headers(b)["X-MLflow-Signature"][3:]},
    ),
    "stale timestamp": lambda b: (b, signed_headers(b, timestamp=int(NOW) - 301)),
    "future timestamp": lambda b: (b, signed_headers(b, timestamp=int(NOW) + 301)),
    "missing delivery id": lambda b: (
        b,
        {k: v for k, v in signed_headers(b).items() if k != "X-MLflow-Delivery-Id"},
    ),
    "missing timestamp": lambda b: (
        b,
        {k: v for k, v in signed_headers(b).items() if k != "X-MLflow-Timestamp"},
    ),
    "non-numeric timestamp": lambda b: (b, signed_headers(b) | {"X-MLflow-Timestamp": "yesterday"}),
    "no headers at all": lambda b: (b, {}),
    "non-JSON (signed)": lambda b: (b"not json", signed_headers(b"not json")),
    "non-UTF-8 (signed)": lambda b: (b"\xff\xfe", signed_headers(b"\xff\xfe")),
    "JSON list (signed)": lambda b: (b"[1]", signed_headers(b"[1]")),
    "no data (signed)": lambda b: (
        (x := json.dumps({"entity": "model_version_alias", "action": "created"}).encode()),
        signed_headers(x),
    ),
    "int version (signed)": lambda b: (
        (x := envelope(data={"name": "churn", "alias": "candidate", "version": 7})),
        signed_headers(x),
    ),
    "missing alias (signed)": lambda b: (
        (x := envelope(data={"name": "churn", "version": "7"})),
        signed_headers(x),
    ),
    "oversized body": lambda b: ((x := b" " * (64 * 1024 + 1)), signed_headers(x)),
}
EXPECTED_STATUS = {
    "wrong secret": 401,
    "tampered body": 401,
    "missing signature": 401,
    "garbage signature": 401,
    "unprefixed signature": 401,
    "stale timestamp": 401,
    "future timestamp": 401,
    "missing delivery id": 400,
    "missing timestamp": 400,
    "non-numeric timestamp": 400,
    "no headers at all": 400,
    "non-JSON (signed)": 400,
    "non-UTF-8 (signed)": 400,
    "JSON list (signed)": 400,
    "no data (signed)": 400,
    "int version (signed)": 400,
    "missing alias (signed)": 400,
    "oversized body": 413,
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejections_have_the_right_status_and_trigger_nothing(
    client: TestClient, emit: Recorder, case: str
) -> None:
    body, headers = REJECTIONS[case](envelope())
    response = client.post("/", content=body, headers=headers)
    assert response.status_code == EXPECTED_STATUS[case], response.text
    assert "error" in response.json()
    assert emit.events == []
    assert len(client.app.state.delivery_log) == 0  # type: ignore[attr-defined]


def test_oversized_body_without_content_length_is_413(client: TestClient, emit: Recorder) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    response = client.post(
        "/", content=chunks(), headers={"X-MLflow-Delivery-Id": "x", "X-MLflow-Timestamp": "1"}
    )
    assert response.status_code == 413
    assert emit.events == []


def test_rejected_input_cannot_burn_a_delivery_id(client: TestClient, emit: Recorder) -> None:
    body = envelope()
    good = signed_headers(body, delivery_id="d-42")
    forged = good | {"X-MLflow-Signature": sign("attacker", "d-42", good["X-MLflow-Timestamp"], body)}
    assert client.post("/", content=body, headers=forged).status_code == 401
    assert client.post("/", content=body, headers=good).json()["status"] == "emitted"
    assert len(emit.events) == 1


def test_secret_is_not_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="mlcanary.triggers.receiver")
    body = envelope()
    headers = signed_headers(body)
    client.post("/", content=body, headers=headers)
    client.post("/", content=body, headers=signed_headers(body, secret="wrong"))
    assert SECRET not in caplog.text
    assert headers["X-MLflow-Signature"] not in caplog.text


# ---------------------------------------------------------------------------------------------- replay


def test_duplicate_delivery_is_acknowledged_and_not_emitted_twice(client: TestClient, emit: Recorder) -> None:
    body = envelope()
    headers = signed_headers(body, delivery_id="retry-me")
    first = client.post("/", content=body, headers=headers)
    second = client.post("/", content=body, headers=headers)
    assert first.json()["status"] == "emitted"
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert len(emit.events) == 1
    stats = client.get("/stats").json()
    assert stats["emitted"] == 1
    assert stats["duplicates"] == 1
    assert stats["delivery_log_size"] == 1


def test_sqlite_delivery_log_drops_duplicates_across_app_instances(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deliveries.db"
    body = envelope()
    headers = signed_headers(body, delivery_id="survives-restart")

    first_emit = Recorder()
    log = SqliteDeliveryLog(path)
    try:
        assert make_client(first_emit, seen=log).post("/", content=body, headers=headers).status_code == 200
    finally:
        log.close()

    second_emit = Recorder()
    log = SqliteDeliveryLog(path)
    try:
        response = make_client(second_emit, seen=log).post("/", content=body, headers=headers)
        assert response.json()["status"] == "duplicate"
    finally:
        log.close()
    assert len(first_emit.events) == 1
    assert second_emit.events == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_delivery_logs_are_bounded_and_release_ids(kind: str, tmp_path: Path) -> None:
    log = MemoryDeliveryLog(max_entries=3) if kind == "memory" else SqliteDeliveryLog(tmp_path / "d.db", 3)
    for i in range(5):
        assert log.claim(f"id-{i}")
    assert len(log) == 3
    assert "id-0" not in log
    assert "id-4" in log
    assert not log.claim("id-4")
    log.release("id-4")
    assert log.claim("id-4")


def test_concurrent_claims_of_one_id_succeed_exactly_once(tmp_path: Path) -> None:
    log = SqliteDeliveryLog(tmp_path / "d.db")
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(log.claim("same"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    log.close()
    assert sorted(results) == [False] * 7 + [True]


# ---------------------------------------------------------------------------------------------- emit failure


def test_emitter_failure_is_503_and_the_retry_is_processed(emit: Recorder) -> None:
    emit.failures = 1
    client = make_client(emit)
    body = envelope()
    headers = signed_headers(body, delivery_id="flaky")
    failed = client.post("/", content=body, headers=headers)
    assert failed.status_code == 503
    assert failed.headers["retry-after"]
    assert "Traceback" not in failed.text
    retried = client.post("/", content=body, headers=headers)  # MLflow retries with the same id
    assert retried.json()["status"] == "emitted"
    assert len(emit.events) == 1
    assert client.get("/stats").json()["emit_failures"] == 1


def test_unexpected_emitter_exception_is_also_503() -> None:
    def broken(event: WebhookEvent) -> None:
        raise KeyError("bug")

    client = make_client(broken)
    body = envelope()
    assert client.post("/", content=body, headers=signed_headers(body)).status_code == 503


# ---------------------------------------------------------------------------------------------- fuzz

_latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)
_header_value = st.one_of(
    st.none(),
    _latin1,
    st.just(str(int(NOW))),
    st.uuids().map(str),
    st.binary(max_size=32).map(lambda b: "v1," + base64.b64encode(b).decode()),
    _latin1.map(lambda text: "v1," + text),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_bodies = st.one_of(
    st.binary(max_size=512),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "entity": st.sampled_from(["model_version_alias", "model_version", "x"]) | _json_values,
            "action": st.sampled_from(["created", "deleted"]) | _json_values,
            "data": st.fixed_dictionaries(
                {},
                optional={
                    "name": st.text(max_size=10) | _json_values,
                    "alias": st.just("candidate") | _json_values,
                    "version": st.text(max_size=5) | _json_values,
                },
            )
            | _json_values,
        }
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=_bodies,
    delivery_id=_header_value,
    timestamp=_header_value,
    signature=_header_value,
    path=st.sampled_from(["/", "/webhook"]),
)
def test_fuzz_unsigned_input_never_5xx_and_never_emits(
    client: TestClient,
    emit: Recorder,
    body: bytes,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    path: str,
) -> None:
    headers = {
        name: value.encode("latin-1")
        for name, value in (
            ("X-MLflow-Delivery-Id", delivery_id),
            ("X-MLflow-Timestamp", timestamp),
            ("X-MLflow-Signature", signature),
        )
        if value is not None
    }
    response = client.post(path, content=body, headers=headers)
    assert response.status_code < 500
    assert response.status_code in (400, 401, 413)
    assert emit.events == []
    assert len(client.app.state.delivery_log) == 0  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_fuzz_signed_bodies_never_5xx(client: TestClient, body: bytes) -> None:
    response = client.post("/", content=body, headers=signed_headers(body))
    assert response.status_code in (200, 202, 400, 413)


# ---------------------------------------------------------------------------------------------- Prefect


class _FakePrefect:
    """A tiny HTTP server on 127.0.0.1 recording ``POST /api/events`` bodies; answers ``status``."""

    def __init__(self, status: int = 204) -> None:
        self.bodies: list[Any] = []
        self.paths: list[str] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                outer.paths.append(self.path)
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def __enter__(self) -> _FakePrefect:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _candidate(delivery_id: str = "d-1") -> WebhookEvent:
    return WebhookEvent("candidate_set", "churn", "7", "candidate", delivery_id, "2027-01-15T08:00:00+00:00")


def test_prefect_emitter_posts_one_prefect_event_to_the_events_api() -> None:
    from prefect.events.schemas.events import Event

    with _FakePrefect() as prefect:
        emitter = PrefectEventEmitter(prefect.api_url + "/")
        try:
            emitter(_candidate())
        finally:
            emitter.close()
    assert prefect.paths == ["/api/events"]
    (body,) = prefect.bodies
    assert isinstance(body, list)
    assert len(body) == 1
    sent = body[0]
    assert sent["event"] == CANDIDATE_SET_EVENT
    assert sent["id"] == str(prefect_event_id("d-1"))
    assert sent["resource"]["prefect.resource.id"] == "mlflow.model.churn"
    assert sent["resource"]["mlflow.model"] == "churn"
    assert sent["resource"]["mlflow.version"] == "7"
    assert sent["payload"] == {
        "model": "churn",
        "version": "7",
        "alias": "candidate",
        "delivery_id": "d-1",
        "mlflow_timestamp": "2027-01-15T08:00:00+00:00",
    }
    parsed = Event.model_validate(sent)  # Prefect's own schema accepts it
    assert parsed.resource.id == "mlflow.model.churn"
    assert str(parsed.id) == sent["id"]


def test_prefect_event_id_is_stable_per_delivery() -> None:
    assert prefect_event_id("a") == prefect_event_id("a")
    assert prefect_event_id("a") != prefect_event_id("b")


def test_prefect_emitter_raises_on_error_status_and_unreachable_api() -> None:
    with _FakePrefect(status=500) as prefect:
        emitter = PrefectEventEmitter(prefect.api_url)
        with pytest.raises(EmitError, match="500"):
            emitter(_candidate())
        emitter.close()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    emitter = PrefectEventEmitter(
        "http://127.0.0.1:9/api", client=httpx.Client(transport=httpx.MockTransport(refuse))
    )
    with pytest.raises(EmitError, match="unreachable"):
        emitter(_candidate())


def test_app_with_unreachable_prefect_answers_503() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    emitter = PrefectEventEmitter(
        "http://127.0.0.1:9/api", client=httpx.Client(transport=httpx.MockTransport(refuse))
    )
    client = make_client(emitter)
    body = envelope()
    response = client.post("/", content=body, headers=signed_headers(body))
    assert response.status_code == 503
    assert response.json() == {"error": "could not forward the event; retry later"}


# ------------------------------------------------------------------------------------- MLflow's sender


class _Server:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a thread."""

    def __init__(self, app: Starlette) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def test_mlflows_own_delivery_code_reaches_prefect_through_the_receiver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow 3.17's sender → real uvicorn receiver → fake Prefect API, all on 127.0.0.1."""
    from mlflow.entities.webhook import Webhook
    from mlflow.entities.webhook import WebhookEvent as MlflowWebhookEvent
    from mlflow.webhooks.delivery import _create_webhook_session, _send_webhook_request

    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    with _FakePrefect() as prefect:
        emitter = PrefectEventEmitter(prefect.api_url)
        app = create_webhook_app(secret=SECRET, emit=emitter)  # real clock: MLflow stamps time.time()
        with _Server(app) as server:
            event = MlflowWebhookEvent("model_version_alias", "created")
            hook = Webhook(
                "wh-1", "mlcanary", f"http://127.0.0.1:{server.port}/webhook", [event], 0, 0, secret=SECRET
            )
            session = _create_webhook_session()
            try:
                payload = {"name": "churn", "alias": "candidate", "version": "12"}
                response = _send_webhook_request(hook, payload, event, session)  # type: ignore[arg-type]
                wrong = Webhook("wh-2", "x", hook.url, [event], 0, 0, secret="not-the-secret")
                rejected = _send_webhook_request(wrong, payload, event, session)  # type: ignore[arg-type]
            finally:
                session.close()
        emitter.close()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "emitted"
    assert rejected.status_code == 401
    assert len(prefect.bodies) == 1
    assert prefect.bodies[0][0]["payload"]["version"] == "12"
    assert prefect.bodies[0][0]["resource"]["mlflow.model"] == "churn"


# ---------------------------------------------------------------------------------------------- entrypoints


def test_run_webhook_refuses_to_start_without_the_secret(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="MLCANARY_WEBHOOK_SECRET"):
        run_webhook("127.0.0.1", 0, prefect_api_url="http://127.0.0.1:9/api", state_dir=tmp_path, environ={})
    with pytest.raises(WebhookConfigError, match="MY_SECRET"):
        run_webhook(
            "127.0.0.1",
            0,
            prefect_api_url="http://127.0.0.1:9/api",
            state_dir=tmp_path,
            secret_env="MY_SECRET",
            environ={"MY_SECRET": " "},
        )
    assert not (tmp_path / "webhook-deliveries.db").exists()


def test_create_app_rejects_empty_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        create_webhook_app(secret="", emit=Recorder())


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_register_webhook_creates_then_updates(monkeypatch: pytest.MonkeyPatch, mlflow_state: Path) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    uri = f"sqlite:///{(mlflow_state / 'mlflow.db').resolve()}"
    name = f"mlcanary-test-{uuid.uuid4().hex[:8]}"
    first = register_webhook(uri, "http://127.0.0.1:8095/webhook", "s1", name=name)
    second = register_webhook(uri, "http://127.0.0.1:8096/webhook", "s2", name=name)
    assert first == second
    hook = MlflowClient(tracking_uri=uri, registry_uri=uri).get_webhook(first)
    assert hook.url == "http://127.0.0.1:8096/webhook"
    assert sorted(str(e) for e in hook.events) == sorted(SUBSCRIBED_EVENTS)
    assert str(hook.status) in ("ACTIVE", "WebhookStatus.ACTIVE")
