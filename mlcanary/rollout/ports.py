"""The seams the rollout engine depends on besides the registry and the serving backend.

(Those two are :mod:`mlcanary.rollout.versions` and :mod:`mlcanary.rollout.serving`.) Each has a
real adapter elsewhere (the log store, MLflow, Apprise) and a trivial one here or an in-memory one in
:mod:`mlcanary.testing.fakes`. The engine receives them injected, never as module globals.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.state import Decision, ReleaseState


class Clock(Protocol):
    """Where "now" comes from (injected so tests and simulations control time)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(tz=UTC)


class MetricsSource(Protocol):
    """Measures both arms of a release over the same window.

    ``measure`` returns cumulative counts since ``release.started_at`` and window counts since
    ``window_start`` (the previous tick). It never judges; a metric it cannot measure goes into
    ``Measurements.problems`` rather than raising, so the other checks still run.
    """

    def measure(self, release: ReleaseState, *, window_start: datetime, now: datetime) -> Measurements: ...


class EvidenceRecorder(Protocol):
    """Keeps the evidence of a release (an MLflow run per release in the real adapter).

    ``begin`` returns an id stored in the release state so later processes append to the same
    record; every method is safe to call again after a crash. A recorder may keep what its store
    cannot take yet rather than lose it: ``flush(model)`` writes what it kept for ``model``
    (returning how many writes; raising ``RegistryUnavailableError`` when the store is still
    away), ``pending_models()`` names the models it keeps something for.
    """

    def begin(self, release: ReleaseState) -> str | None: ...

    def record_tick(self, release: ReleaseState, measurements: Measurements, decision: Decision) -> None: ...

    def finish(self, release: ReleaseState) -> None: ...

    def flush(self, model: str) -> int: ...

    def pending_models(self) -> list[str]: ...


class ReleaseEvent(StrEnum):
    """What the engine tells humans about; the value is the event's title in every message."""

    CANARY_STARTED = "canary started"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled back"
    FAILED = "failed"
    APPROVAL_REQUESTED = "approval requested"


class Notifier(Protocol):
    """Tells humans about release events (Slack, Teams, e-mail...)."""

    def notify(self, release: ReleaseState, event: ReleaseEvent, message: str) -> None: ...


class ReleaseGate(Protocol):
    """Vets a candidate before a release moves any traffic to it (signature, preflight).

    ``check`` returns why ``candidate`` must not be released beside ``champion`` (one sentence that
    says how to fix it where it can), or None when it may. It never changes the champion's serving.
    """

    def check(self, model: str, champion: str, candidate: str) -> str | None: ...


class NullRecorder:
    """Keeps nothing (for tests and dry runs)."""

    def begin(self, release: ReleaseState) -> str | None:
        return None

    def record_tick(self, release: ReleaseState, measurements: Measurements, decision: Decision) -> None:
        return None

    def finish(self, release: ReleaseState) -> None:
        return None

    def flush(self, model: str) -> int:
        return 0

    def pending_models(self) -> list[str]:
        return []


class NullNotifier:
    """Tells no one."""

    def notify(self, release: ReleaseState, event: ReleaseEvent, message: str) -> None:
        return None
