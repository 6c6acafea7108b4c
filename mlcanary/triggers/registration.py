"""Creating (or updating in place) the MLflow webhook that delivers registry events to the receiver."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from mlcanary.triggers.events import SUBSCRIBED_EVENTS

logger = logging.getLogger(__name__)

DEFAULT_WEBHOOK_NAME: Final = "mlcanary"


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
