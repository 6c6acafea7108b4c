"""Which arm a KServe payload-logger event came from, for the collector running in the cluster.

KServe's logger agent names the pod in ``ce-source`` and the InferenceService in
``ce-inferenceservicename`` — not the arm, not the model version. A Knative pod is
``<revision>-deployment-<hash>-<hash>``: the revision maps to its version through the
InferenceService's ``mlcanary.io/revisions`` history, and to an arm through the canary in progress.
In Standard mode the InferenceService itself names the arm (``<model><candidate_suffix>``).
Lookups are cached for ``ttl_s`` per (InferenceService, pod), so a busy collector reads the API
rarely; an event that cannot be resolved is stored without an arm (and logged), never refused.

The shadow phase: KServe's logger does not pass on the ``-shadow`` host of a mirrored copy, but a
candidate that gets no weight while the route mirrors to it (Standard mode, ``shadowing``) only
ever answers copies, so its events are marked ``shadow`` (cached ``ttl_s`` per model as well). So
that the cache never files a live answer as a copy, Standard mode leaves the shadow phase through a
pause of ``kserve.arm_cache_s`` (this ``ttl_s``) + 1 s with neither mirror nor weight on the
candidate (:meth:`~mlcanary.serving.kserve.standard.StandardRollout.set_traffic`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from mlcanary.rollout.arms import CANDIDATE
from mlcanary.telemetry.events import InferenceEvent

logger = logging.getLogger(__name__)


class PodArms(Protocol):
    def arm_of_pod(self, isvc_name: str, pod: str) -> tuple[str, str, str | None] | None: ...

    def candidate_mirrored_only(self, model: str) -> bool:
        """Whether the candidate of ``model`` now receives mirrored copies and no user request."""
        ...


class ArmResolver:
    """``InferenceEvent`` → the same event with model, arm and version filled in (see the module)."""

    def __init__(self, serving: PodArms, *, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.serving = serving
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[float, tuple[str, str, str | None] | None]] = {}
        self._mirrored: dict[str, tuple[float, bool]] = {}

    def __call__(self, event: InferenceEvent) -> InferenceEvent:
        if event.arm is not None or not event.model:
            return event
        key = (event.model, event.source)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is None or now - cached[0] > self.ttl_s:
            try:
                found = self.serving.arm_of_pod(event.model, event.source)
            except Exception as exc:  # the event is kept either way; its arm stays unknown
                logger.warning("cannot resolve the arm of %s/%s: %s", event.model, event.source, exc)
                return event
            cached = (now, found)
            self._cache[key] = cached
        found = cached[1]
        if found is None:
            return event
        model, arm, version = found
        shadow = event.shadow or (arm == CANDIDATE and self._mirrored_only(model, now))
        return replace(event, model=model, arm=arm, version=event.version or version, shadow=shadow)

    def _mirrored_only(self, model: str, now: float) -> bool:
        cached = self._mirrored.get(model)
        if cached is None or now - cached[0] > self.ttl_s:
            try:
                mirrored = self.serving.candidate_mirrored_only(model)
            except Exception as exc:  # filed as live: the shadow checks then see fewer copies
                logger.warning("cannot tell whether %s mirrors to its candidate: %s", model, exc)
                mirrored = False
            cached = (now, mirrored)
            self._mirrored[model] = cached
        return cached[1]
