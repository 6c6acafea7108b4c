"""The model server's ASGI app: KServe V1 and V2 routes over one served model version.

Endpoints:

* V1: ``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``
* V2: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}[/versions/{v}]``,
  ``GET /v2/models/{name}[/versions/{v}]/ready``, ``POST /v2/models/{name}[/versions/{v}]/infer``
* ``GET /metrics/payload-logger``: the event sink's counters as JSON (``{"enabled": false}`` without one)
* ``GET /metrics/batching``: the micro-batcher's counters (model calls, requests, rows, retries)
  and the pid of the worker process that answered

Every error is JSON ``{"error": "..."}``. Status codes: 400 malformed request, 413 body larger than
``max_body_bytes`` (Content-Length checked first, then the bytes actually read) or more than
``max_instances`` rows, 422 a value of the wrong type or not finite (see
:mod:`mlcanary.serving.local.inference_protocol`), 404 a model name or version this server does not
serve, 500 the predictor failed (a real model failure: it counts toward the 5xx error rate). A client
that disconnects before its body arrives is logged with status 499, never as a 5xx.

Concurrent inference requests are scored together by a
:class:`~mlcanary.serving.local.micro_batcher.MicroBatcher` (one model call, each request its own
rows); the model runs on the event loop's thread.

Every response echoes ``x-request-id`` (the caller's, as Envoy sets it, if it is 1-128 printable
ASCII characters; otherwise a new uuid4) and names the arm and version in ``x-mlcanary-server-arm`` and
``x-mlcanary-model-version``. Inference responses add ``x-mlcanary-latency-ms``: the server-side
time from the body being read to the response being encoded (parse, validate, wait for the batch,
predict, encode).

A request whose ``Host`` carries the ``-shadow`` suffix (Envoy's and Istio's mark on a mirrored
copy, e.g. ``front-door-shadow:8080``) is a **shadow** request: it is answered as any other (the
proxy discards the answer) and its events are marked ``shadow``, so the collector files them apart
from the live traffic and pairs them with the champion's answer to the original.

For every inference request to the served model (any status; not for a wrong model name) the
server submits :class:`~mlcanary.telemetry.events.InferenceEvent` s to the sink with ``ce-id`` = the
request id: the request (body as received) and the response (body as sent, with latency and
status). A request refused as a client error (4xx) sends only its response event: its body is not
a payload the collector can store, and the response alone carries the evidence (status, latency).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mlcanary.runtime.http_body import BodyTooLargeError, read_limited_body
from mlcanary.serving.headers import (
    BINARY_HEADER_LENGTH_HEADER,
    NO_LOG_HEADER,
    REQUEST_ID_HEADER,
    SERVER_ARM_HEADER,
    SERVER_LATENCY_HEADER,
    SERVER_VERSION_HEADER,
)
from mlcanary.serving.local.inference_protocol import (
    BAD_REQUEST,
    CONTENT_TOO_LARGE,
    DEFAULT_MAX_INSTANCES,
    RequestError,
    encode_json,
)
from mlcanary.serving.local.micro_batcher import BatchingConfig, MicroBatcher
from mlcanary.serving.local.payload_logger import DRAIN_ON_STOP_S, EventSink
from mlcanary.serving.local.scoring import (
    Answer,
    PredictorError,
    WireProtocol,
    answer,
    combine,
    compute,
    decode,
    model_call,
)
from mlcanary.serving.local.served_model import ServedModel, placeholder_request
from mlcanary.serving.local.v2_codec import metadata
from mlcanary.telemetry.events import (
    CE_TYPE_REQUEST,
    CE_TYPE_RESPONSE,
    HEADER_COMPONENT,
    HEADER_ENDPOINT,
    HEADER_NAMESPACE,
    LOCAL_NAMESPACE,
    PREDICTOR_COMPONENT,
    InferenceEvent,
    local_source,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1_048_576
CLIENT_CLOSED_REQUEST = 499
_MAX_REQUEST_ID = 128
SHADOW_HOST_SUFFIX = "-shadow"


def create_app(
    served: ServedModel,
    *,
    sink: EventSink | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    shutdown_timeout: float = DRAIN_ON_STOP_S,
    batching: BatchingConfig | None = None,
) -> Starlette:
    """ASGI app serving ``served`` over KServe V1 and V2, logging inference events to ``sink``.

    On startup (ASGI lifespan) the app runs one prediction on a placeholder row through the whole
    request path, so the first real request does not pay for lazy initialisation (a cold first
    request would skew the arm's latency percentiles); no event is logged for it. The app owns
    ``sink``: on shutdown it calls ``sink.close(shutdown_timeout)`` if the sink has a ``close``
    method, so queued events are flushed before the process exits. ``batching`` bounds the
    micro-batches (default :class:`~mlcanary.serving.local.micro_batcher.BatchingConfig`).
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    if max_instances < 1:
        raise ValueError(f"max_instances must be positive, got {max_instances}")
    server = _Server(served, sink, max_body_bytes, max_instances, batching or BatchingConfig())

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        server.warm_up()
        try:
            yield
        finally:
            close = getattr(sink, "close", None)
            if callable(close):
                await run_in_threadpool(close, shutdown_timeout)

    v1_model = "/v1/models/{name}"
    v2_model = "/v2/models/{name}"
    v2_version = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/v2/health/ready", server.ready, methods=["GET"]),
        Route("/metrics/payload-logger", server.sink_stats, methods=["GET"]),
        Route("/metrics/batching", server.batch_stats, methods=["GET"]),
        Route(v1_model + ":predict", server.v1_predict, methods=["POST"]),
        Route(v1_model, server.v1_status, methods=["GET"]),
        Route(v2_model, server.v2_metadata, methods=["GET"]),
        Route(v2_version, server.v2_metadata, methods=["GET"]),
        Route(v2_model + "/ready", server.v2_model_ready, methods=["GET"]),
        Route(v2_version + "/ready", server.v2_model_ready, methods=["GET"]),
        Route(v2_model + "/infer", server.v2_infer, methods=["POST"]),
        Route(v2_version + "/infer", server.v2_infer, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unhandled_error},
    )


@dataclasses.dataclass
class _Received:
    """A request's body once read (empty until then): a prediction that fails after reading it
    still logs the request as received, so its row keeps its features."""

    body: bytes = b""


class _Server:
    def __init__(
        self,
        served: ServedModel,
        sink: EventSink | None,
        max_body_bytes: int,
        max_instances: int,
        batching: BatchingConfig,
    ) -> None:
        self.served = served
        self.sink = sink
        self.max_body_bytes = max_body_bytes
        self.max_instances = max_instances
        self.source = local_source(served.name, served.arm, served.version)
        self.served_headers = {SERVER_ARM_HEADER: served.arm, SERVER_VERSION_HEADER: served.version}
        self.batcher: MicroBatcher[Any] = MicroBatcher(combine, model_call(served), batching)

    # -- health and metadata -------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return self._json(request, 200, {"live": True})

    async def ready(self, request: Request) -> Response:
        return self._json(request, 200, {"ready": True})

    async def v1_status(self, request: Request) -> Response:
        return self._for_model(request, lambda: {"name": self.served.name, "ready": True, **self._identity()})

    async def v2_metadata(self, request: Request) -> Response:
        served = self.served
        return self._for_model(
            request,
            lambda: metadata(
                model=served.name,
                version=served.version,
                arm=served.arm,
                schema=served.model.inputs,
                flavor=served.model.flavor,
                classes=served.model.classes,
            ),
        )

    async def v2_model_ready(self, request: Request) -> Response:
        return self._for_model(request, lambda: {"name": self.served.name, "ready": True})

    async def sink_stats(self, request: Request) -> Response:
        if self.sink is None:
            return self._json(request, 200, {"enabled": False})
        stats = getattr(self.sink, "stats", None)
        body: dict[str, Any] = {"enabled": True}
        if callable(stats):
            body.update(stats())
        return self._json(request, 200, body)

    async def batch_stats(self, request: Request) -> Response:
        config = self.batcher.config
        return self._json(
            request,
            200,
            {
                **dataclasses.asdict(self.batcher.stats),
                "max_batch_rows": config.max_batch_rows,
                "max_wait_ms": config.max_wait_ms,
                "pid": os.getpid(),
            },
        )

    def warm_up(self) -> None:
        body = encode_json(placeholder_request(self.served.model.inputs))
        try:
            compute(self.served, body, "v1", "warm-up", None, self.max_instances)
        except Exception as exc:
            # A model may reject the placeholder row yet serve real ones: warn, keep starting.
            logger.warning("warm-up prediction failed (%s: %s); serving anyway", type(exc).__name__, exc)

    # -- inference -----------------------------------------------------------------------------

    async def v1_predict(self, request: Request) -> Response:
        return await self._infer(request, "v1")

    async def v2_infer(self, request: Request) -> Response:
        return await self._infer(request, "v2")

    async def _infer(self, request: Request, protocol: WireProtocol) -> Response:
        request_id = _request_id(request)
        problem = self._wrong_model(request)
        if problem is not None:
            return self._json(request, 404, {"error": problem}, request_id=request_id)
        received_at = datetime.now(UTC)
        started = time.perf_counter()
        received = _Received()
        computed: Answer | None = None
        try:
            started, computed = await self._answer(request, protocol, request_id, received)
            status, content = 200, computed.body
        except RequestError as exc:
            status, content = exc.status, encode_json({"error": exc.message})
        except ClientDisconnect:
            # Not a model failure: log it under nginx's "client closed request" code, never as a 5xx.
            status, content = CLIENT_CLOSED_REQUEST, encode_json({"error": "client disconnected"})
        except PredictorError as exc:
            logger.error("predictor of %s v%s failed: %s", self.served.name, self.served.version, exc)
            status, content = 500, encode_json({"error": str(exc)})
        except Exception as exc:
            logger.exception("inference request %s failed", request_id)
            status, content = 500, encode_json({"error": f"internal error: {type(exc).__name__}: {exc}"})
        latency_ms = (time.perf_counter() - started) * 1000.0
        if request.headers.get(NO_LOG_HEADER) is None:
            logged_request = computed.logged_request if computed is not None else None
            self._log_events(
                request_id,
                received_at,
                logged_request or received.body,
                computed.logged_response if computed is not None else content,
                status,
                latency_ms,
                shadow=is_shadow_host(request.headers.get("host", "")),
            )
        headers = {
            REQUEST_ID_HEADER: request_id,
            SERVER_LATENCY_HEADER: f"{latency_ms:.3f}",
            **self.served_headers,
        }
        media_type = "application/json"
        if computed is not None and computed.header_length is not None:
            headers[BINARY_HEADER_LENGTH_HEADER] = str(computed.header_length)
            media_type = "application/octet-stream"
        return Response(content, status_code=status, media_type=media_type, headers=headers)

    async def _answer(
        self, request: Request, protocol: WireProtocol, request_id: str, received: _Received
    ) -> tuple[float, Answer]:
        """Read (into ``received``), decode, score in a batch and encode one request: (start time,
        answer)."""
        batcher = self.batcher
        batcher.receiving()
        try:
            received.body = await _read_body(request, self.max_body_bytes)
            started = time.perf_counter()
            parsed = decode(
                self.served,
                received.body,
                protocol,
                request.headers.get(BINARY_HEADER_LENGTH_HEADER),
                self.max_instances,
            )
        finally:
            batcher.received()
        try:
            outputs = await batcher.score(parsed.decoded.data, parsed.decoded.rows)
        except Exception as exc:
            raise PredictorError(f"model failed to predict: {type(exc).__name__}: {exc}") from exc
        return started, answer(self.served, protocol, parsed, outputs, request_id)

    def _log_events(
        self,
        request_id: str,
        received_at: datetime,
        request_body: bytes,
        response_body: bytes,
        status: int,
        latency_ms: float,
        *,
        shadow: bool = False,
    ) -> None:
        if self.sink is None:
            return
        served = self.served
        extras = {
            HEADER_NAMESPACE: LOCAL_NAMESPACE,
            HEADER_COMPONENT: PREDICTOR_COMPONENT,
            HEADER_ENDPOINT: served.arm,
        }
        common: dict[str, Any] = {
            "ce_id": request_id,
            "source": self.source,
            "model": served.name,
            "arm": served.arm,
            "version": served.version,
            "headers": extras,
            "shadow": shadow,
        }
        response = InferenceEvent(
            ce_type=CE_TYPE_RESPONSE,
            time=datetime.now(UTC),
            body=response_body,
            latency_ms=latency_ms,
            status=status,
            **common,
        )
        events = [response]
        if not 400 <= status < 500:
            request = InferenceEvent(ce_type=CE_TYPE_REQUEST, time=received_at, body=request_body, **common)
            events.insert(0, request)
        for event in events:
            try:
                self.sink.submit(event)
            except Exception:
                # A broken sink must not turn a prediction into an error.
                logger.exception("event sink failed to accept event %s", request_id)

    # -- helpers -------------------------------------------------------------------------------

    def _identity(self) -> dict[str, str]:
        return {"version": self.served.version, "arm": self.served.arm}

    def _wrong_model(self, request: Request) -> str | None:
        name = request.path_params.get("name")
        if name != self.served.name:
            return f"model {name!r} is not served here; this server serves {self.served.name!r}"
        version = request.path_params.get("version")
        if version is not None and version != self.served.version:
            return (
                f"version {version!r} of model {name!r} is not served here; "
                f"this server serves version {self.served.version!r}"
            )
        return None

    def _for_model(self, request: Request, build: Callable[[], dict[str, Any]]) -> Response:
        problem = self._wrong_model(request)
        if problem is not None:
            return self._json(request, 404, {"error": problem})
        return self._json(request, 200, build())

    def _json(
        self, request: Request, status: int, payload: dict[str, Any], *, request_id: str | None = None
    ) -> Response:
        headers = {REQUEST_ID_HEADER: request_id or _request_id(request), **self.served_headers}
        return Response(
            encode_json(payload), status_code=status, media_type="application/json", headers=headers
        )


def is_shadow_host(host: str) -> bool:
    """Whether a ``Host`` / authority is a proxy's mirrored copy: Envoy (and so Istio) appends
    ``-shadow`` to the host part, before any port (``a:8080`` → ``a-shadow:8080``)."""
    name = host.strip().lower()
    if re.fullmatch(r".*:[0-9]+", name):
        name = name.rpartition(":")[0]
    return name.endswith(SHADOW_HOST_SUFFIX)


def _request_id(request: Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if 0 < len(given) <= _MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return str(uuid.uuid4())


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise RequestError(BAD_REQUEST, f"invalid Content-Length header {declared!r}")
    try:
        return await read_limited_body(request, limit)
    except BodyTooLargeError as exc:
        size = f"of {exc.size} bytes " if exc.size is not None else ""
        message = f"request body {size}exceeds the limit of {limit} bytes"
        raise RequestError(CONTENT_TOO_LARGE, message) from None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = {REQUEST_ID_HEADER: _request_id(request)}
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return Response(
        encode_json({"error": message}),
        status_code=exc.status_code,
        media_type="application/json",
        headers={**headers, **(exc.headers or {})},
    )


async def _unhandled_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        encode_json({"error": f"internal error: {type(exc).__name__}"}),
        status_code=500,
        media_type="application/json",
        headers={REQUEST_ID_HEADER: _request_id(request)},
    )
