"""The front door of the local stack as the backend drives it: Envoy started when needed, weights
changed and confirmed from Envoy's admin endpoint (never from the files written), each change
timed (:class:`TrafficChange`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mlcanary.rollout.arms import Arm
from mlcanary.rollout.serving import ServingError
from mlcanary.runtime.net import port_in_use
from mlcanary.serving.local.envoy import (
    AlreadyRunningError,
    EnvoyError,
    EnvoyLayout,
    EnvoyNotRunningError,
    EnvoyProxy,
    Weights,
    load_persisted_weights,
    new_version,
    write_routes,
)

if TYPE_CHECKING:
    from mlcanary.config import Settings

logger = logging.getLogger(__name__)

ALL_TO_CHAMPION = Weights(champion=100, candidate=0)


@dataclass(frozen=True)
class TrafficChange:
    """A weight change that Envoy confirmed (read back from its admin endpoint).

    ``elapsed_ms`` runs from the start of the backend call to Envoy's confirmation (for
    ``rollback`` nothing else happens first); ``apply_ms`` from the routes-file rename to the first
    admin read showing the new table. ``previous`` is what Envoy served before, if it was readable.
    """

    action: str
    weights: Weights
    previous: Weights | None
    routes_version: str
    elapsed_ms: float
    apply_ms: float
    applied_at: datetime


def percent(weights: Weights) -> dict[Arm, int]:
    """Weights as percentages of traffic per arm (summing to 100)."""
    champion = round(weights.champion * 100 / weights.total)
    return {"champion": champion, "candidate": 100 - champion}


class FrontDoor:
    """Envoy in front of the two arms (see the module docstring); ``last_change`` is the latest
    confirmed :class:`TrafficChange` made through this object."""

    def __init__(self, settings: Settings, *, envoy_concurrency: int | None = None) -> None:
        self.layout = EnvoyLayout.from_settings(settings)
        self.envoy = EnvoyProxy(self.layout, concurrency=envoy_concurrency)
        self.url = settings.serving.front_door_url
        self.last_change: TrafficChange | None = None

    def running(self) -> bool:
        return self.envoy.running()

    def require(self) -> None:
        """:class:`ServingError` unless Envoy runs (the stack is up)."""
        if not self.envoy.running():
            raise ServingError(
                f"the local stack is not running (no Envoy for {self.layout.state_dir}); run `mlcanary up`"
            )

    def ensure(self, candidate_ready: Callable[[], bool]) -> None:
        """Start Envoy if it is not running, with the persisted weights (or 100/0 when those would
        route to a candidate that is not ready), and wait until its admin endpoint answers."""
        if not self.envoy.running():
            layout = self.layout
            taken = [
                f"{what} {port}"
                for what, host, port in (
                    ("front door", layout.host, layout.listener_port),
                    ("Envoy admin", layout.admin_host, layout.admin_port),
                )
                if port_in_use(host, port)
            ]
            if taken:
                raise ServingError(
                    f"cannot start Envoy: {', '.join(taken)} taken by a process that is not ours"
                )
            weights = load_persisted_weights(layout) or ALL_TO_CHAMPION
            if weights.candidate > 0 and not candidate_ready():
                weights = ALL_TO_CHAMPION
            self.envoy.initial_weights = weights
            try:
                self.envoy.start()
            except AlreadyRunningError:
                pass  # started meanwhile by another process; checked below
            except EnvoyError as exc:
                raise ServingError(f"cannot start Envoy: {exc}") from exc
        deadline = time.monotonic() + 10.0
        while True:
            try:
                self.envoy.observed()
                return
            except EnvoyNotRunningError as exc:
                if time.monotonic() >= deadline:
                    raise ServingError(f"Envoy runs but its admin endpoint does not answer: {exc}") from exc
            except EnvoyError as exc:
                raise ServingError(f"Envoy does not serve the expected routes: {exc}") from exc
            time.sleep(0.1)

    def set_weights(self, weights: Weights, action: str, *, started: float | None = None) -> TrafficChange:
        """Apply ``weights`` and return once Envoy confirms them; ``started`` (a ``perf_counter``
        time) is when the caller's action began."""
        started = time.perf_counter() if started is None else started
        try:
            applied = self.envoy.set_weights(weights)
        except EnvoyError as exc:
            raise ServingError(f"{action}: Envoy did not confirm weights {weights}: {exc}") from exc
        change = TrafficChange(
            action=action,
            weights=applied.weights,
            previous=applied.previous,
            routes_version=applied.version,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
            apply_ms=applied.apply_ms,
            applied_at=applied.applied_at,
        )
        self.last_change = change
        logger.info(
            "%s: Envoy serves %d/%d, %g mirrored (was %s), %.1f ms after the call",
            action,
            weights.champion,
            weights.candidate,
            weights.shadow,
            None if applied.previous is None else f"{applied.previous.champion}/{applied.previous.candidate}",
            change.elapsed_ms,
        )
        return change

    def persist(self, weights: Weights) -> None:
        """Write ``weights`` for Envoy's next start (while it is not running)."""
        write_routes(self.layout, weights, new_version(weights))

    def observed_percent(self) -> dict[Arm, int]:
        """The split Envoy serves now; raises :class:`EnvoyError` when its admin does not answer."""
        return percent(self.envoy.observed_weights())

    def observed_weights(self) -> Weights:
        """The weights and mirrored share Envoy serves now (:class:`EnvoyError` without admin)."""
        return self.envoy.observed_weights()
