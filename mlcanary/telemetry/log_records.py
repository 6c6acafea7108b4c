"""What the inference log stores and returns, as plain records: a row or half-row to write, a
label, and the outcomes of writes and counts (:class:`~mlcanary.telemetry.store.InferenceLogStore`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

RowHalf = Literal["request", "response", "both"]
Features = dict[str, Any] | list[Any]


@dataclass(frozen=True, slots=True)
class InferenceRow:
    """One predicted instance, or one half of it, as written to ``inference_log``.

    ``half`` says what the row carries: ``"request"`` (features, from the request event),
    ``"response"`` (status, latency, prediction, probability, from the response event) or
    ``"both"`` (a complete row). Writing merges into an existing row with the same
    ``(request_id, instance_index)``: a non-``None`` value replaces the stored one, ``None`` never
    erases; ``received_at`` keeps the earliest arrival; ``event_time`` prefers the request's.
    ``instance_index`` is the position in the request batch, 0 for a single instance; every event
    writes index 0, so index 0 stands for the whole HTTP request. ``features`` is a JSON object
    (feature name → value) or, when names are unknown, a JSON list in model-input order.
    ``prediction`` is the class label; ``probability`` is the positive-class (index 1) probability.
    ``shadow`` rows (a mirrored copy's) go to ``shadow_log`` instead of ``inference_log``.
    """

    request_id: str
    instance_index: int
    model: str
    received_at: datetime
    half: RowHalf = "both"
    shadow: bool = False
    event_time: datetime | None = None
    arm: str | None = None
    version: str | None = None
    source: str | None = None
    protocol: str | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    features: Features | None = None
    prediction: int | None = None
    probability: float | None = None

    def to_params(self) -> dict[str, Any]:
        """Column values for an insert (the ``half`` becomes the two half-arrival timestamps)."""
        return {
            "request_id": self.request_id,
            "instance_index": self.instance_index,
            "received_at": self.received_at,
            "request_received_at": self.received_at if self.half in ("request", "both") else None,
            "response_received_at": self.received_at if self.half in ("response", "both") else None,
            "event_time": self.event_time,
            "model": self.model,
            "arm": self.arm,
            "version": self.version,
            "source": self.source,
            "protocol": self.protocol,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "features": self.features,
            "prediction": self.prediction,
            "probability": self.probability,
        }


@dataclass(frozen=True, slots=True)
class Feedback:
    """A ground-truth label for one instance; a later label for the same key replaces it."""

    request_id: str
    label: int
    instance_index: int = 0


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of :meth:`InferenceLogStore.write_rows`.

    ``rows`` is how many rows the call wrote; ``paired`` how many rows of the touched requests now
    carry both halves (a re-delivered half counts its rows again).
    """

    rows: int
    paired: int


@dataclass(frozen=True, slots=True)
class PendingCounts:
    """Requests (index-0 rows) still missing one half, split at a cut-off time.

    ``pending_*`` arrived at or after the cut-off and may still be completed; ``unpaired_*`` are
    older. An unpaired request usually means a failed inference (KServe logs only 200 responses) or
    a server that died mid-request; an unpaired response means request logging is off or lost.
    """

    pending_requests: int
    pending_responses: int
    unpaired_requests: int
    unpaired_responses: int


__all__ = ["Features", "Feedback", "InferenceRow", "PendingCounts", "RowHalf", "WriteResult"]
