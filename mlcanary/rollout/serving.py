"""The serving seam: what the rollout engine asks of any place that serves models.

Two arms serve one registered model: ``champion`` (the version holding ``@champion``) and
``candidate`` (the version under canary), see :mod:`mlcanary.rollout.arms`. Implementations live
under :mod:`mlcanary.serving`: :class:`mlcanary.serving.local.backend.LocalBackend` (Envoy in front
of two local model servers) is the one shipped here; any other (e.g. a KServe InferenceService with
``canaryTrafficPercent``) implements the same contract and is chosen in :mod:`mlcanary.wiring`.

Contract for every implementation:

* every method is idempotent: calling it again with the same arguments after a crash or a retry
  converges on the same state and does no harm;
* ``status()`` reports what the serving layer *observes* (weights read back from Envoy's admin API or
  from KServe's ``status.components.predictor.traffic``), never what was last written;
* a change of traffic returns only once the serving layer confirms it (or raises ``ServingError``);
* ``set_shadow`` mirrors a share of requests to the candidate while every user is answered by the
  champion (the mirror's answers are discarded); ``set_traffic``, ``promote`` and ``rollback``
  end any mirroring;
* a split that is not really happening (a candidate that never became ready, a KServe mode that
  ignores ``canaryTrafficPercent``) is reported as such, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mlcanary.rollout.arms import Arm


class ServingError(RuntimeError):
    """The serving layer could not do what was asked; the message says what and why."""


@dataclass(frozen=True)
class ArmStatus:
    """One arm as observed: which version it serves, whether it is ready, and where."""

    arm: Arm
    version: str | None
    ready: bool
    url: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class ServingStatus:
    """Observed state of a model's serving: arms and the traffic split in percent (sums to 100).

    ``traffic`` is None when nothing is serving the model. ``shadow`` is the share (0-1) of requests
    mirrored to the candidate (0 when none; None when the serving layer cannot say).
    """

    model: str
    arms: dict[Arm, ArmStatus] = field(default_factory=dict)
    traffic: dict[Arm, int] | None = None
    endpoint: str | None = None
    detail: str | None = None
    shadow: float | None = 0.0

    @property
    def candidate_percent(self) -> int:
        return 0 if self.traffic is None else self.traffic.get("candidate", 0)


class ServingBackend(Protocol):
    """Deploy, split, promote and roll back one model's two arms (see the module contract)."""

    def deploy(
        self, model: str, champion: str, candidate: str | None = None, candidate_percent: int = 0
    ) -> ServingStatus:
        """Serve ``champion`` (and ``candidate`` at ``candidate_percent`` %) for ``model``."""
        ...

    def set_traffic(self, model: str, candidate_percent: int) -> ServingStatus:
        """Send ``candidate_percent`` % of requests to the candidate arm, the rest to the champion."""
        ...

    def set_shadow(self, model: str, share: float) -> ServingStatus:
        """Every user request to the champion; mirror ``share`` (0 < share <= 1) of them to the
        candidate, whose answers are discarded. Raises ``ServingError`` where mirroring is not
        available, or for a candidate that is not ready."""
        ...

    def promote(self, model: str) -> ServingStatus:
        """All traffic to the candidate's version, which becomes the only (champion) arm."""
        ...

    def rollback(self, model: str) -> ServingStatus:
        """All traffic to the champion at once; then retire the candidate arm."""
        ...

    def status(self, model: str) -> ServingStatus:
        """What is observed serving right now."""
        ...
