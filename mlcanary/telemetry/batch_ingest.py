"""A batch of CloudEvents (batched content mode) into the inference log in one transaction.

The payload logger of the local model servers posts ``application/cloudevents-batch+json``: a JSON
array of events in CloudEvents' JSON format. The collector stores a batch this way:

* every event is validated on its own (:func:`parse_batch`, the rules of
  :func:`~mlcanary.telemetry.cloudevents_ingest.parse_event` and
  :func:`~mlcanary.telemetry.cloudevents_ingest.rows_from_event`); an event that fails is
  **rejected, the others are stored** — one bad event (say, a payload the collector cannot read)
  must not cost the release the evidence of the rest of its batch. Each rejection names the
  event's position in the array, its id and why;
* the rows of all valid events are merged in **one** ``write_rows`` transaction (the rollup marks
  included), so a batch costs one commit, and either all of them are committed or none; the request
  and response halves of an instance that are both in the batch are folded into one row first
  (:func:`combine_halves`, by the store's own merge rules), so the store writes each row once;
* if the database refuses that transaction for its values (``DataError``/``IntegrityError``,
  which re-sending cannot fix), each event is written alone so that only the ones it refuses are
  rejected;
* any other database error propagates (the collector answers 503 and the sender retries the whole
  batch: writes merge by ``(request_id, instance_index)``, so what was already committed is not
  duplicated).

Pure apart from the one ``store`` it writes to; no HTTP here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError

from mlcanary.rollout.model_outputs import OutputNames
from mlcanary.telemetry.cloudevents_ingest import MalformedEvent, event_from_structured, rows_from_event
from mlcanary.telemetry.events import InferenceEvent
from mlcanary.telemetry.store import InferenceLogStore, InferenceRow

ArmResolver = Callable[[InferenceEvent], InferenceEvent]


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event of a batch that was not stored: its position in the array, its ``id`` when it
    had a readable one, and why (a message for the sender; the event must not be re-sent as is)."""

    index: int
    id: str | None
    error: str

    def to_json(self) -> dict[str, Any]:
        """``{"index", "id", "error"}``, as the collector answers it."""
        return {"index": self.index, "id": self.id, "error": self.error}


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """A valid event of a batch, with its position and the rows it contributes."""

    index: int
    event: InferenceEvent
    rows: list[InferenceRow]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What became of a batch: ``stored`` events (their rows committed), ``rows`` written and
    ``paired`` as :class:`~mlcanary.telemetry.store.WriteResult` counts them, and the rejections.
    ``stored + len(rejected)`` is the number of events in the batch."""

    stored: list[InferenceEvent] = field(default_factory=list)
    rows: int = 0
    paired: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The collector's 200 answer: ``{"events", "stored", "rows", "paired", "rejected": [...]}``."""
        return {
            "events": len(self.stored) + len(self.rejected),
            "stored": len(self.stored),
            "rows": self.rows,
            "paired": self.paired,
            "rejected": [rejection.to_json() for rejection in self.rejected],
        }


def decode_batch(body: bytes) -> list[Any]:
    """The JSON array of a batched-mode body (possibly empty); :class:`MalformedEvent` for a body
    that is not JSON or not an array (the whole batch is then refused: no event can be told apart)."""
    try:
        document = json.loads(body, parse_constant=lambda _token: None)
    except (ValueError, RecursionError):
        raise MalformedEvent("CloudEvents batch is not valid JSON") from None
    if not isinstance(document, list):
        raise MalformedEvent("CloudEvents batch must be a JSON array of events")
    return document


def _event_id(document: Any) -> str | None:
    if isinstance(document, dict) and isinstance(document.get("id"), str):
        return document["id"]
    return None


def parse_batch(
    documents: list[Any],
    *,
    received_at: datetime,
    resolve_arm: ArmResolver | None = None,
    outputs: OutputNames | None = None,
    threshold: float = 0.5,
) -> tuple[list[ParsedEvent], list[Rejection]]:
    """Validate each event of a decoded batch; the valid ones with their rows, and the rejections.

    ``resolve_arm`` fills in the arm of events that lack one (as for single events); ``outputs``
    and ``threshold`` as in :func:`~mlcanary.telemetry.cloudevents_ingest.rows_from_event`.
    """
    parsed: list[ParsedEvent] = []
    rejected: list[Rejection] = []
    for index, document in enumerate(documents):
        try:
            event = event_from_structured(document, received_at=received_at)
            if resolve_arm is not None and event.arm is None:
                event = resolve_arm(event)
            rows = rows_from_event(event, received_at=received_at, outputs=outputs, threshold=threshold)
        except MalformedEvent as exc:
            rejected.append(Rejection(index, _event_id(document), str(exc)))
            continue
        parsed.append(ParsedEvent(index, event, rows))
    return parsed, rejected


#: Columns the store keeps from the first half that has them, and from the last one.
_FIRST_WINS = ("model", "source", "protocol")
_LAST_WINS = ("arm", "version", "status_code", "latency_ms", "features", "prediction", "probability")


def combine_halves(rows: list[InferenceRow]) -> list[InferenceRow]:
    """The same rows with every request half and response half of one instance that arrived
    together (same key, same ``received_at``) folded into one ``"both"`` row, by the store's own
    merge rules (:class:`~mlcanary.telemetry.store.InferenceRow`): writing the result leaves the
    log exactly as writing ``rows`` in order would, with half the rows to write when a batch holds
    both halves of its requests. Rows that cannot be folded (another arrival time, a half without
    ``event_time``) are kept as they are, in order, for the store to merge."""
    result: list[InferenceRow] = []
    latest: dict[tuple[bool, str, int], int] = {}
    for row in rows:
        key = (row.shadow, row.request_id, row.instance_index)
        position = latest.get(key)
        if position is not None and _foldable(result[position], row):
            result[position] = _fold(result[position], row)
            continue
        latest[key] = len(result)
        result.append(row)
    return result


def _foldable(earlier: InferenceRow, later: InferenceRow) -> bool:
    return (
        earlier.received_at == later.received_at
        and earlier.event_time is not None
        and later.event_time is not None
    )


def _carries_request(row: InferenceRow) -> bool:
    return row.half in ("request", "both")


def _fold(earlier: InferenceRow, later: InferenceRow) -> InferenceRow:
    """``later`` merged into ``earlier`` as the store's upsert would (see :func:`combine_halves`)."""
    halves = {earlier.half, later.half}
    values: dict[str, Any] = {
        name: _first(getattr(earlier, name), getattr(later, name)) for name in _FIRST_WINS
    }
    values |= {name: _first(getattr(later, name), getattr(earlier, name)) for name in _LAST_WINS}
    # A request's time is the moment of inference: the last request half's wins, else the first.
    values["event_time"] = later.event_time if _carries_request(later) else earlier.event_time
    values["half"] = halves.pop() if len(halves) == 1 else "both"
    return replace(earlier, **values)


def _first(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def write_batch(store: InferenceLogStore, parsed: list[ParsedEvent]) -> BatchOutcome:
    """Merge the rows of ``parsed`` in one transaction (see the module docstring for what happens
    when the database refuses it), each instance's two halves folded into one row when both are
    in the batch (:func:`combine_halves`). Raises SQLAlchemy's error when the database is
    unavailable."""
    if not parsed:
        return BatchOutcome()
    try:
        result = store.write_rows(combine_halves([row for item in parsed for row in item.rows]))
    except (DataError, IntegrityError):
        return _write_one_by_one(store, parsed)
    return BatchOutcome(stored=[item.event for item in parsed], rows=result.rows, paired=result.paired)


def _write_one_by_one(store: InferenceLogStore, parsed: list[ParsedEvent]) -> BatchOutcome:
    stored: list[InferenceEvent] = []
    rejected: list[Rejection] = []
    rows = paired = 0
    for item in parsed:
        try:
            result = store.write_rows(item.rows)
        except (DataError, IntegrityError) as exc:
            rejected.append(Rejection(item.index, item.event.ce_id, _refusal(exc)))
            continue
        stored.append(item.event)
        rows, paired = rows + result.rows, paired + result.paired
    return BatchOutcome(stored=stored, rows=rows, paired=paired, rejected=rejected)


def _refusal(exc: DataError | IntegrityError) -> str:
    return f"event rejected by the store: {type(exc.orig).__name__}"


def ingest_batch(
    store: InferenceLogStore,
    body: bytes,
    *,
    received_at: datetime,
    resolve_arm: ArmResolver | None = None,
    outputs: OutputNames | None = None,
    threshold: float = 0.5,
) -> BatchOutcome:
    """Decode, validate and store one batched-mode body (blocking: run it off the event loop).

    Raises :class:`MalformedEvent` when the body is not a JSON array, SQLAlchemy's error when the
    database is unavailable (nothing of the batch was committed by the failed transaction).
    Rejections of single events are in the outcome, sorted by position.
    """
    parsed, rejected = parse_batch(
        decode_batch(body),
        received_at=received_at,
        resolve_arm=resolve_arm,
        outputs=outputs,
        threshold=threshold,
    )
    outcome = write_batch(store, parsed)
    if not rejected:
        return outcome
    every = sorted([*rejected, *outcome.rejected], key=lambda rejection: rejection.index)
    return BatchOutcome(stored=outcome.stored, rows=outcome.rows, paired=outcome.paired, rejected=every)


__all__ = [
    "BatchOutcome",
    "ParsedEvent",
    "Rejection",
    "combine_halves",
    "decode_batch",
    "ingest_batch",
    "parse_batch",
    "write_batch",
]
