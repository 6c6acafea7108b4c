"""One event to several channels: a failing channel never stops the others, nor a rollout."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mlcanary.rollout.ports import Notifier, ReleaseEvent
from mlcanary.rollout.state import ReleaseState

logger = logging.getLogger(__name__)


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

    def notify(self, release: ReleaseState, event: ReleaseEvent, message: str) -> None:
        for position, notifier in enumerate(self.notifiers, start=1):
            try:
                notifier.notify(release, event, message)
            except Exception as exc:  # one channel must never stop the others, nor a rollout
                self.failures += 1
                logger.warning(
                    "notify: channel #%d (%s) failed on %r for %s v%s: %s",
                    position,
                    type(notifier).__name__,
                    str(event),
                    release.model,
                    release.candidate_version,
                    type(exc).__name__,
                )
