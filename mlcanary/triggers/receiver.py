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
:func:`mlcanary.triggers.server.run_webhook`); it is never logged, and neither are signatures.

The rest of the receiver, one job per module: :mod:`~mlcanary.triggers.signature` (the HMAC),
:mod:`~mlcanary.triggers.delivery_log` (replay protection), :mod:`~mlcanary.triggers.events` (the
payloads), :mod:`~mlcanary.triggers.prefect_events` (the Prefect event and its emitter),
:mod:`~mlcanary.triggers.registration` (``webhook register``; the only place ``mlflow`` is imported,
inside the function) and :mod:`~mlcanary.triggers.server` (``mlcanary webhook``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlcanary.runtime.http_body import BodyTooLargeError, read_limited_body
from mlcanary.triggers.delivery_log import DeliveryLog, MemoryDeliveryLog
from mlcanary.triggers.events import DEFAULT_CANDIDATE_ALIAS, MalformedEventError, WebhookEvent, parse_event
from mlcanary.triggers.signature import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE_S: Final = 300.0
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
_RETRY_AFTER_S = "2"
_DELIVERY_ID_RE = re.compile(r"[\x21-\x7e]{1,200}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")


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


@dataclass(frozen=True)
class _Refusal:
    status: int
    reason: str
    message: str


def _authenticate(
    headers: Mapping[str, str], body: bytes, secret: str, now: float, tolerance_s: float
) -> str | _Refusal:
    """The delivery id of a well-formed, signed and fresh delivery, or why it is refused (checks 2-4)."""
    delivery_id = headers.get(DELIVERY_ID_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    if delivery_id is None or timestamp is None:
        return _Refusal(400, "missing_headers", f"{DELIVERY_ID_HEADER} and {TIMESTAMP_HEADER} are required")
    if not _DELIVERY_ID_RE.fullmatch(delivery_id):
        return _Refusal(400, "bad_headers", f"malformed {DELIVERY_ID_HEADER}")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        return _Refusal(400, "bad_headers", f"{TIMESTAMP_HEADER} must be unix seconds")
    signature = headers.get(SIGNATURE_HEADER)
    if signature is None:
        return _Refusal(401, "bad_signature", f"{SIGNATURE_HEADER} is required")
    if not verify_signature(secret, delivery_id, timestamp, body, signature):
        return _Refusal(401, "bad_signature", "signature does not match")
    skew = int(timestamp) - now
    if skew < -tolerance_s:
        return _Refusal(401, "stale", "timestamp outside the tolerance window (stale)")
    if skew > tolerance_s:
        return _Refusal(401, "future", "timestamp outside the tolerance window (future)")
    return delivery_id


def _count(stats: WebhookStats, outcome: str, event: WebhookEvent) -> None:
    """Count and log a handled delivery ('duplicate', 'emitted' or 'accepted')."""
    delivery_id = event.delivery_id
    if outcome == "duplicate":
        stats.duplicates += 1
        logger.info("webhook %r: duplicate delivery dropped", delivery_id)
    elif outcome == "emitted":
        stats.emitted += 1
        logger.info("webhook %r: %s for %s version %s", delivery_id, event.kind, event.model, event.version)
    else:
        stats.accepted += 1
        logger.info("webhook %r: %s for %s recorded (no trigger)", delivery_id, event.kind, event.model)


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

        now = clock()
        checked = _authenticate(request.headers, body, secret, now, tolerance_s)
        if isinstance(checked, _Refusal):
            return reject(checked.status, checked.reason, checked.message)
        delivery_id = checked
        try:
            event = parse_event(body, delivery_id, candidate_alias, now)
        except MalformedEventError as exc:
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
        _count(stats, outcome, event)
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
