"""The registry events the receiver handles: MLflow's JSON envelope in, a :class:`WebhookEvent` out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

SUBSCRIBED_EVENTS: tuple[str, ...] = (
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version.created",
)
"""The MLflow events the webhook subscribes to (and the receiver handles)."""

DEFAULT_CANDIDATE_ALIAS: Final = "candidate"

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


class MalformedEventError(Exception):
    pass


def parse_event(
    body: bytes, delivery_id: str, candidate_alias: str, received_at: float
) -> WebhookEvent | None:
    """The event in a verified body, ``None`` for an entity/action we do not handle.

    Raises :class:`MalformedEventError` (→ 400) for anything that is not the documented shape.
    Versions must be strings, as MLflow sends them (an int would fail Prefect's str parameter).
    """
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedEventError("body is not UTF-8 JSON") from exc
    if not isinstance(raw, dict):
        raise MalformedEventError("body is not a JSON object")
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
        raise MalformedEventError(f"invalid payload: {where}: {first['msg']}") from exc
    return None
