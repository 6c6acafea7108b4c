"""Notifications about releases through Apprise (Slack, Teams, e-mail, webhooks...).

:class:`AppriseNotifier` implements :class:`mlcanary.rollout.ports.Notifier`: the engine calls
``notify(release, title, message)`` with the titles in :data:`EVENTS`, and the notifier sends one
message per event (to each configured destination) with the model, both versions, the phase, the
reason and a link to the evidence. It never raises: a notification that cannot be delivered is
logged as a warning and counted in :attr:`AppriseNotifier.failures`, so it can never fail a rollout.

Every channel sends the same text, built by :func:`format_message`; the other channel, a Prefect
notification block, lives in ``tasks/notifications.py`` (this module never imports Prefect).
:class:`FanOutNotifier` sends each event to several channels, one failing channel never stopping
the others.

Apprise URLs usually carry tokens, so they come from the environment (:data:`URLS_ENV`, read by
:func:`notifier_from_env`) and are never logged: logs name a destination by its scheme and position
only. Apprise is imported when a notifier is built, never at import of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from mlcanary.rollout.ports import Notifier, NullNotifier
from mlcanary.rollout.state import ReleaseState

if TYPE_CHECKING:
    import apprise

logger = logging.getLogger(__name__)

URLS_ENV = "MLCANARY_NOTIFY_URLS"
"""Comma-separated Apprise URLs (secrets: never put them in a config file or a log line)."""

EVENTS_ENV = "MLCANARY_NOTIFY_EVENTS"
"""Comma-separated event titles to notify (default :data:`DEFAULT_EVENTS`; ``all`` for every one)."""

CANARY_STARTED = "canary started"
PROMOTED = "promoted"
ROLLED_BACK = "rolled back"
FAILED = "failed"
APPROVAL_REQUESTED = "approval requested"

EVENTS: frozenset[str] = frozenset({CANARY_STARTED, PROMOTED, ROLLED_BACK, FAILED, APPROVAL_REQUESTED})
"""Every title the rollout engine passes to ``Notifier.notify``."""

DEFAULT_EVENTS: frozenset[str] = frozenset({PROMOTED, ROLLED_BACK, FAILED, APPROVAL_REQUESTED})
"""The events notified unless configured otherwise ("canary started" is opt-in; "approval
requested" is on by default because a release then waits for a human)."""

NOTIFY_TYPES: Mapping[str, str] = {
    PROMOTED: "success",
    ROLLED_BACK: "warning",
    FAILED: "failure",
    APPROVAL_REQUESTED: "info",
    CANARY_STARTED: "info",
}
"""The Apprise notification type of each event (colours and icons in Slack, Teams...)."""

_APPRISE_LOGGER = "apprise"


def redact_url(url: str) -> str:
    """The loggable form of an Apprise URL: its scheme only (``"slack://…"``), never a token."""
    scheme, sep, _ = url.strip().partition("://")
    if not sep or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return "<unrecognised URL>"
    return f"{scheme.lower()}://…"


def mlflow_run_link(
    tracking_uri: str | None, run_id: str | None, experiment_id: str | None = None
) -> str | None:
    """The MLflow UI page of run ``run_id``, or None when there is no run or no web UI to link to.

    Only http(s) tracking URIs have a UI (a ``sqlite:`` or file store has none). Credentials,
    query and fragment of the tracking URI are dropped so the link is safe to post in a chat.
    Without ``experiment_id`` the link uses MLflow's direct run route (``#/runs/<id>``), which the
    UI redirects to the run's page in its experiment.
    """
    if not tracking_uri or not run_id:
        return None
    parts = urlsplit(tracking_uri.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    base = urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))
    if experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base}/#/runs/{run_id}"


def event_name(title: str) -> str:
    """The normalised form of an event title (lower case, single spaces), as in :data:`EVENTS`."""
    return " ".join(title.lower().split())


def parse_events(value: str | Iterable[str] | None) -> frozenset[str]:
    """Event titles from a comma-separated string or an iterable; ``None`` gives the default set.

    ``"all"`` selects every event; ``""`` / an empty iterable selects none. Raises ``ValueError``
    for a name that is not one of :data:`EVENTS` (a typo would otherwise silence a notification).
    """
    if value is None:
        return DEFAULT_EVENTS
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {event_name(item.replace("_", " ")) for item in items}
    names.discard("")
    if "all" in names:
        return EVENTS
    unknown = sorted(names - EVENTS)
    if unknown:
        raise ValueError(
            f"unknown notification event(s) {', '.join(map(repr, unknown))}: "
            f"choose from {', '.join(sorted(EVENTS))} or 'all'"
        )
    return frozenset(names)


def evidence_link_of(
    release: ReleaseState, evidence_link: Callable[[ReleaseState], str | None] | None
) -> str | None:
    """``evidence_link(release)``, or None when there is no builder or it fails (logged as a
    warning with the exception type only: a broken link builder must not cost the notification)."""
    if evidence_link is None:
        return None
    try:
        return evidence_link(release)
    except Exception as exc:
        logger.warning("notify: could not build the evidence link (%s)", type(exc).__name__)
        return None


def format_message(release: ReleaseState, title: str, message: str, link: str | None) -> tuple[str, str]:
    """The (subject, body) of one event, the same on every channel.

    The body holds ``message``, the model, both versions, the phase, the candidate traffic, the
    reason and the evidence: ``link`` when given, else the release's MLflow run id when known.
    """
    subject = f"[mlcanary] {release.model} v{release.candidate_version}: {title}"
    lines = [
        message,
        "",
        f"Model: {release.model}",
        f"Candidate: v{release.candidate_version}  Champion: v{release.champion_version}",
        f"Phase: {release.phase.value}  Candidate traffic: {release.traffic} %",
        f"Reason: {release.reason or '(none recorded)'}",
    ]
    if link:
        lines.append(f"Evidence: {link}")
    elif release.release_run_id:
        lines.append(f"Evidence: MLflow run {release.release_run_id}")
    return subject, "\n".join(lines)


class FanOutNotifier:
    """Sends each event to every notifier in ``notifiers``, in order; never raises.

    A notifier that raises (the adapters here never do, but any :class:`Notifier` may) is logged as
    a warning with its class and the exception type only, counted in :attr:`failures`, and the
    next notifier still gets the event.
    """

    def __init__(self, notifiers: Iterable[Notifier]) -> None:
        self.notifiers: tuple[Notifier, ...] = tuple(notifiers)
        self.failures = 0

    def __repr__(self) -> str:
        return f"FanOutNotifier({[type(n).__name__ for n in self.notifiers]!r})"

    def notify(self, release: ReleaseState, title: str, message: str) -> None:
        for position, notifier in enumerate(self.notifiers, start=1):
            try:
                notifier.notify(release, title, message)
            except Exception as exc:  # one channel must never stop the others, nor a rollout
                self.failures += 1
                logger.warning(
                    "notify: channel #%d (%s) failed on %r for %s v%s: %s",
                    position,
                    type(notifier).__name__,
                    title,
                    release.model,
                    release.candidate_version,
                    type(exc).__name__,
                )


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
        evidence_link: Callable[[ReleaseState], str | None] | None = None,
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

    def format(self, release: ReleaseState, title: str, message: str) -> tuple[str, str]:
        """The (title, body) sent for one event (:func:`format_message` with the evidence link)."""
        return format_message(release, title, message, evidence_link_of(release, self.evidence_link))

    # -- Notifier ----------------------------------------------------------------------------------

    def notify(self, release: ReleaseState, title: str, message: str) -> None:
        """Send one message about ``title`` if it is a selected event; never raises."""
        if event_name(title) not in self.events:
            self.skipped += 1
            return
        what = f"{title!r} for {release.model} v{release.candidate_version}"
        try:
            subject, body = self.format(release, title, message)
            result = self._apprise.notify(
                body=body,
                title=subject,
                notify_type=NOTIFY_TYPES.get(event_name(title), "info"),
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
