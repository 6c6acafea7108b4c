"""MLflow model-registry webhook receiver: verify, de-duplicate, turn ``@candidate`` into a Prefect event.

MLflow 3.17 delivers a registry event as ``POST <url>`` with a JSON body
``{"entity", "action", "timestamp", "data": {...}}`` and three headers (see
``mlflow/webhooks/delivery.py``):

* ``X-MLflow-Delivery-Id`` — a fresh UUID per event, **reused by every retry** of that event;
* ``X-MLflow-Timestamp`` — unix seconds (integer, as a string), also reused by retries;
* ``X-MLflow-Signature`` — ``v1,<base64 HMAC-SHA256(secret, "<delivery_id>.<timestamp>.<raw body>")>``.

MLflow retries (urllib3, 4 attempts in ~7 s) only on 429, 500, 502, 503 and 504; every other status
is final.

Endpoints of :func:`create_webhook_app`, checks in this order:

1. body larger than ``max_body_bytes`` → **413** (read in chunks; never buffered past the limit);
2. ``X-MLflow-Delivery-Id`` or ``X-MLflow-Timestamp`` missing or malformed (the id must be
   1–200 printable ASCII characters, the timestamp an integer) → **400**;
3. ``X-MLflow-Signature`` missing, not ``v1,...``, or not matching (wrong secret, tampered body,
   id or timestamp) → **401**; compared with :func:`hmac.compare_digest`;
4. timestamp more than ``tolerance_s`` away from the receiver's clock (stale or future) → **401**;
5. body not a UTF-8 JSON object of the envelope shape, or a handled event whose ``data`` lacks a
   string ``name``/``alias``/``version`` → **400**;
6. a signed event whose ``entity.action`` is not one of ``model_version_alias.created``,
   ``model_version_alias.deleted``, ``model_version.created`` → **202** ``{"status": "ignored"}``.
   It is a genuine delivery (someone subscribed the webhook to more events), so it is acknowledged
   rather than reported as a failure; MLflow would not retry a 4xx anyway, a 4xx would only make a
   healthy delivery look broken in MLflow's logs and ``test_webhook``;
7. replay check — only for events that passed 1–5, so unsigned traffic cannot burn delivery ids: an
   id already in the :class:`DeliveryLog` → **200** ``{"status": "duplicate"}`` and nothing is
   emitted. 200 (not 409) because the duplicate is normally MLflow's own retry of an event we
   already handled: the right answer to it is "done";
8. ``model_version_alias.created`` with the candidate alias (default ``candidate``) →
   ``emit(WebhookEvent(kind="candidate_set", ...))`` → **200** ``{"status": "emitted"}``. If
   ``emit`` raises, the delivery id is released again and the answer is **503** with
   ``Retry-After`` so MLflow retries; the error is logged by type and message, never a traceback to
   the client;
9. any other handled event (other aliases, alias deletion, version creation) is recorded in the
   delivery log and answered **200** ``{"status": "accepted"}`` without calling ``emit``: only
   ``@candidate`` starts a canary; the others are acknowledged so the subscription stays healthy.

No input produces a 5xx except a failing ``emit`` (503, retryable). ``GET /healthz`` → 200
``{"status": "ok"}``; ``GET /stats`` → counters since start (:class:`WebhookStats`).

The secret is a constructor argument (the process reads it from ``MLCANARY_WEBHOOK_SECRET``, see
:func:`run_webhook`); it is never logged, and neither are signatures. Importing this module has no
side effects; ``mlflow`` is imported only inside :func:`register_webhook`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import uvicorn
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlcanary.runtime.http_body import BodyTooLargeError, read_limited_body

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8095
DEFAULT_TOLERANCE_S = 300.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_SECRET_ENV = "MLCANARY_WEBHOOK_SECRET"
DEFAULT_CANDIDATE_ALIAS = "candidate"
DEFAULT_WEBHOOK_NAME = "mlcanary"
CANDIDATE_SET_EVENT = "mlcanary.model.candidate-set"
DELIVERY_LOG_FILENAME = "webhook-deliveries.db"
SUBSCRIBED_EVENTS: tuple[str, ...] = (
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version.created",
)
_RETRY_AFTER_S = "2"
_DELIVERY_ID_RE = re.compile(r"[\x21-\x7e]{1,200}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")
# Namespace for the Prefect event id derived from the delivery id (fixed; changing it breaks idempotency).
_EVENT_ID_NAMESPACE = uuid.UUID("5b0f6a64-8f0e-4d8a-9a44-6f1d2d0c7e51")

EventKind = Literal["candidate_set", "alias_created", "alias_deleted", "version_created"]


@dataclass(frozen=True)
class WebhookEvent:
    """A verified, de-duplicated registry event.

    ``version`` is a string (as MLflow sends it) or ``None`` for ``alias_deleted``, whose payload has
    no version; ``alias`` is ``None`` for ``version_created``. ``mlflow_timestamp`` is the ISO time
    from the body, ``received_at`` the receiver's unix time.
    """

    kind: EventKind
    model: str
    version: str | None
    alias: str | None
    delivery_id: str
    mlflow_timestamp: str | None = None
    received_at: float = 0.0


# --------------------------------------------------------------------------------------------------
# Signature


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow 3.17 sends for these headers and this raw body.

    Same bytes as ``mlflow.webhooks.delivery._generate_hmac_signature``:
    HMAC-SHA256 over ``f"{delivery_id}.{timestamp}.{payload}"`` (UTF-8), base64, prefixed ``v1,``.
    """
    content = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify_signature(secret: str, delivery_id: str, timestamp: str, body: bytes, provided: str) -> bool:
    """True iff ``provided`` is a well-formed ``v1,<base64>`` signature matching ``sign(...)``.

    Never raises; the digests are compared in constant time. Header values arrive latin-1 decoded,
    so non-ASCII input is compared as its raw bytes (and simply fails).
    """
    version, sep, encoded = provided.partition(",")
    if not sep or version.strip() != SIGNATURE_VERSION:
        return False
    try:
        given = base64.b64decode(encoded.strip().encode("latin-1"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    expected = base64.b64decode(sign(secret, delivery_id, timestamp, body).partition(",")[2])
    return hmac.compare_digest(expected, given)


# --------------------------------------------------------------------------------------------------
# Delivery log (replay protection)


class DeliveryLog(Protocol):
    """Remembers delivery ids already handled, so MLflow's retries and replays trigger nothing twice.

    ``claim`` is atomic: exactly one of several concurrent claims of the same id returns True.
    ``release`` forgets an id again (after a failed ``emit``, so MLflow's retry is processed).
    Implementations are thread-safe and bounded.
    """

    def claim(self, delivery_id: str) -> bool: ...

    def release(self, delivery_id: str) -> None: ...

    def __contains__(self, delivery_id: object) -> bool: ...

    def __len__(self) -> int: ...


class MemoryDeliveryLog:
    """In-process :class:`DeliveryLog` keeping the last ``max_entries`` ids (oldest evicted first).

    Eviction is safe in practice: an evicted id can only be replayed within the timestamp tolerance
    window, which would take more than ``max_entries`` deliveries inside that window. Lost on restart;
    use :class:`SqliteDeliveryLog` to survive one.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, delivery_id: str) -> bool:
        with self._lock:
            if delivery_id in self._ids:
                return False
            self._ids[delivery_id] = None
            while len(self._ids) > self._max:
                self._ids.popitem(last=False)
            return True

    def release(self, delivery_id: str) -> None:
        with self._lock:
            self._ids.pop(delivery_id, None)

    def __contains__(self, delivery_id: object) -> bool:
        with self._lock:
            return delivery_id in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


class SqliteDeliveryLog:
    """:class:`DeliveryLog` in a SQLite file, so a restarted receiver still drops MLflow's retries.

    One table with a UNIQUE delivery id; ``claim`` is ``INSERT OR IGNORE`` (atomic across threads and
    processes sharing the file). Keeps the newest ``max_entries`` rows. The parent directory is
    created if needed. Call :meth:`close` when done.
    """

    def __init__(self, path: str | Path, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max = max_entries
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS deliveries ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " delivery_id TEXT NOT NULL UNIQUE,"
            " received_at REAL NOT NULL)"
        )

    def claim(self, delivery_id: str) -> bool:
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO deliveries (delivery_id, received_at) VALUES (?, ?)",
                (delivery_id, time.time()),
            )
            if cursor.rowcount != 1:
                return False
            self._conn.execute(
                "DELETE FROM deliveries WHERE seq <= (SELECT MAX(seq) FROM deliveries) - ?", (self._max,)
            )
            return True

    def release(self, delivery_id: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM deliveries WHERE delivery_id = ?", (delivery_id,))

    def __contains__(self, delivery_id: object) -> bool:
        if not isinstance(delivery_id, str):
            return False
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
            return row is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def delivery_log(path: str | Path | None = None) -> DeliveryLog:
    """A :class:`SqliteDeliveryLog` at ``path`` when given, else a :class:`MemoryDeliveryLog`."""
    return SqliteDeliveryLog(path) if path is not None else MemoryDeliveryLog()


# --------------------------------------------------------------------------------------------------
# Payload shapes


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    entity: StrictStr
    action: StrictStr
    timestamp: StrictStr | None = None
    data: dict[str, Any]


class _AliasCreated(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    alias: StrictStr
    version: StrictStr


class _AliasDeleted(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    alias: StrictStr


class _VersionCreated(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    version: StrictStr


class _MalformedError(Exception):
    pass


def _parse_event(
    body: bytes, delivery_id: str, candidate_alias: str, received_at: float
) -> WebhookEvent | None:
    """The event in a verified body, ``None`` for an entity/action we do not handle.

    Raises :class:`_MalformedError` (→ 400) for anything that is not the documented shape.
    Versions must be strings, as MLflow sends them (an int would fail Prefect's str parameter).
    """
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _MalformedError("body is not UTF-8 JSON") from exc
    if not isinstance(raw, dict):
        raise _MalformedError("body is not a JSON object")
    try:
        envelope = _Envelope.model_validate(raw)
        key = f"{envelope.entity}.{envelope.action}"
        stamp = envelope.timestamp
        if key == "model_version_alias.created":
            created = _AliasCreated.model_validate(envelope.data)
            kind: EventKind = "candidate_set" if created.alias == candidate_alias else "alias_created"
            return WebhookEvent(
                kind, created.name, created.version, created.alias, delivery_id, stamp, received_at
            )
        if key == "model_version_alias.deleted":
            deleted = _AliasDeleted.model_validate(envelope.data)
            return WebhookEvent(
                "alias_deleted", deleted.name, None, deleted.alias, delivery_id, stamp, received_at
            )
        if key == "model_version.created":
            version = _VersionCreated.model_validate(envelope.data)
            return WebhookEvent(
                "version_created", version.name, version.version, None, delivery_id, stamp, received_at
            )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise _MalformedError(f"invalid payload: {where}: {first['msg']}") from exc
    return None


# --------------------------------------------------------------------------------------------------
# App


@dataclass
class WebhookStats:
    """Counters since the receiver started (a restart resets them; the SQLite delivery log persists)."""

    received: int = 0
    emitted: int = 0
    accepted: int = 0
    ignored: int = 0
    duplicates: int = 0
    emit_failures: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def create_webhook_app(
    *,
    secret: str,
    emit: Callable[[WebhookEvent], None],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    seen: DeliveryLog | None = None,
    clock: Callable[[], float] = time.time,
    candidate_alias: str = DEFAULT_CANDIDATE_ALIAS,
) -> Starlette:
    """The receiver as a Starlette app: ``POST /`` and ``POST /webhook``, ``GET /healthz``, ``GET /stats``.

    ``emit`` is called (in a worker thread) once per accepted ``@candidate_alias`` event and must raise
    to signal failure (→ 503, the delivery id is released so MLflow's retry is processed). ``seen``
    defaults to a fresh :class:`MemoryDeliveryLog`. ``clock`` returns unix seconds. Status codes are in
    the module docstring. Raises ``ValueError`` for an empty secret.
    """
    if not secret:
        raise ValueError("the webhook secret must be non-empty")
    if tolerance_s <= 0 or max_body_bytes <= 0:
        raise ValueError("tolerance_s and max_body_bytes must be positive")
    log: DeliveryLog = seen if seen is not None else MemoryDeliveryLog()
    stats = WebhookStats()

    def reject(status: int, reason: str, message: str) -> JSONResponse:
        stats.reject(reason)
        logger.info("webhook rejected (%d %s): %s", status, reason, message)
        return JSONResponse({"error": message}, status_code=status)

    def claim_and_emit(event: WebhookEvent) -> str:
        """Runs in a worker thread: 'duplicate', 'accepted', 'emitted'; raises if emit failed."""
        if not log.claim(event.delivery_id):
            return "duplicate"
        if event.kind != "candidate_set":
            return "accepted"
        try:
            emit(event)
        except BaseException:
            log.release(event.delivery_id)
            raise
        return "emitted"

    async def receive(request: Request) -> JSONResponse:
        stats.received += 1
        try:
            body = await read_limited_body(request, max_body_bytes)
        except BodyTooLargeError:
            return reject(413, "oversize", f"body exceeds {max_body_bytes} bytes")
        except ClientDisconnect:
            return reject(400, "disconnect", "client disconnected")

        delivery_id = request.headers.get(DELIVERY_ID_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if delivery_id is None or timestamp is None:
            return reject(400, "missing_headers", f"{DELIVERY_ID_HEADER} and {TIMESTAMP_HEADER} are required")
        if not _DELIVERY_ID_RE.fullmatch(delivery_id):
            return reject(400, "bad_headers", f"malformed {DELIVERY_ID_HEADER}")
        if not _TIMESTAMP_RE.fullmatch(timestamp):
            return reject(400, "bad_headers", f"{TIMESTAMP_HEADER} must be unix seconds")

        signature = request.headers.get(SIGNATURE_HEADER)
        if signature is None:
            return reject(401, "bad_signature", f"{SIGNATURE_HEADER} is required")
        if not verify_signature(secret, delivery_id, timestamp, body, signature):
            return reject(401, "bad_signature", "signature does not match")

        now = clock()
        skew = int(timestamp) - now
        if skew < -tolerance_s:
            return reject(401, "stale", "timestamp outside the tolerance window (stale)")
        if skew > tolerance_s:
            return reject(401, "future", "timestamp outside the tolerance window (future)")

        try:
            event = _parse_event(body, delivery_id, candidate_alias, now)
        except _MalformedError as exc:
            return reject(400, "malformed", str(exc))
        if event is None:
            stats.ignored += 1
            logger.info("webhook %r: event not handled, ignored", delivery_id)
            return JSONResponse({"status": "ignored", "delivery_id": delivery_id}, status_code=202)

        try:
            outcome = await run_in_threadpool(claim_and_emit, event)
        except Exception as exc:
            stats.emit_failures += 1
            logger.warning(
                "webhook %r: emitting %s for %s v%s failed (%s: %s); answering 503 so MLflow retries",
                delivery_id,
                event.kind,
                event.model,
                event.version,
                type(exc).__name__,
                exc,
            )
            return JSONResponse(
                {"error": "could not forward the event; retry later"},
                status_code=503,
                headers={"Retry-After": _RETRY_AFTER_S},
            )
        if outcome == "duplicate":
            stats.duplicates += 1
            logger.info("webhook %r: duplicate delivery dropped", delivery_id)
        elif outcome == "emitted":
            stats.emitted += 1
            logger.info(
                "webhook %r: %s for %s version %s", delivery_id, event.kind, event.model, event.version
            )
        else:
            stats.accepted += 1
            logger.info("webhook %r: %s for %s recorded (no trigger)", delivery_id, event.kind, event.model)
        return JSONResponse({"status": outcome, "delivery_id": delivery_id, "kind": event.kind})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def get_stats(request: Request) -> JSONResponse:
        return JSONResponse(asdict(stats) | {"delivery_log_size": await run_in_threadpool(len, log)})

    app = Starlette(
        routes=[
            Route("/", receive, methods=["POST"]),
            Route("/webhook", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/stats", get_stats, methods=["GET"]),
        ]
    )
    app.state.stats = stats
    app.state.delivery_log = log
    return app


# --------------------------------------------------------------------------------------------------
# Prefect


class EmitError(RuntimeError):
    """The Prefect API could not be reached or refused the event (the receiver answers 503)."""


def prefect_event_id(delivery_id: str) -> uuid.UUID:
    """Deterministic Prefect event id for a delivery: a re-sent event keeps its id.

    Prefect's trigger service skips event ids it has already seen, so even if the first POST reached
    Prefect but its answer was lost, MLflow's retry cannot start a second ``start-canary`` run.
    """
    return uuid.uuid5(_EVENT_ID_NAMESPACE, delivery_id)


def prefect_event(event: WebhookEvent, occurred: datetime) -> dict[str, Any]:
    """The Prefect event (``prefect.events.schemas.events.Event`` field names) for a candidate event.

    ``resource`` carries ``prefect.resource.id = mlflow.model.<model>`` plus ``mlflow.model`` and
    ``mlflow.version`` labels (strings); ``payload`` carries model, version, alias, delivery id and the
    MLflow timestamp, for ``{{ event.payload.version }}`` templates in deployment triggers.
    """
    return {
        "id": str(prefect_event_id(event.delivery_id)),
        "occurred": occurred.isoformat(),
        "event": CANDIDATE_SET_EVENT,
        "resource": {
            "prefect.resource.id": f"mlflow.model.{event.model}",
            "prefect.resource.name": event.model,
            "mlflow.model": event.model,
            "mlflow.version": event.version or "",
        },
        "payload": {
            "model": event.model,
            "version": event.version,
            "alias": event.alias,
            "delivery_id": event.delivery_id,
            "mlflow_timestamp": event.mlflow_timestamp,
        },
    }


class PrefectEventEmitter:
    """``emit`` callable posting each event to ``POST {api_url}/events`` as a one-element JSON list.

    ``api_url`` is the Prefect API root (``PREFECT_API_URL``, e.g. ``http://127.0.0.1:4200/api``).
    Raises :class:`EmitError` on a transport error or a non-2xx answer (Prefect answers 204).
    Thread-safe (one ``httpx.Client``); pass ``client`` to inject a transport in tests. ``close()``
    closes a client it created.
    """

    def __init__(
        self,
        api_url: str,
        *,
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = api_url.rstrip("/") + "/events"
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout_s)
        self._clock = clock

    def __call__(self, event: WebhookEvent) -> None:
        body = [prefect_event(event, self._clock())]
        try:
            response = self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise EmitError(f"Prefect API unreachable at {self.url}: {type(exc).__name__}") from exc
        if not response.is_success:
            raise EmitError(f"Prefect API answered {response.status_code} to POST {self.url}")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


# --------------------------------------------------------------------------------------------------
# Entrypoints


class WebhookConfigError(RuntimeError):
    """The receiver cannot start: e.g. the secret is missing from the environment."""


def secret_from_env(secret_env: str = DEFAULT_SECRET_ENV, environ: Mapping[str, str] | None = None) -> str:
    """The secret from ``environ`` (default ``os.environ``); :class:`WebhookConfigError` if unset or blank."""
    value = (environ if environ is not None else os.environ).get(secret_env, "")
    if not value.strip():
        raise WebhookConfigError(
            f"the webhook secret is not set: export {secret_env}=<secret> (the same secret the MLflow "
            "webhook was registered with); it is never read from a file in the repository"
        )
    return value


def run_webhook(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    secret_env: str = DEFAULT_SECRET_ENV,
    prefect_api_url: str,
    state_dir: str | Path,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "info",
    environ: Mapping[str, str] | None = None,
) -> None:
    """Serve the receiver with uvicorn until interrupted (blocking; access log off).

    Reads the secret from ``environ[secret_env]`` and raises :class:`WebhookConfigError` before
    binding anything if it is missing. Delivery ids persist in ``<state_dir>/webhook-deliveries.db``.
    """
    secret = secret_from_env(secret_env, environ)
    seen = SqliteDeliveryLog(Path(state_dir) / DELIVERY_LOG_FILENAME)
    emitter = PrefectEventEmitter(prefect_api_url)
    try:
        app = create_webhook_app(
            secret=secret, emit=emitter, tolerance_s=tolerance_s, max_body_bytes=max_body_bytes, seen=seen
        )
        logger.info("webhook receiver on http://%s:%d forwarding to %s", host, port, emitter.url)
        uvicorn.run(app, host=host, port=port, access_log=False, log_level=log_level)
    finally:
        emitter.close()
        seen.close()


def register_webhook(
    tracking_uri: str,
    url: str,
    secret: str,
    *,
    name: str = DEFAULT_WEBHOOK_NAME,
    events: Sequence[str] = SUBSCRIBED_EVENTS,
    max_pages: int = 100,
) -> str:
    """Create, or update in place, the MLflow webhook called ``name``; returns its id. Idempotent.

    Subscribes ``events`` (default: alias created/deleted and version created), sets ``url``, the
    secret and status ACTIVE. If several webhooks share ``name``, the first listed is updated and the
    rest are left alone. Listing is bounded to ``max_pages`` pages of 100.

    For an ``http://127.0.0.1`` receiver, the MLflow side (the server process, or this process for a
    ``sqlite:///`` URI) needs ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`` and
    ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https``; the server also needs a stable
    ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY``. Webhooks only *fire* through ``mlflow server``.
    Raises ``mlflow.exceptions.MlflowException`` on refusal.
    """
    from mlflow import MlflowClient  # heavy import, deferred to use

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    hook_events: list[Any] = list(events)  # MLflow types these as a Literal of event names
    existing_id: str | None = None
    page_token: str | None = None
    for _ in range(max_pages):
        page = client.list_webhooks(max_results=100, page_token=page_token)
        existing_id = next((hook.webhook_id for hook in page if hook.name == name), None)
        if existing_id is not None or not page.token:
            break
        page_token = page.token
    if existing_id is not None:
        updated = client.update_webhook(
            existing_id, url=url, events=hook_events, secret=secret, status="ACTIVE"
        )
        logger.info("updated MLflow webhook %s (%s) -> %s", name, updated.webhook_id, url)
        return str(updated.webhook_id)
    created = client.create_webhook(
        name=name,
        url=url,
        events=hook_events,
        secret=secret,
        description="mlcanary: starts a canary when @candidate is set",
    )
    logger.info("created MLflow webhook %s (%s) -> %s", name, created.webhook_id, url)
    return str(created.webhook_id)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlcanary.triggers.receiver serve|register``; the secret comes from ``--secret-env``."""
    parser = argparse.ArgumentParser(
        prog="python -m mlcanary.triggers.receiver", description="MLflow webhook receiver for mlcanary."
    )
    parser.add_argument("--secret-env", default=DEFAULT_SECRET_ENV)
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the receiver")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--prefect-api-url", default=os.environ.get("PREFECT_API_URL"), required=False)
    serve.add_argument("--state-dir", default=".mlcanary")
    serve.add_argument("--tolerance-s", type=float, default=DEFAULT_TOLERANCE_S)
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    register = sub.add_parser("register", help="create or update the MLflow webhook")
    register.add_argument("--tracking-uri", required=True)
    register.add_argument("--url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/webhook")
    register.add_argument("--name", default=DEFAULT_WEBHOOK_NAME)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "serve":
            if not args.prefect_api_url:
                raise WebhookConfigError("--prefect-api-url (or PREFECT_API_URL) is required")
            run_webhook(
                args.host,
                args.port,
                secret_env=args.secret_env,
                prefect_api_url=args.prefect_api_url,
                state_dir=args.state_dir,
                tolerance_s=args.tolerance_s,
                max_body_bytes=args.max_body_bytes,
                log_level=args.log_level,
            )
        else:
            webhook_id = register_webhook(
                args.tracking_uri, args.url, secret_from_env(args.secret_env), name=args.name
            )
            print(webhook_id)
    except WebhookConfigError as exc:
        print(f"error: {exc}")
        return 2
    return 0


__all__ = [
    "CANDIDATE_SET_EVENT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "DEFAULT_SECRET_ENV",
    "DEFAULT_TOLERANCE_S",
    "SUBSCRIBED_EVENTS",
    "DeliveryLog",
    "EmitError",
    "MemoryDeliveryLog",
    "PrefectEventEmitter",
    "SqliteDeliveryLog",
    "WebhookConfigError",
    "WebhookEvent",
    "WebhookStats",
    "create_webhook_app",
    "delivery_log",
    "main",
    "prefect_event",
    "prefect_event_id",
    "register_webhook",
    "run_webhook",
    "secret_from_env",
    "sign",
    "verify_signature",
]


if __name__ == "__main__":
    raise SystemExit(main())
