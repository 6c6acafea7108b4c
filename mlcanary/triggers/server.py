"""Running the receiver: the secret from the environment, the delivery log in the state directory,
events forwarded to Prefect, uvicorn until interrupted (``mlcanary webhook``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import uvicorn

from mlcanary.triggers.delivery_log import DELIVERY_LOG_FILENAME, SqliteDeliveryLog
from mlcanary.triggers.prefect_events import PrefectEventEmitter
from mlcanary.triggers.receiver import DEFAULT_MAX_BODY_BYTES, DEFAULT_TOLERANCE_S, create_webhook_app

logger = logging.getLogger(__name__)

DEFAULT_SECRET_ENV: Final = "MLCANARY_WEBHOOK_SECRET"
"""Where the receiver (and ``webhook register``) read the shared secret; never from a file."""


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
    host: str,
    port: int,
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
