"""Which arm a KServe payload-logger event came from, for the collector running in the cluster.

KServe's logger agent names the pod in ``ce-source`` and the InferenceService in
``ce-inferenceservicename`` — not the arm, not the model version. A Knative pod is
``<revision>-deployment-<hash>-<hash>``: the revision maps to its version through the
InferenceService's ``mlcanary.io/revisions`` history, and to an arm through the canary in progress.
In Standard mode the InferenceService itself names the arm (``<model><candidate_suffix>``).
Lookups are cached for ``ttl_s`` per (InferenceService, pod), so a busy collector reads the API
rarely; an event that cannot be resolved is stored without an arm (and logged), never refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from mlcanary.telemetry.events import InferenceEvent

logger = logging.getLogger(__name__)


class PodArms(Protocol):
    def arm_of_pod(self, isvc_name: str, pod: str) -> tuple[str, str, str | None] | None: ...


class ArmResolver:
    """``InferenceEvent`` → the same event with model, arm and version filled in (see the module)."""

    def __init__(self, serving: PodArms, *, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.serving = serving
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[float, tuple[str, str, str | None] | None]] = {}

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
        return replace(event, model=model, arm=arm, version=event.version or version)
