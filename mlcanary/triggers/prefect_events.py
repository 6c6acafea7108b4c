"""An accepted ``@candidate`` event as a Prefect event, posted to the Prefect API's ``/events``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from mlcanary.triggers.events import WebhookEvent

CANDIDATE_SET_EVENT: Final = "mlcanary.model.candidate-set"
"""The Prefect event name the ``start-canary`` deployment's trigger (prefect.yaml) matches."""

# Namespace for the Prefect event id derived from the delivery id (fixed; changing it breaks idempotency).
_EVENT_ID_NAMESPACE = uuid.UUID("5b0f6a64-8f0e-4d8a-9a44-6f1d2d0c7e51")


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
