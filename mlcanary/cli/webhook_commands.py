"""``mlcanary webhook`` (run the MLflow webhook receiver) and ``webhook register``."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from mlcanary.cli.common import LightGroup, console, fail, user_errors

webhook_app = typer.Typer(
    cls=LightGroup,
    help="The MLflow registry webhook receiver: @candidate set in MLflow → a Prefect event.",
    no_args_is_help=False,
)


@webhook_app.callback(invoke_without_command=True)
def webhook_command(
    ctx: typer.Context,
    prefect_api_url: Annotated[
        str | None,
        typer.Option(help="Prefect API URL (default: $PREFECT_API_URL, else serving.prefect_port locally)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.webhook_port).")] = None,
) -> None:
    """Run the receiver: verifies X-MLflow-Signature with $MLCANARY_WEBHOOK_SECRET, drops replays
    and stale deliveries, and posts an accepted @candidate event to the Prefect API."""
    if ctx.invoked_subcommand is not None:
        return
    from mlcanary.triggers.server import WebhookConfigError, run_webhook

    with user_errors():
        settings = ctx.obj.settings()
    api = prefect_api_url or os.environ.get("PREFECT_API_URL") or settings.serving.prefect_api_url
    try:
        run_webhook(
            host or settings.serving.host,
            port or settings.serving.webhook_port,
            prefect_api_url=api,
            state_dir=settings.state_dir,
        )
    except WebhookConfigError as exc:
        raise fail(str(exc), 2) from None


@webhook_app.command("register")
def webhook_register_command(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="Receiver URL MLflow delivers to (default: serving.webhook_url).")
    ] = None,
) -> None:
    """Create or update the MLflow webhook pointing at the receiver, with $MLCANARY_WEBHOOK_SECRET.

    The MLflow *server* must allow the target: MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true and
    MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https for a loopback receiver, and a stable
    MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY so secrets survive restarts.
    """
    from mlcanary.triggers.registration import register_webhook
    from mlcanary.triggers.server import WebhookConfigError, secret_from_env

    with user_errors():
        settings = ctx.obj.settings()
        target = url or settings.serving.webhook_url
        try:
            webhook_id = register_webhook(settings.tracking_uri, target, secret_from_env())
        except WebhookConfigError as exc:
            raise fail(str(exc), 2) from None
    console.print(f"MLflow webhook {webhook_id} → {target}")
