"""Notifications about releases through Apprise (Slack, Teams, e-mail, webhooks...).

:class:`AppriseNotifier` implements :class:`mlcanary.rollout.ports.Notifier`: the engine calls
``notify(release, event, message)`` with a :class:`~mlcanary.rollout.ports.ReleaseEvent`, and the
notifier sends one message per selected event (:mod:`mlcanary.notify.events`) to each configured
destination, with the model, both versions, the phase, the reason and a link to the evidence. It
never raises: a notification that cannot be delivered is logged as a warning and counted in
:attr:`AppriseNotifier.failures`, so it can never fail a rollout.

Every channel sends the same text, built by :func:`mlcanary.notify.message.format_message`; the
other channel, a Prefect notification block, lives in ``tasks/notifications.py`` (this package never
imports Prefect). :class:`mlcanary.notify.fan_out.FanOutNotifier` sends each event to several
channels, one failing channel never stopping the others.

Apprise URLs usually carry tokens, so they come from the environment (:data:`URLS_ENV`, read by
:func:`notifier_from_env`) and are never logged: logs name a destination by its scheme and position
only. Apprise is imported when a notifier is built, never at import of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from mlcanary.notify.events import EVENTS_ENV, NOTIFY_TYPES, event_name, parse_events
from mlcanary.notify.message import EvidenceLink, evidence_link_of, format_message, redact_url
from mlcanary.rollout.ports import Notifier, NullNotifier, ReleaseEvent
from mlcanary.rollout.state import ReleaseState

if TYPE_CHECKING:
    import apprise

logger = logging.getLogger(__name__)

URLS_ENV: Final = "MLCANARY_NOTIFY_URLS"
"""Comma-separated Apprise URLs (secrets: never put them in a config file or a log line)."""

_APPRISE_LOGGER = "apprise"


class _DropRecords(logging.Filter):
    """Drops every record (used while Apprise parses URLs: its errors may echo parts of them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def _apprise_logs_silenced() -> Iterator[None]:
    target = logging.getLogger(_APPRISE_LOGGER)
    drop = _DropRecords()
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


def _load_urls(urls: Sequence[str], timeout_s: float) -> apprise.Apprise:
    """An ``Apprise`` object holding each URL as one destination; ``ValueError`` names the position
    (1-based) of an invalid one, never its text."""
    import apprise

    if isinstance(urls, str):
        raise TypeError("urls must be a sequence of URLs, not one string")
    if not urls:
        raise ValueError("no notification URLs given")
    bundle = apprise.Apprise()
    for position, url in enumerate(urls, start=1):
        problem = None
        if not isinstance(url, str) or not url.strip():
            problem = "it is empty"
        elif any(ch.isspace() for ch in url.strip()) or "," in url:
            problem = "it contains a space or a comma (give one URL per entry)"
        else:
            with _apprise_logs_silenced():
                if not bundle.add(url.strip()):
                    problem = "Apprise does not accept it (unknown scheme or missing/invalid fields)"
        if problem is not None:
            shown = redact_url(url) if isinstance(url, str) else "?"
            raise ValueError(f"notification URL #{position} of {len(urls)} ({shown}) is invalid: {problem}")
    for service in bundle:
        # Bound each network call too; the overall call is bounded by notify(timeout=...).
        for attribute in ("socket_connect_timeout", "socket_read_timeout"):
            current = getattr(service, attribute, None)
            if isinstance(current, int | float):
                setattr(service, attribute, min(float(current), float(timeout_s)))
    return bundle


class AppriseNotifier:
    """Sends release events to Apprise URLs; never raises (see the module docstring).

    ``events`` selects the titles to send (default :data:`DEFAULT_EVENTS`); other titles are
    ignored (counted in :attr:`skipped`). ``evidence_link`` turns a release into the URL of its
    evidence (e.g. :func:`mlflow_run_link` of the release run); None leaves the run id in the
    message instead. ``timeout_s`` bounds one event's delivery. Counters: :attr:`sent` events
    delivered to every destination, :attr:`failures` events not delivered to at least one.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        evidence_link: EvidenceLink | None = None,
        timeout_s: float = 10,
        events: Iterable[str] | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self._apprise = _load_urls(urls, timeout_s)
        self.destinations: tuple[str, ...] = tuple(redact_url(url) for url in urls)
        self.evidence_link = evidence_link
        self.timeout_s = float(timeout_s)
        self.events = parse_events(events)
        self.sent = 0
        self.failures = 0
        self.skipped = 0

    def __repr__(self) -> str:
        return f"AppriseNotifier(destinations={list(self.destinations)!r}, events={sorted(self.events)!r})"

    # -- the message -------------------------------------------------------------------------------

    def format(self, release: ReleaseState, event: ReleaseEvent, message: str) -> tuple[str, str]:
        """The (title, body) sent for one event (:func:`format_message` with the evidence link)."""
        return format_message(release, event, message, evidence_link_of(release, self.evidence_link))

    # -- Notifier ----------------------------------------------------------------------------------

    def notify(self, release: ReleaseState, event: ReleaseEvent, message: str) -> None:
        """Send one message about ``event`` if it is a selected one; never raises."""
        if event_name(event) not in self.events:
            self.skipped += 1
            return
        what = f"{str(event)!r} for {release.model} v{release.candidate_version}"
        try:
            subject, body = self.format(release, event, message)
            result = self._apprise.notify(
                body=body,
                title=subject,
                notify_type=NOTIFY_TYPES.get(event_name(event), "info"),
                body_format="text",
                timeout=self.timeout_s,
            )
            with _closing(result):
                delivered = bool(result)
                failed = _failed_services(result)
        except Exception as exc:  # a notification must never fail a rollout
            self.failures += 1
            logger.warning("notify: %s was not sent: %s", what, type(exc).__name__)
            return
        if delivered:
            self.sent += 1
            return
        self.failures += 1
        logger.warning(
            "notify: %s was not delivered to %s (destinations: %s)",
            what,
            ", ".join(failed) or "any destination",
            ", ".join(self.destinations),
        )


@contextmanager
def _closing(result: Any) -> Iterator[None]:
    try:
        yield
    finally:
        close = getattr(result, "close", None)
        if callable(close):
            close()


def _failed_services(result: Any) -> list[str]:
    """Service names (e.g. "Slack", never a URL) of the destinations that did not succeed."""
    names = []
    for item in getattr(result, "results", ()):
        status = getattr(getattr(item, "status", None), "name", "")
        if status != "SUCCESS":
            names.append(f"{getattr(item, 'name', '?')} ({status.lower() or 'failed'})")
    return names


def notifier_from_env(env: Mapping[str, str], **kwargs: Any) -> Notifier:
    """An :class:`AppriseNotifier` for the URLs in ``MLCANARY_NOTIFY_URLS`` (comma-separated), or a
    :class:`~mlcanary.rollout.ports.NullNotifier` when it is unset or blank.

    ``MLCANARY_NOTIFY_EVENTS`` (comma-separated titles, or ``all``) selects the events unless
    ``events`` is passed; other keyword arguments (``evidence_link``, ``timeout_s``) go to the
    notifier. Raises ``ValueError`` naming the position, never the text, of an invalid URL.
    """
    raw = env.get(URLS_ENV, "")
    if not raw.strip():
        return NullNotifier()
    urls = [part.strip() for part in raw.split(",")]
    urls = urls[:-1] if len(urls) > 1 and not urls[-1] else urls  # tolerate one trailing comma
    if "events" not in kwargs and env.get(EVENTS_ENV) is not None:
        try:
            kwargs["events"] = parse_events(env[EVENTS_ENV])
        except ValueError as exc:
            raise ValueError(f"{EVENTS_ENV}: {exc}") from None
    try:
        return AppriseNotifier(urls, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{URLS_ENV}: {exc}") from None
