"""Release notifications through a Prefect notification block, and the notifier the flows use.

:class:`PrefectBlockNotifier` implements :class:`mlcanary.rollout.ports.Notifier` over any Prefect
:class:`~prefect.blocks.abstract.NotificationBlock` (``SlackWebhook``, ``MicrosoftTeamsWebhook``,
``CustomWebhookNotificationBlock``, ``AppriseNotificationBlock`` subclasses...), with the contract of
:class:`mlcanary.notify.apprise.AppriseNotifier`: the events selected by
:func:`~mlcanary.notify.events.parse_events`, the same subject and body
(:func:`mlcanary.notify.message.format_message`)
with the evidence link, and it never raises (a failed delivery is a warning and a count).

The block keeps its URL and tokens on the Prefect server: this side only knows the block document
slug from ``MLCANARY_NOTIFY_BLOCK`` (:func:`block_notifier_from_env`), and logs name the block by
that slug only, never its fields nor an exception's text (which may echo the URL).

:func:`flow_notifier` is the notifier of the flows: the Apprise URLs of ``MLCANARY_NOTIFY_URLS`` and
the block, fanned out (:class:`mlcanary.notify.fan_out.FanOutNotifier`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.notifications import AbstractAppriseNotificationBlock

from mlcanary.config import Settings
from mlcanary.notify.apprise import notifier_from_env
from mlcanary.notify.events import EVENTS_ENV, NOTIFY_TYPES, event_name, parse_events
from mlcanary.notify.fan_out import FanOutNotifier
from mlcanary.notify.message import evidence_link_of, format_message, mlflow_run_link
from mlcanary.rollout.ports import Notifier, NullNotifier, ReleaseEvent
from mlcanary.rollout.state import ReleaseState

logger = logging.getLogger(__name__)

BLOCK_ENV = "MLCANARY_NOTIFY_BLOCK"
"""The slug ``<block-type-slug>/<block-name>`` of a saved notification block (e.g.
``slack-webhook/release-alerts``). Not a secret: the URL stays in the block."""

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9-]*")
"""Prefect's block type slugs and block document names: lowercase letters, digits and dashes."""


def _in_async_context() -> bool:
    """Whether Prefect's ``async_dispatch`` / ``sync_compatible`` would pick their async path here:
    inside an async flow or task run, or with an event loop running in this thread."""
    from prefect.context import get_run_context
    from prefect.exceptions import MissingContextError

    try:
        run = get_run_context()
    except MissingContextError:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True
    parent = getattr(run, "task", None) or getattr(run, "flow", None)
    return bool(getattr(parent, "isasync", True))


def _call_notify(block: NotificationBlock, body: str, subject: str) -> None:
    notify: Callable[..., Any] = block.notify
    # Prefect's blocks wrap notify with async_dispatch (sync_compatible in older collections);
    # _sync=True asks for the blocking path. A bare coroutine function is driven to completion.
    result = notify(body, subject, _sync=True) if hasattr(notify, "aio") else notify(body, subject)
    if inspect.iscoroutine(result):
        from prefect.utilities.asyncutils import run_coro_as_sync

        run_coro_as_sync(result)


def _run_sync(block: NotificationBlock, body: str, subject: str) -> None:
    """``block.notify(body, subject)`` run to completion from synchronous code, in or out of a run.

    In an async context ``_sync=True`` is not enough: Prefect 3.9's Apprise-based blocks call
    ``super().notify`` without it, which hands back a coroutine nobody awaits (nothing is sent).
    There the call goes to a fresh thread, which has no run context and no event loop, so every
    layer takes its blocking path; elsewhere it runs here, in the caller's context.
    """
    if not _in_async_context():
        _call_notify(block, body, subject)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcanary-notify") as pool:
        pool.submit(_call_notify, block, body, subject).result()


class PrefectBlockNotifier:
    """Sends release events through one Prefect notification block; never raises.

    ``slug`` names the block in logs and ``repr`` (never its fields: they hold the URL). ``events``
    (default :data:`mlcanary.notify.events.DEFAULT_EVENTS`) selects the titles to send, others are counted
    in :attr:`skipped`; ``evidence_link`` turns a release into the URL of its evidence. An Apprise
    based block gets the event's notification type (success, warning, failure, info) like
    :class:`~mlcanary.notify.apprise.AppriseNotifier`. Delivery time is bounded by the block's own
    timeouts. Counters: :attr:`sent`, :attr:`failures`, :attr:`skipped`.
    """

    def __init__(
        self,
        block: NotificationBlock,
        *,
        slug: str | None = None,
        evidence_link: Callable[[ReleaseState], str | None] | None = None,
        events: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(block, NotificationBlock):
            raise TypeError(f"expected a Prefect NotificationBlock, got {type(block).__name__}")
        self.block = block
        name = getattr(block, "_block_document_name", None) or "(unsaved)"
        self.slug = slug or f"{block.get_block_type_slug()}/{name}"
        self.evidence_link = evidence_link
        self.events = parse_events(events)
        self.sent = 0
        self.failures = 0
        self.skipped = 0

    def __repr__(self) -> str:
        return f"PrefectBlockNotifier(block={self.slug!r}, events={sorted(self.events)!r})"

    def _block_for(self, event: str) -> NotificationBlock:
        if isinstance(self.block, AbstractAppriseNotificationBlock):
            # A copy shares the block's Apprise client; the loaded block itself is left untouched.
            return self.block.model_copy(update={"notify_type": NOTIFY_TYPES.get(event, "info")})
        return self.block

    def notify(self, release: ReleaseState, event: ReleaseEvent, message: str) -> None:
        """Send one message about ``event`` if it is a selected one; never raises."""
        name = event_name(event)
        if name not in self.events:
            self.skipped += 1
            return
        try:
            subject, body = format_message(
                release, event, message, evidence_link_of(release, self.evidence_link)
            )
            block = self._block_for(name)
            # Apprise-based blocks only report failure (rather than log it) when asked to.
            with block.raise_on_failure():
                _run_sync(block, body, subject)
        except Exception as exc:  # a notification must never fail a rollout
            self.failures += 1
            # The type only: the text of an HTTP error or of Apprise's log may hold the URL.
            logger.warning(
                "notify: %r for %s v%s was not delivered through block %s: %s",
                str(event),
                release.model,
                release.candidate_version,
                self.slug,
                type(exc).__name__,
            )
            return
        self.sent += 1


def load_notification_block(slug: str, *, variable: str = BLOCK_ENV) -> NotificationBlock:
    """The saved notification block ``<block-type-slug>/<block-name>``.

    Raises ``ValueError`` naming ``variable`` when the slug is malformed, no such block is saved,
    its block type is not available in this environment, or it is not a notification block.
    """
    slug = slug.strip()
    if not _SLUG.fullmatch(slug):
        raise ValueError(
            f"{variable}={slug!r} is not a block slug: expected '<block-type-slug>/<block-name>' "
            "(lowercase letters, digits and dashes), e.g. 'slack-webhook/release-alerts'"
        )
    from prefect.blocks.core import Block, UnknownBlockType
    from prefect.exceptions import ObjectNotFound

    # Exception texts are not repeated: a validation error may quote a field (the URL).
    try:
        block = Block.load(slug, _sync=True)
    except UnknownBlockType:
        raise ValueError(
            f"{variable}: the block type of {slug!r} is not available in this environment; "
            "install the Prefect collection that defines it"
        ) from None
    except ValueError as exc:
        if isinstance(exc.__cause__, ObjectNotFound):
            raise ValueError(
                f"{variable}: no block {slug!r} is saved on the Prefect server; create it in the UI, "
                "with `prefect block create <block-type>` or `<BlockClass>(...).save('<name>')`"
            ) from None
        raise ValueError(
            f"{variable}: block {slug!r} could not be loaded ({type(exc).__name__}: its saved fields "
            "do not match the block type installed here)"
        ) from None
    if not isinstance(block, NotificationBlock):
        raise ValueError(
            f"{variable}: block {slug!r} is a {type(block).__name__}, not a notification block "
            "(use e.g. slack-webhook, ms-teams-webhook, custom-webhook)"
        )
    return block


def block_notifier_from_env(env: Mapping[str, str], **kwargs: Any) -> PrefectBlockNotifier | None:
    """A :class:`PrefectBlockNotifier` for the block named by ``MLCANARY_NOTIFY_BLOCK``, or None
    when it is unset or blank.

    ``MLCANARY_NOTIFY_EVENTS`` selects the events unless ``events`` is passed; ``evidence_link``
    goes to the notifier. Raises ``ValueError`` naming the variable (see
    :func:`load_notification_block`).
    """
    slug = env.get(BLOCK_ENV, "").strip()
    if not slug:
        return None
    if "events" not in kwargs and env.get(EVENTS_ENV) is not None:
        try:
            kwargs["events"] = parse_events(env[EVENTS_ENV])
        except ValueError as exc:
            raise ValueError(f"{EVENTS_ENV}: {exc}") from None
    return PrefectBlockNotifier(load_notification_block(slug), slug=slug, **kwargs)


def flow_notifier(settings: Settings, env: Mapping[str, str] | None = None) -> Notifier:
    """The notifier of the flows: the Apprise URLs of ``MLCANARY_NOTIFY_URLS`` and the block of
    ``MLCANARY_NOTIFY_BLOCK`` (``env`` defaults to ``os.environ``).

    Both configured: a :class:`~mlcanary.notify.fan_out.FanOutNotifier` over the two; one: that one;
    neither: a :class:`~mlcanary.rollout.ports.NullNotifier`. Each links the release's MLflow run.
    """
    env = os.environ if env is None else env

    def link(release: ReleaseState) -> str | None:
        return mlflow_run_link(settings.tracking_uri, release.release_run_id)

    channels: list[Notifier] = []
    apprise = notifier_from_env(env, evidence_link=link)
    if not isinstance(apprise, NullNotifier):
        channels.append(apprise)
    block = block_notifier_from_env(env, evidence_link=link)
    if block is not None:
        channels.append(block)
    if not channels:
        return NullNotifier()
    return channels[0] if len(channels) == 1 else FanOutNotifier(channels)
