"""Inference events in KServe's payload-logger format (CloudEvents 1.0 over HTTP).

KServe's logger agent posts one CloudEvent per inference request and one per response; the local model
servers post the same events, so the collector has a single ingest path for both backends. In binary
mode every CloudEvents attribute travels as a ``ce-<name>`` HTTP header and the body is the raw
request or response payload. Request and response share ``ce-id``: it is the join key — unless
KServe's logger passed on Istio's ``X-Request-Id`` in its ``ce-metadata`` extension
(``metadataHeaders``), which then is (see :attr:`InferenceEvent.request_id`).

Our own extension attributes (CloudEvents extension names are lowercase alphanumeric only) carry what
KServe's events leave implicit: ``ce-mlcanaryarm`` and ``ce-mlcanaryversion`` on both events, and
``ce-mlcanarylatencyms`` (server-side latency) and ``ce-mlcanarystatus`` (HTTP status) on responses,
and ``ce-mlcanaryshadow: true`` on both events of a mirrored (shadow) request, whose answer no user
saw.
Events from KServe itself lack them; consumers must treat them as optional.

KServe's agent posts each event alone in binary mode (:meth:`InferenceEvent.to_headers`). Our payload
logger posts batches (CloudEvents' batched content mode, :data:`BATCH_CONTENT_TYPE`): a JSON array of
events in the JSON event format (:meth:`InferenceEvent.to_structured`, joined by :func:`encode_batch`),
each attribute a member named as its header without ``ce-``, the payload in ``data_base64``.

The names below are a contract shared by the model servers and the collector: change them only
together, and never rename one in place.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

SPEC_VERSION = "1.0"
CE_TYPE_REQUEST = "org.kubeflow.serving.inference.request"
CE_TYPE_RESPONSE = "org.kubeflow.serving.inference.response"
CE_TYPES: frozenset[str] = frozenset({CE_TYPE_REQUEST, CE_TYPE_RESPONSE})

# CloudEvents core attributes (binary mode).
HEADER_SPECVERSION = "ce-specversion"
HEADER_ID = "ce-id"
HEADER_TYPE = "ce-type"
HEADER_SOURCE = "ce-source"
HEADER_TIME = "ce-time"
# KServe logger extensions.
HEADER_INFERENCESERVICENAME = "ce-inferenceservicename"
HEADER_NAMESPACE = "ce-namespace"
HEADER_COMPONENT = "ce-component"
HEADER_ENDPOINT = "ce-endpoint"
HEADER_METADATA = "ce-metadata"  # JSON: the request headers listed in the logger's metadataHeaders
# mlcanary extensions.
HEADER_ARM = "ce-mlcanaryarm"
HEADER_VERSION = "ce-mlcanaryversion"
HEADER_LATENCY_MS = "ce-mlcanarylatencyms"
HEADER_STATUS = "ce-mlcanarystatus"
HEADER_SHADOW = "ce-mlcanaryshadow"

CONTENT_TYPE = "application/json"
#: CloudEvents' structured and batched content modes (JSON event format).
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
LOCAL_NAMESPACE = "local"
PREDICTOR_COMPONENT = "predictor"

_TYPED_HEADERS = frozenset(
    {
        HEADER_SPECVERSION,
        HEADER_ID,
        HEADER_TYPE,
        HEADER_SOURCE,
        HEADER_TIME,
        HEADER_INFERENCESERVICENAME,
        HEADER_ARM,
        HEADER_VERSION,
        HEADER_LATENCY_MS,
        HEADER_STATUS,
        HEADER_SHADOW,
    }
)


def metadata_request_id(raw: str | None) -> str | None:
    """``X-Request-Id`` from a ``ce-metadata`` value (a JSON object of header name → list of
    values, as KServe's logger writes it; names matched in any case), else ``None``. Metadata is
    informational: a value that is not such an object is ignored, never a reason to refuse the event."""
    if not raw:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    for name, values in document.items():
        if str(name).lower() != "x-request-id":
            continue
        first = values[0] if isinstance(values, list) and values else values
        if isinstance(first, str) and first.strip():
            return first.strip()
    return None


def local_source(model: str, arm: str, version: str) -> str:
    """``ce-source`` of an event sent by a local model server: ``mlcanary/local/{model}/{arm}/v{version}``."""
    return f"mlcanary/local/{model}/{arm}/v{version}"


def format_time(moment: datetime) -> str:
    """RFC 3339 timestamp in UTC with a ``Z`` suffix, as CloudEvents' ``time`` attribute expects."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class InferenceEvent:
    """One logged inference request or response.

    ``ce_id`` joins a request with its response; ``ce_type`` is :data:`CE_TYPE_REQUEST` or
    :data:`CE_TYPE_RESPONSE`; ``time`` is timezone-aware and normalised to UTC; ``model`` is the
    InferenceService (model) name, ``""`` when the sender did not name it. ``arm``, ``version``,
    ``latency_ms`` and ``status`` are ``None`` when absent (always absent in events from KServe;
    latency and status only on responses from our servers). ``body`` is the raw payload, not
    necessarily valid JSON (a rejected request is logged as received). ``headers`` holds any other
    ``ce-*`` attributes (lowercase names, e.g. ``ce-namespace``, ``ce-component``, ``ce-endpoint``),
    sent as they are; the typed fields win over a same-named entry there.

    Construction raises ``ValueError`` for an unknown type, an empty id or source, or a naive time.
    """

    ce_id: str
    ce_type: str
    source: str
    time: datetime
    model: str
    arm: str | None = None
    version: str | None = None
    body: bytes = b""
    latency_ms: float | None = None
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    shadow: bool = False

    def __post_init__(self) -> None:
        if self.ce_type not in CE_TYPES:
            raise ValueError(f"ce_type must be one of {', '.join(sorted(CE_TYPES))}, got {self.ce_type!r}")
        if not self.ce_id:
            raise ValueError("ce_id must not be empty")
        if not self.source:
            raise ValueError("source must not be empty")
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError("time must be timezone-aware")
        object.__setattr__(self, "time", self.time.astimezone(UTC))

    @property
    def request_id(self) -> str:
        """The id that joins this event with its other half, and a mirrored copy with the original
        it copies: the ``X-Request-Id`` KServe's logger passed on in ``ce-metadata`` when there is
        one (its own ``ce-id`` is a fresh UUID per pod, different on the champion and on the copy),
        else ``ce_id``."""
        return metadata_request_id(self.headers.get(HEADER_METADATA)) or self.ce_id

    @property
    def is_request(self) -> bool:
        """True for a request event, False for a response event."""
        return self.ce_type == CE_TYPE_REQUEST

    def to_headers(self) -> dict[str, str]:
        """HTTP headers of this event in CloudEvents binary mode, ``content-type`` included."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        headers.update(
            {
                HEADER_SPECVERSION: SPEC_VERSION,
                HEADER_ID: self.ce_id,
                HEADER_TYPE: self.ce_type,
                HEADER_SOURCE: self.source,
                HEADER_TIME: format_time(self.time),
                HEADER_INFERENCESERVICENAME: self.model,
                "content-type": CONTENT_TYPE,
            }
        )
        if self.arm is not None:
            headers[HEADER_ARM] = self.arm
        if self.version is not None:
            headers[HEADER_VERSION] = self.version
        if self.latency_ms is not None:
            headers[HEADER_LATENCY_MS] = f"{self.latency_ms:.3f}"
        if self.status is not None:
            headers[HEADER_STATUS] = str(self.status)
        if self.shadow:
            headers[HEADER_SHADOW] = "true"
        return headers

    def to_structured(self) -> bytes:
        """This event in CloudEvents' JSON event format (one JSON object, UTF-8).

        Every ``ce-*`` header of :meth:`to_headers` becomes a top-level string member named without
        the ``ce-`` prefix. The payload is binary to us (a request body as received need not be
        valid JSON), so it travels as ``data_base64`` (JSON format, section 3.1.1: binary data is
        base64-encoded) with ``datacontenttype: application/json``: the receiver gets it byte for byte.
        """
        document: dict[str, str] = {
            name[3:]: value for name, value in self.to_headers().items() if name.startswith("ce-")
        }
        document["datacontenttype"] = CONTENT_TYPE
        document["data_base64"] = base64.b64encode(self.body).decode("ascii")
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], body: bytes, *, received_at: datetime | None = None
    ) -> InferenceEvent:
        """Parse a binary-mode CloudEvent (header names in any case).

        Required: ``ce-specversion`` equal to ``1.0``, ``ce-id``, ``ce-type`` (request or response)
        and ``ce-source``. ``ce-time`` is optional in CloudEvents; without it the event is stamped
        with ``received_at`` (default: now). Raises ``ValueError`` naming the attribute when a
        required one is missing or any present one is invalid.
        """
        lowered = {name.lower(): value for name, value in headers.items()}

        def required(name: str) -> str:
            value = lowered.get(name, "").strip()
            if not value:
                raise ValueError(f"missing CloudEvents attribute: header {name!r} is required")
            return value

        specversion = required(HEADER_SPECVERSION)
        if specversion != SPEC_VERSION:
            raise ValueError(f"unsupported {HEADER_SPECVERSION} {specversion!r}; expected {SPEC_VERSION!r}")
        ce_type = required(HEADER_TYPE)
        if ce_type not in CE_TYPES:
            raise ValueError(f"{HEADER_TYPE} must be one of {', '.join(sorted(CE_TYPES))}, got {ce_type!r}")
        ce_id = required(HEADER_ID)
        source = required(HEADER_SOURCE)

        raw_time = lowered.get(HEADER_TIME, "").strip()
        if raw_time:
            try:
                moment = datetime.fromisoformat(raw_time)
            except ValueError:
                raise ValueError(f"{HEADER_TIME} is not an RFC 3339 timestamp: {raw_time!r}") from None
            if moment.tzinfo is None:
                raise ValueError(f"{HEADER_TIME} has no UTC offset: {raw_time!r}")
        else:
            moment = received_at if received_at is not None else datetime.now(UTC)

        latency_ms: float | None = None
        raw_latency = lowered.get(HEADER_LATENCY_MS)
        if raw_latency is not None:
            try:
                latency_ms = float(raw_latency)
            except ValueError:
                raise ValueError(f"{HEADER_LATENCY_MS} is not a number: {raw_latency!r}") from None
            if not math.isfinite(latency_ms) or latency_ms < 0:
                raise ValueError(
                    f"{HEADER_LATENCY_MS} must be a finite, non-negative number: {raw_latency!r}"
                )

        status: int | None = None
        raw_status = lowered.get(HEADER_STATUS)
        if raw_status is not None:
            try:
                status = int(raw_status)
            except ValueError:
                raise ValueError(f"{HEADER_STATUS} is not an integer: {raw_status!r}") from None
            if not 100 <= status <= 599:
                raise ValueError(f"{HEADER_STATUS} is not an HTTP status code: {raw_status!r}")

        raw_shadow = lowered.get(HEADER_SHADOW, "false").strip().lower()
        if raw_shadow not in ("true", "false"):
            raise ValueError(f"{HEADER_SHADOW} must be true or false, got {raw_shadow!r}")

        extras = {
            name: value
            for name, value in lowered.items()
            if name.startswith("ce-") and name not in _TYPED_HEADERS
        }
        return cls(
            ce_id=ce_id,
            ce_type=ce_type,
            source=source,
            time=moment,
            model=lowered.get(HEADER_INFERENCESERVICENAME, "").strip(),
            arm=lowered.get(HEADER_ARM) or None,
            version=lowered.get(HEADER_VERSION) or None,
            body=body,
            latency_ms=latency_ms,
            status=status,
            headers=extras,
            shadow=raw_shadow == "true",
        )


def encode_batch(structured: Sequence[bytes]) -> bytes:
    """The body of a batched-mode request: the JSON array of events already encoded by
    :meth:`InferenceEvent.to_structured` (an empty sequence gives ``[]``, which the spec allows)."""
    return b"[" + b",".join(structured) + b"]"
