"""Local model server: one model version behind KServe's V1 and V2 (Open Inference) protocols.

Two of these run side by side on one machine (champion and candidate arm), with Envoy in front
splitting traffic. Endpoints:

* V1: ``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``
* V2: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}[/versions/{v}]``,
  ``GET /v2/models/{name}[/versions/{v}]/ready``, ``POST /v2/models/{name}[/versions/{v}]/infer``
* ``GET /metrics/payload-logger``: the event sink's counters as JSON (``{"enabled": false}`` without one)

Every error is JSON ``{"error": "..."}``. Status codes: 400 malformed request, 413 body larger than
``max_body_bytes`` (Content-Length checked first, then the bytes actually read) or more than
``max_instances`` rows, 422 a value of the wrong type or not finite (see
:mod:`mlcanary.serving.local.inference_protocol`), 404 a model name or version this server does not
serve, 500 the predictor failed (a real model failure: it counts toward the 5xx error rate). A client
that disconnects before its body arrives is logged with status 499, never as a 5xx.

Every response echoes ``x-request-id`` (the caller's, as Envoy sets it, if it is 1-128 printable
ASCII characters; otherwise a new uuid4) and names the arm and version in ``x-mlcanary-server-arm`` and
``x-mlcanary-model-version``. Inference responses add ``x-mlcanary-latency-ms``: the server-side
time from the body being read to the response being encoded (parse, validate, predict, encode).

A request whose ``Host`` carries the ``-shadow`` suffix (Envoy's and Istio's mark on a mirrored
copy, e.g. ``front-door-shadow:8080``) is a **shadow** request: it is answered as any other (the
proxy discards the answer) and its events are marked ``shadow``, so the collector files them apart
from the live traffic and pairs them with the champion's answer to the original.

For every inference request to the served model (any status; not for a wrong model name) the
server submits :class:`~mlcanary.telemetry.events.InferenceEvent` s to the sink with ``ce-id`` = the
request id: the request (body as received) and the response (body as sent, with latency and
status). A request refused as a client error (4xx) sends only its response event: its body is not
a payload the collector can store, and the response alone carries the evidence (status, latency).

Run as a process: ``python -m mlcanary.serving.local.model_server --port P --name NAME --version V
--arm ARM --tracking-uri URI [--collector-url URL]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mlcanary.data.model_inputs import InputSchema
from mlcanary.data.schema import FeatureSpec
from mlcanary.registry.model_loader import ModelLoadError, ScoringModel, classes_of
from mlcanary.rollout.model_outputs import OutputNames, OutputReading, read_outputs
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
    UNPROCESSABLE,
    RequestError,
    decode_json,
    encode_json,
)
from mlcanary.serving.local.payload_logger import EventSink, PayloadLogger
from mlcanary.serving.local.v2_binary import (
    binary_outputs,
    binary_response,
    header_length,
    inline_binary_inputs,
)
from mlcanary.serving.local.v2_codec import DecodedRequest, metadata, parse_v1, parse_v2, v1_answer, v2_answer
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
#: Exit status of a model server whose model cannot be loaded (its last log line says why).
EXIT_LOAD_FAILED = 3
#: Prefix of that last line, so a supervisor can report it alone.
LOAD_FAILED_PREFIX = "mlcanary: cannot serve"
CLIENT_CLOSED_REQUEST = 499
_MAX_REQUEST_ID = 128

WireProtocol = Literal["v1", "v2"]


@dataclass(frozen=True)
class ServedModel:
    """The model version a server exposes.

    ``scorer`` is the loaded MLflow model (:class:`~mlcanary.registry.model_loader.ScoringModel`): its input
    schema decides how requests are decoded and its named outputs are returned as MLServer names
    them; ``outputs`` says which of them hold the label and the probability (``model.outputs``).
    For tests and backward compatibility, a scikit-learn-style ``predictor`` with ``features`` may
    be given instead (it is wrapped in a scorer). ``arm`` is normally ``"champion"`` or
    ``"candidate"``. Raises ``ValueError`` for an empty name, version or arm, no or duplicate
    features, or a threshold outside [0, 1].
    """

    name: str
    version: str
    arm: str
    predictor: Any = None
    features: tuple[FeatureSpec, ...] = ()
    threshold: float = 0.5
    scorer: ScoringModel | None = None
    outputs: OutputNames = field(default_factory=OutputNames)

    def __post_init__(self) -> None:
        for attribute in ("name", "version", "arm"):
            if not getattr(self, attribute):
                raise ValueError(f"ServedModel.{attribute} must not be empty")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"ServedModel.threshold must be within [0, 1], got {self.threshold}")
        if self.predictor is not None or self.scorer is None:
            if not self.features:
                raise ValueError("ServedModel.features must name at least one feature")
            names = [spec.name for spec in self.features]
            if len(set(names)) != len(names):
                raise ValueError(f"ServedModel.features has duplicate names: {names}")
            scorer = ScoringModel(
                inputs=InputSchema(kind="columns", columns=tuple(self.features)),
                flavors=("sklearn",),
                path="sklearn",
                model=self.predictor,
                threshold=self.threshold,
                classes=classes_of(self.predictor),
            )
            object.__setattr__(self, "scorer", scorer)
        elif not self.features:
            object.__setattr__(self, "features", tuple(self.scorer.inputs.columns))

    @property
    def model(self) -> ScoringModel:
        assert self.scorer is not None
        return self.scorer


class _PredictorError(Exception):
    """The predictor raised or returned something unusable: a 500."""


@dataclass(frozen=True)
class _Answer:
    """A computed answer: the body sent, the request and response bodies as logged (JSON, also for
    binary requests), and the JSON header length of a binary response."""

    body: bytes
    logged_request: bytes | None
    logged_response: bytes
    header_length: int | None


def placeholder_request(schema: InputSchema) -> dict[str, Any]:
    """A V1 request of one placeholder row for ``schema`` (zeros, false, empty strings)."""
    if schema.kind == "tensor":
        assert schema.tensor is not None
        dims = [1 if d == -1 else d for d in schema.tensor.shape[1:]]
        row: Any = np.zeros(dims, dtype=schema.tensor.dtype).tolist()
        return {"instances": [row]}
    placeholder = {"double": 0.0, "long": 0, "boolean": False, "string": ""}
    return {"instances": [{spec.name: placeholder[spec.dtype] for spec in schema.columns}]}


def create_app(
    served: ServedModel,
    *,
    sink: EventSink | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    shutdown_timeout: float = 5.0,
) -> Starlette:
    """ASGI app serving ``served`` over KServe V1 and V2, logging inference events to ``sink``.

    On startup (ASGI lifespan) the app runs one prediction on a placeholder row through the whole
    request path, so the first real request does not pay for lazy initialisation (a cold first
    request would skew the arm's latency percentiles); no event is logged for it. The app owns
    ``sink``: on shutdown it calls ``sink.close(shutdown_timeout)`` if the sink has a ``close``
    method, so queued events are flushed before the process exits.
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    if max_instances < 1:
        raise ValueError(f"max_instances must be positive, got {max_instances}")
    server = _Server(served, sink, max_body_bytes, max_instances)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(server.warm_up)
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


class _Server:
    def __init__(
        self, served: ServedModel, sink: EventSink | None, max_body_bytes: int, max_instances: int
    ) -> None:
        self.served = served
        self.sink = sink
        self.max_body_bytes = max_body_bytes
        self.max_instances = max_instances
        self.source = local_source(served.name, served.arm, served.version)
        self.served_headers = {SERVER_ARM_HEADER: served.arm, SERVER_VERSION_HEADER: served.version}

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

    def warm_up(self) -> None:
        try:
            self._compute(encode_json(placeholder_request(self.served.model.inputs)), "v1", "warm-up", None)
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
        body = b""
        logged_request: bytes | None = None
        logged_response = b""
        header_length: int | None = None
        try:
            body = await _read_body(request, self.max_body_bytes)
            started = time.perf_counter()
            status, answer = await run_in_threadpool(
                self._compute, body, protocol, request_id, request.headers.get(BINARY_HEADER_LENGTH_HEADER)
            )
            content, logged_request, logged_response, header_length = (
                answer.body,
                answer.logged_request,
                answer.logged_response,
                answer.header_length,
            )
        except RequestError as exc:
            status, content = exc.status, encode_json({"error": exc.message})
        except ClientDisconnect:
            # Not a model failure: log it under nginx's "client closed request" code, never as a 5xx.
            status, content = CLIENT_CLOSED_REQUEST, encode_json({"error": "client disconnected"})
        except _PredictorError as exc:
            logger.error("predictor of %s v%s failed: %s", self.served.name, self.served.version, exc)
            status, content = 500, encode_json({"error": str(exc)})
        except Exception as exc:
            logger.exception("inference request %s failed", request_id)
            status, content = 500, encode_json({"error": f"internal error: {type(exc).__name__}: {exc}"})
        if status != 200:
            logged_response = content
        latency_ms = (time.perf_counter() - started) * 1000.0
        if request.headers.get(NO_LOG_HEADER) is None:
            shadow = is_shadow_host(request.headers.get("host", ""))
            self._log_events(
                request_id,
                received_at,
                logged_request or body,
                logged_response,
                status,
                latency_ms,
                shadow=shadow,
            )
        headers = {
            REQUEST_ID_HEADER: request_id,
            SERVER_LATENCY_HEADER: f"{latency_ms:.3f}",
            **self.served_headers,
        }
        media_type = "application/json"
        if header_length is not None:
            headers[BINARY_HEADER_LENGTH_HEADER] = str(header_length)
            media_type = "application/octet-stream"
        return Response(content, status_code=status, media_type=media_type, headers=headers)

    def _compute(
        self, body: bytes, protocol: WireProtocol, request_id: str, binary_header: str | None
    ) -> tuple[int, _Answer]:
        """Parse, validate, predict and encode; runs in a worker thread (it is CPU-bound)."""
        served = self.served
        schema = served.model.inputs
        length = header_length(binary_header, len(body)) if protocol == "v2" else None
        payload = inline_binary_inputs(body, length) if length is not None else decode_json(body)
        if protocol == "v1":
            decoded = parse_v1(payload, schema, max_instances=self.max_instances)
        else:
            decoded = parse_v2(payload, schema, max_instances=self.max_instances)
        # A binary request is logged as the JSON request it stands for, once it is known to be valid.
        logged_request = None if length is None else _logged_binary_request(payload)
        outputs, reading = self._predict(decoded)
        if protocol == "v1":
            result = v1_answer(
                model=served.name,
                version=served.version,
                arm=served.arm,
                labels=reading.labels,
                probabilities=reading.probabilities,
                first_output=outputs[0][1],
            )
            encoded = encode_json(result)
            return 200, _Answer(encoded, logged_request, encoded, None)
        result = v2_answer(
            model=served.name,
            version=served.version,
            request_id=decoded.id if decoded.id is not None else request_id,
            outputs=outputs,
            requested=decoded.outputs,
        )
        logged = encode_json(result)
        binary = binary_outputs(payload, [output["name"] for output in result["outputs"]])
        content, length_out = binary_response(result, binary)
        return 200, _Answer(content, logged_request, logged, length_out)

    def _predict(self, decoded: DecodedRequest) -> tuple[list[tuple[str, np.ndarray]], OutputReading]:
        served = self.served
        try:
            outputs = served.model.predict(decoded.data)
        except Exception as exc:
            raise _PredictorError(f"model failed to predict: {type(exc).__name__}: {exc}") from exc
        if not outputs:
            raise _PredictorError("model returned no output")
        reading = read_outputs(outputs, decoded.rows, served.outputs, served.threshold)
        if reading.problem is not None:
            raise _PredictorError(f"model returned an unusable answer: {reading.problem}")
        return outputs, reading

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


SHADOW_HOST_SUFFIX = "-shadow"


def is_shadow_host(host: str) -> bool:
    """Whether a ``Host`` / authority is a proxy's mirrored copy: Envoy (and so Istio) appends
    ``-shadow`` to the host part, before any port (``a:8080`` → ``a-shadow:8080``)."""
    name = host.strip().lower()
    if re.fullmatch(r".*:[0-9]+", name):
        name = name.rpartition(":")[0]
    return name.endswith(SHADOW_HOST_SUFFIX)


def _logged_binary_request(payload: dict[str, Any]) -> bytes:
    """The JSON form of a binary request, for the payload log; its binary data may hold values JSON
    cannot carry (NaN, infinities) in a tensor the model did not read: refused like a JSON ``NaN``."""
    try:
        return encode_json(payload)
    except ValueError:
        raise RequestError(UNPROCESSABLE, "the binary request holds NaN or infinite values") from None


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


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlcanary.serving.local.model_server",
        description="Serve one MLflow model version over KServe's V1 and V2 protocols.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--name", required=True, help="registered model name (also the name in URL paths)")
    parser.add_argument("--version", required=True, help="registered model version to serve")
    parser.add_argument(
        "--arm", required=True, help="arm label reported in events, e.g. champion or candidate"
    )
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI")
    parser.add_argument(
        "--registry-uri", default=None, help="MLflow registry URI (default: the tracking URI)"
    )
    parser.add_argument(
        "--collector-url", default=None, help="where to POST inference events (default: none)"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="label = P(positive) >= threshold")
    parser.add_argument(
        "--outputs", default=None, help="model.outputs as JSON: which outputs hold the label and probability"
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--max-instances", type=int, default=DEFAULT_MAX_INSTANCES)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be within 1-65535, got {args.port}")
    if not (0.0 <= args.threshold <= 1.0 and math.isfinite(args.threshold)):
        parser.error(f"--threshold must be within [0, 1], got {args.threshold}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Load the model version from MLflow and serve it until SIGTERM/SIGINT (exit code 0)."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    import uvicorn

    try:
        outputs = OutputNames.model_validate_json(args.outputs) if args.outputs else OutputNames()
        served = _load(args)
    except Exception as exc:
        # One line, no traceback: `up` and `release` report it as the reason the arm cannot serve.
        reason = (
            " ".join(str(exc).split()) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
        )
        print(f"{LOAD_FAILED_PREFIX} {args.name} v{args.version}: {reason}", file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    served = replace(served, outputs=outputs)
    sink: EventSink | None = None
    if args.collector_url:
        sink = PayloadLogger(args.collector_url)
    app = create_app(served, sink=sink, max_body_bytes=args.max_body_bytes, max_instances=args.max_instances)
    logger.info(
        "serving %s v%s as %s on http://%s:%d", served.name, served.version, served.arm, args.host, args.port
    )
    # uvicorn turns SIGTERM into a graceful shutdown, which runs the lifespan that closes the sink.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        access_log=False,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return 0


def _load(args: argparse.Namespace) -> ServedModel:
    # Imported here so the server module stays importable without MLflow.
    from mlflow import MlflowClient

    from mlcanary.registry.model_loader import load_registered_model

    registry_uri = args.registry_uri or args.tracking_uri
    client = MlflowClient(tracking_uri=args.tracking_uri, registry_uri=registry_uri)
    scorer = load_registered_model(
        client, args.tracking_uri, args.name, str(args.version), threshold=args.threshold
    )
    return ServedModel(
        name=args.name, version=str(args.version), arm=args.arm, threshold=args.threshold, scorer=scorer
    )


if __name__ == "__main__":
    raise SystemExit(main())
