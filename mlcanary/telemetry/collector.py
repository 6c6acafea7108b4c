"""HTTP collector for KServe payload-logger CloudEvents and ground-truth feedback.

Endpoints of :func:`create_collector_app`:

* ``POST /`` and ``POST /events`` — one CloudEvent (binary mode, as KServe's logger sends, or
  structured mode with ``content-type: application/cloudevents+json``). **A 2xx means the event's
  rows are committed**: each half is merged into the store before the reply (see
  :mod:`mlcanary.telemetry.store`), so an acknowledged event survives a collector crash and pairing
  works across restarts. Replies: 200 ``{"id", "rows", "paired"}``; 400 ``{"error"}`` for a
  malformed event (do not retry); 413 for a body over the limit; 503 ``{"error"}`` with
  ``Retry-After`` when the store is unavailable (unreachable, locked beyond the busy timeout,
  full): nothing of the event was committed, retry. The collector needs no restart when the
  database comes back (the store reconnects).
* The same paths take a batch (batched mode, ``content-type: application/cloudevents-batch+json``,
  a JSON array of events in the JSON format, as our payload logger sends): each event is validated
  alone and **the valid ones are committed in one transaction** (see
  :mod:`mlcanary.telemetry.batch_ingest`). 200 ``{"events", "stored", "rows", "paired",
  "rejected": [{"index", "id", "error"}]}``: the ``stored`` events are committed, the ``rejected``
  ones (position in the array, id, why) are not and must not be re-sent as they are. 400 when the
  body is not a JSON array; 413 and 503 as above (503: re-send the whole batch — writes merge by
  ``(request id, instance)``, so whatever of it was already committed is not duplicated).
* ``POST /feedback`` — ``{"request_id": str, "label": 0|1, "instance_index"?: int}`` or a list of
  them, upserted in one transaction (the latest label wins). 200 ``{"recorded": n}``; 400/413/503
  as above.
* ``GET /healthz`` — 200 ``{"status": "ok"}`` when the store answers, else 503.
* ``GET /stats`` — counters since start plus pairing gauges read from the store (requests waiting
  for their other half, and those older than ``pairing_timeout_s``, i.e. unpaired).

Run it with ``mlcanary collector`` (address and database from the configuration), as the local
stack does with ``python -m mlcanary.telemetry.collector --host H --port P --db-url URL``, or with
:func:`run_collector`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlcanary.rollout.model_outputs import OutputNames
from mlcanary.runtime.http_body import BodyTooLargeError, read_limited_body
from mlcanary.telemetry.batch_ingest import ingest_batch
from mlcanary.telemetry.cloudevents_ingest import MalformedEvent, content_mode, parse_event, rows_from_event
from mlcanary.telemetry.events import InferenceEvent
from mlcanary.telemetry.log_records import Feedback
from mlcanary.telemetry.log_tables import MAX_REQUEST_ID_LENGTH
from mlcanary.telemetry.store import InferenceLogStore

logger = logging.getLogger(__name__)

DEFAULT_PAIRING_TIMEOUT_S = 30.0
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: How long a write waits for another connection's lock before the collector answers 503: well
#: under the payload logger's 5 s request timeout, so the sender hears "retry later" rather than
#: giving up on a request that is still waiting.
DEFAULT_BUSY_TIMEOUT_MS = 2_000
_RETRY_AFTER_S = "1"

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FeedbackIn(BaseModel):
    """One ground-truth label as posted to ``/feedback``; unknown fields are ignored."""

    request_id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_LENGTH)
    label: int = Field(strict=True, ge=0, le=1)
    instance_index: int = Field(0, ge=0, strict=True)


_FEEDBACK_ADAPTER: TypeAdapter[FeedbackIn | list[FeedbackIn]] = TypeAdapter(FeedbackIn | list[FeedbackIn])


@dataclass
class CollectorStats:
    """Counters since the collector started (reset by a restart; the store keeps the rows)."""

    events_accepted: int = 0
    batches: int = 0
    request_events: int = 0
    response_events: int = 0
    malformed: int = 0
    oversize: int = 0
    store_errors: int = 0
    rows_written: int = 0
    paired_rows_written: int = 0
    feedback_recorded: int = 0
    feedback_rejected: int = 0


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(
            str(part) for part in item["loc"] if part not in ("FeedbackIn", "list[FeedbackIn]")
        )
        parts.append(f"{location or 'body'}: {item['msg']}")
    return "invalid feedback: " + "; ".join(parts[:5])


def create_collector_app(
    store: InferenceLogStore,
    *,
    pairing_timeout_s: float = DEFAULT_PAIRING_TIMEOUT_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    clock: Clock = _utc_now,
    resolve_arm: Callable[[InferenceEvent], InferenceEvent] | None = None,
    outputs: OutputNames | None = None,
    threshold: float = 0.5,
) -> Starlette:
    """The collector as a Starlette app writing to ``store`` (see the module docstring for the API).

    ``pairing_timeout_s`` only splits the ``/stats`` gauges: a half waiting longer than that for its
    other half counts as unpaired (it is stored all the same). ``max_body_bytes`` bounds every
    request body. ``clock`` stamps ``received_at``. ``resolve_arm`` fills in the arm and version of
    events that lack them (KServe's, in a cluster: :class:`mlcanary.serving.kserve.arms.ArmResolver`).
    ``outputs`` / ``threshold``: which V2 outputs hold the label and the probability
    (``model.outputs``; see :func:`mlcanary.telemetry.cloudevents_ingest.rows_from_event`).
    The app keeps no state that matters beyond ``/stats`` counters, so several collectors may share
    one PostgreSQL store.
    """
    if pairing_timeout_s <= 0:
        raise ValueError("pairing_timeout_s must be positive")
    if max_body_bytes <= 0:
        raise ValueError("max_body_bytes must be positive")
    stats = CollectorStats()

    async def ingest(request: Request) -> Response:
        try:
            body = await read_limited_body(request, max_body_bytes)
        except BodyTooLargeError:
            stats.oversize += 1
            return _error(413, f"event body exceeds {max_body_bytes} bytes")
        except ClientDisconnect:
            return Response(status_code=400)
        received_at = clock()
        if content_mode(request.headers) == "batched":
            return await ingest_batch_body(body, received_at)
        try:
            event = parse_event(request.headers, body, received_at=received_at)
            if resolve_arm is not None and event.arm is None:
                event = await run_in_threadpool(resolve_arm, event)
            rows = rows_from_event(event, received_at=received_at, outputs=outputs, threshold=threshold)
        except MalformedEvent as exc:
            stats.malformed += 1
            return _error(400, str(exc))
        try:
            result = await run_in_threadpool(store.write_rows, rows)
        except (DataError, IntegrityError) as exc:
            # The database refused these values; re-sending them would fail the same way.
            stats.malformed += 1
            logger.warning("event %s rejected by the store: %s", event.ce_id, exc.orig)
            return _error(400, f"event rejected by the store: {type(exc.orig).__name__}")
        except SQLAlchemyError as exc:
            stats.store_errors += 1
            logger.warning("store unavailable while writing event %s: %s", event.ce_id, exc)
            return _error(503, "inference log unavailable; retry later", **{"Retry-After": _RETRY_AFTER_S})
        stats.events_accepted += 1
        if event.is_request:
            stats.request_events += 1
        else:
            stats.response_events += 1
        stats.rows_written += result.rows
        stats.paired_rows_written += result.paired
        return JSONResponse({"id": event.ce_id, "rows": result.rows, "paired": result.paired})

    async def ingest_batch_body(body: bytes, received_at: datetime) -> Response:
        try:
            outcome = await run_in_threadpool(
                ingest_batch,
                store,
                body,
                received_at=received_at,
                resolve_arm=resolve_arm,
                outputs=outputs,
                threshold=threshold,
            )
        except MalformedEvent as exc:
            stats.malformed += 1
            return _error(400, str(exc))
        except SQLAlchemyError as exc:
            stats.store_errors += 1
            logger.warning("store unavailable while writing a batch: %s", exc)
            return _error(503, "inference log unavailable; retry later", **{"Retry-After": _RETRY_AFTER_S})
        stats.batches += 1
        stats.events_accepted += len(outcome.stored)
        requests = sum(1 for event in outcome.stored if event.is_request)
        stats.request_events += requests
        stats.response_events += len(outcome.stored) - requests
        stats.malformed += len(outcome.rejected)
        stats.rows_written += outcome.rows
        stats.paired_rows_written += outcome.paired
        if outcome.rejected:
            first = outcome.rejected[0]
            logger.warning(
                "batch: %d event(s) rejected, e.g. #%d (%s): %s",
                len(outcome.rejected),
                first.index,
                first.id,
                first.error,
            )
        return JSONResponse(outcome.to_json())

    async def post_feedback(request: Request) -> Response:
        try:
            body = await read_limited_body(request, max_body_bytes)
        except BodyTooLargeError:
            stats.oversize += 1
            return _error(413, f"feedback body exceeds {max_body_bytes} bytes")
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            parsed = _FEEDBACK_ADAPTER.validate_json(body)
        except ValidationError as exc:
            stats.feedback_rejected += 1
            if any(item["type"] == "json_invalid" for item in exc.errors()):
                return _error(400, "feedback body is not valid JSON")
            return _error(400, _validation_message(exc))
        items = parsed if isinstance(parsed, list) else [parsed]
        feedback_items = [Feedback(item.request_id, item.label, item.instance_index) for item in items]
        try:
            recorded = await run_in_threadpool(store.record_feedback_many, feedback_items, now=clock())
        except SQLAlchemyError as exc:
            stats.store_errors += 1
            logger.warning("store unavailable while recording feedback: %s", exc)
            return _error(503, "inference log unavailable; retry later", **{"Retry-After": _RETRY_AFTER_S})
        stats.feedback_recorded += recorded
        return JSONResponse({"recorded": recorded})

    async def healthz(_request: Request) -> Response:
        try:
            await run_in_threadpool(store.ping)
        except SQLAlchemyError as exc:
            logger.warning("health check: store unavailable: %s", exc)
            return JSONResponse({"status": "unavailable", "error": "inference log unavailable"}, 503)
        return JSONResponse({"status": "ok"})

    async def get_stats(_request: Request) -> Response:
        payload: dict[str, Any] = asdict(stats)
        payload["pairing_timeout_s"] = pairing_timeout_s
        cutoff = clock() - timedelta(seconds=pairing_timeout_s)
        try:
            pending = await run_in_threadpool(store.pending_counts, cutoff)
        except SQLAlchemyError as exc:
            logger.warning("stats: store unavailable: %s", exc)
            payload["store_error"] = "inference log unavailable"
        else:
            payload.update(asdict(pending))
        return JSONResponse(payload)

    routes = [
        Route("/", ingest, methods=["POST"]),
        Route("/events", ingest, methods=["POST"]),
        Route("/feedback", post_feedback, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/stats", get_stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.stats = stats
    app.state.store = store
    return app


def run_collector(
    host: str,
    port: int,
    db_url: str,
    *,
    pairing_timeout_s: float = DEFAULT_PAIRING_TIMEOUT_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "info",
    resolve_arm: Callable[[InferenceEvent], InferenceEvent] | None = None,
    outputs: OutputNames | None = None,
    threshold: float = 0.5,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
) -> None:
    """Serve the collector with uvicorn until interrupted (blocking; access log off).

    The CLI (``mlcanary collector``) and the local stack pass the configured address and
    ``telemetry.store_url``. ``busy_timeout_ms``: how long a write waits for a lock another
    connection holds before the event is answered 503 (see :class:`InferenceLogStore`).
    """
    store = InferenceLogStore(db_url, busy_timeout_ms=busy_timeout_ms)
    try:
        app = create_collector_app(
            store,
            pairing_timeout_s=pairing_timeout_s,
            max_body_bytes=max_body_bytes,
            resolve_arm=resolve_arm,
            outputs=outputs,
            threshold=threshold,
        )
        logger.info("collector on http://%s:%d writing to %s", host, port, store.url)
        uvicorn.run(app, host=host, port=port, access_log=False, log_level=log_level)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``python -m mlcanary.telemetry.collector``."""
    parser = argparse.ArgumentParser(
        prog="python -m mlcanary.telemetry.collector",
        description="Collect KServe payload-logger CloudEvents and feedback into the inference log.",
    )
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db-url", required=True, help="SQLAlchemy URL of the inference log")
    parser.add_argument("--pairing-timeout-s", type=float, default=DEFAULT_PAIRING_TIMEOUT_S)
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument("--outputs", default=None, help="model.outputs as JSON (label / probability names)")
    parser.add_argument("--threshold", type=float, default=0.5, help="label = P(positive) >= threshold")
    parser.add_argument(
        "--busy-timeout-ms",
        type=int,
        default=DEFAULT_BUSY_TIMEOUT_MS,
        help="how long a write waits for a database lock before the event is answered 503",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_collector(
        args.host,
        args.port,
        args.db_url,
        pairing_timeout_s=args.pairing_timeout_s,
        max_body_bytes=args.max_body_bytes,
        log_level=args.log_level,
        outputs=OutputNames.model_validate_json(args.outputs) if args.outputs else None,
        threshold=args.threshold,
        busy_timeout_ms=args.busy_timeout_ms,
    )


__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PAIRING_TIMEOUT_S",
    "CollectorStats",
    "FeedbackIn",
    "create_collector_app",
    "main",
    "run_collector",
]


if __name__ == "__main__":
    main()
