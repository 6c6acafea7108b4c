"""Which release events are notified: the selection from ``MLCANARY_NOTIFY_EVENTS`` and the
Apprise notification type of each event. The events themselves are
:class:`mlcanary.rollout.ports.ReleaseEvent`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from mlcanary.rollout.ports import ReleaseEvent

EVENTS_ENV: Final = "MLCANARY_NOTIFY_EVENTS"
"""Comma-separated event titles to notify (default :data:`DEFAULT_EVENTS`; ``all`` for every one)."""

EVENTS: frozenset[str] = frozenset(ReleaseEvent)
"""Every event the rollout engine notifies (their titles)."""

DEFAULT_EVENTS: frozenset[str] = EVENTS - {ReleaseEvent.CANARY_STARTED}
"""The events notified unless configured otherwise ("canary started" is opt-in; "approval
requested" is on by default because a release then waits for a human)."""

NOTIFY_TYPES: Mapping[str, str] = {
    ReleaseEvent.PROMOTED: "success",
    ReleaseEvent.ROLLED_BACK: "warning",
    ReleaseEvent.FAILED: "failure",
    ReleaseEvent.APPROVAL_REQUESTED: "info",
    ReleaseEvent.CANARY_STARTED: "info",
}
"""The Apprise notification type of each event (colours and icons in Slack, Teams...)."""


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
