"""Knative mode: one InferenceService per model, the canary split by ``canaryTrafficPercent``.

The sequences (each step idempotent, each re-run after a crash converges):

* **deploy** — create the InferenceService with the champion (the canary field has no effect on a
  first deploy), then change the model *and* set ``canaryTrafficPercent`` in one update: KServe gives
  the new revision that share once it is ready. A candidate revision that fails or never gets ready
  is *returned* as not ready with KServe's reason (the judge's availability check then rolls the
  release back), not raised: raising would leave the release stuck before its first tick.
* **set_traffic** — only the field changes (no new revision); confirmed from ``traffic[]``.
* **promote** — remove the field (merge patch ``null``): the candidate's revision takes 100 %.
* **rollback** (durable) — pin 0 % (confirmed), restore the champion's model while pinned, wait until
  that new revision is ready, then unpin. Merely setting 0 would leave the bad model in the spec,
  and removing the field later would send it everything again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlcanary.rollout.serving import ServingError, ServingStatus
from mlcanary.serving.kserve.kube import KubeApi, Object, Ref
from mlcanary.serving.kserve.manifests import (
    ModelChange,
    inference_service,
    model_change_patch,
    traffic_patch,
)
from mlcanary.serving.kserve.objects import (
    ANN_CHAMPION_URI,
    ISVC_KIND,
    ISVC_PLURAL,
    KSERVE_GROUP,
    KSERVE_VERSION,
    DeploymentMode,
    extend_history,
    revision_number,
)
from mlcanary.serving.kserve.observe import IsvcView, serving_status, view
from mlcanary.serving.kserve.storage import StorageResolver

if TYPE_CHECKING:
    from mlcanary.config import KServeSettings

logger = logging.getLogger(__name__)
#: Longest wait for KServe to reflect a traffic change (no new pods are involved).
TRAFFIC_TIMEOUT_S = 120.0


def isvc_ref(name: str, namespace: str) -> Ref:
    return Ref(KSERVE_GROUP, KSERVE_VERSION, ISVC_PLURAL, namespace, name, ISVC_KIND)


class KnativeRollout:
    """The Knative-mode sequences of :class:`~mlcanary.serving.kserve.backend.KServeBackend`."""

    def __init__(self, api: KubeApi, settings: KServeSettings, resolve: StorageResolver) -> None:
        self.api = api
        self.settings = settings
        self.resolve = resolve

    def ref(self, model: str) -> Ref:
        return isvc_ref(model, self.settings.namespace)

    # -- the protocol ----------------------------------------------------------------------------

    def deploy(self, model: str, champion: str, candidate: str | None, percent: int) -> ServingStatus:
        ref = self.ref(model)
        obj = self.api.get(ref)
        if obj is None:
            uri = self.resolve(model, champion)
            change = ModelChange(model, champion, uri, champion, [(1, champion)], champion_storage_uri=uri)
            self.api.create(ref, inference_service(model, change, self.settings, mode=DeploymentMode.KNATIVE))
            self._await_revision(ref, 0, f"champion v{champion}", raise_on_failure=True)
            obj = self.api.get(ref)
        v = view(obj or {})
        if not _champion_is(v, champion):
            if v.candidate_version is not None or v.canary_percent is not None:
                self.rollback(model)
            self._replace_champion(model, champion)
            v = view(self.api.get(ref) or {})
        if candidate is None:
            if v.candidate_version is not None or v.canary_percent is not None:
                return self.rollback(model)
            return self.status(model)
        if v.candidate_version not in (None, candidate):
            self.rollback(model)
        elif v.candidate_version == candidate:
            return self._settle_canary(model, percent)
        return self._start_canary(model, champion, candidate, percent)

    def set_shadow(self, model: str, share: float) -> ServingStatus:
        """Not available: Knative mode splits one InferenceService's revisions by
        ``canaryTrafficPercent`` and leaves no route of ours to mirror from."""
        raise ServingError(
            f"the shadow phase of {model!r} needs KServe's Standard (RawDeployment) mode, where mlcanary "
            "owns the VirtualService it mirrors from; in Knative mode turn rollout.shadow off, or "
            "deploy the model in Standard mode (kserve.deployment_mode: Standard)"
        )

    def set_traffic(self, model: str, percent: int) -> ServingStatus:
        ref = self.ref(model)

        def decide(obj: Object) -> Object | None:
            v = view(obj)
            if v.candidate_version is None:
                if percent == 0:
                    return None
                raise ServingError(
                    f"cannot send {percent}% of {model!r} to a candidate: no canary in progress"
                )
            if percent > 0 and v.latest_created != v.latest_ready:
                raise ServingError(
                    f"cannot send {percent}% of {model!r} to candidate v{v.candidate_version}: its revision "
                    f"is not ready ({v.failed_after(None) or v.pending_reason()})"
                )
            return None if v.canary_percent == percent else traffic_patch(percent, resource_version=None)

        self.api.update(ref, decide)
        self._await_share(ref, percent)
        return self.status(model, f"set_traffic: candidate {percent}% confirmed by KServe's traffic[]")

    def promote(self, model: str) -> ServingStatus:
        ref = self.ref(model)

        def decide(obj: Object) -> Object | None:
            v = view(obj)
            if v.candidate_version is None:
                if v.canary_percent is not None:
                    raise ServingError(
                        f"refusing to promote {model!r}: a rollback is restoring the champion "
                        f"(canaryTrafficPercent pinned at {v.canary_percent}); run rollback to finish it"
                    )
                return None
            if v.latest_created != v.latest_ready:
                raise ServingError(
                    f"refusing to promote {model!r}: candidate v{v.candidate_version} is not ready "
                    f"({v.failed_after(None) or v.pending_reason()})"
                )
            return traffic_patch(None, resource_version=None)

        obj = self.api.update(ref, decide)
        target = view(obj).latest_created

        def promoted(current: Object | None) -> bool | None:
            v = view(current or {})
            if v.canary_percent is None and v.latest_rolledout == target and v.share(target) == 100:
                return True
            return None

        self._wait(ref, promoted, TRAFFIC_TIMEOUT_S, f"promotion of {target} to 100%")
        return self.status(model, f"promote: revision {target} serves 100%")

    def rollback(self, model: str) -> ServingStatus:
        ref = self.ref(model)
        v = view(self.api.get(ref) or {})
        if v.candidate_version is None and v.canary_percent is None:
            return self.status(model, "rollback: no canary in progress (nothing to do)")
        if v.candidate_version is not None and v.canary_percent != 0:
            self.api.update(
                ref,
                lambda obj: (
                    traffic_patch(0, resource_version=None)
                    if view(obj).candidate_version is not None and view(obj).canary_percent != 0
                    else None
                ),
            )
            self._await_share(ref, 0)
            logger.info("rollback of %s: candidate pinned at 0%% (confirmed)", model)
        v = view(self.api.get(ref) or {})
        if v.candidate_version is not None:
            self._restore_champion(model, v)
        self.api.update(
            ref,
            lambda obj: (
                traffic_patch(None, resource_version=None)
                if view(obj).candidate_version is None and view(obj).canary_percent is not None
                else None
            ),
        )

        def unpinned(current: Object | None) -> bool | None:
            cur = view(current or {})
            done = cur.latest_created == cur.latest_ready and cur.share(cur.latest_created) == 100
            return True if cur.canary_percent is None and done else None

        self._wait(ref, unpinned, TRAFFIC_TIMEOUT_S, "the restored champion revision to take 100%")
        return self.status(model, "rollback: champion's model restored in a new revision serving 100%")

    def status(self, model: str, note: str | None = None) -> ServingStatus:
        observed = serving_status(model, self.api.get(self.ref(model)))
        if note:
            detail = "; ".join(x for x in (note, observed.detail) if x)
            observed = ServingStatus(
                observed.model, observed.arms, observed.traffic, observed.endpoint, detail
            )
        return observed

    # -- steps -----------------------------------------------------------------------------------

    def _start_canary(self, model: str, champion: str, candidate: str, percent: int) -> ServingStatus:
        ref = self.ref(model)
        uri = self.resolve(model, candidate)
        # Where a rollback restores the champion from: the registry's answer now, never an annotation
        # written by an earlier release (a promotion since then changed the champion).
        champion_uri = self.resolve(model, champion)
        self._await_caught_up(ref)
        before: dict[str, int | None] = {}

        def decide(obj: Object) -> Object | None:
            v = view(obj)
            if v.candidate_version == candidate:
                before.setdefault("n", None)
                return None
            before["n"] = revision_number(v.latest_created)
            change = ModelChange(
                model,
                candidate,
                uri,
                champion,
                extend_history(v.history, v.latest_created, candidate),
                champion_storage_uri=champion_uri,
                release=True,
            )
            return model_change_patch(change, self.settings, resource_version=None, canary_percent=percent)

        self.api.update(ref, decide)
        return self._settle_canary(model, percent, before.get("n"))

    def _settle_canary(self, model: str, percent: int, before: int | None = None) -> ServingStatus:
        """Wait until the candidate's revision serves ``percent`` or KServe says it will not."""
        ref = self.ref(model)

        def outcome(current: Object | None) -> str | None:
            v = view(current or {})
            if v.candidate_version is None:
                return "the canary is gone (changed by someone else)"
            if v.latest_created == v.latest_ready and v.ready and (before is None or v.settled_after(before)):
                # Settled at what the spec asks; a different percent is set just below.
                return "" if v.share(v.latest_created) == v.canary_percent else None
            return v.failed_after(before if before is not None else None)

        try:
            problem = self.api.wait(ref, outcome, timeout_s=self.settings.ready_timeout_s)
        except TimeoutError:
            v = view(self.api.get(ref) or {})
            problem = f"not ready after {self.settings.ready_timeout_s:g}s: {v.pending_reason()}"
        if problem:
            logger.warning("canary of %s is not serving: %s", model, problem)
            return self.status(model, f"deploy: candidate not serving: {problem}")
        if self.status(model).candidate_percent != percent:
            return self.set_traffic(model, percent)
        return self.status(model, f"deploy: candidate at {percent}% confirmed by KServe's traffic[]")

    def _replace_champion(self, model: str, champion: str) -> None:
        """Point the InferenceService (no canary running) at another champion; wait until it serves."""
        ref = self.ref(model)
        uri = self.resolve(model, champion)
        self._await_caught_up(ref)
        before: dict[str, int | None] = {}

        def decide(obj: Object) -> Object | None:
            v = view(obj)
            if _champion_is(v, champion):
                return None
            before["n"] = revision_number(v.latest_created)
            change = ModelChange(
                model, champion, uri, champion, extend_history(v.history, v.latest_created, champion), uri
            )
            return model_change_patch(change, self.settings, resource_version=None, canary_percent=None)

        self.api.update(ref, decide)
        if "n" in before:
            self._await_revision(ref, before["n"], f"champion v{champion}", raise_on_failure=True)

    def _restore_champion(self, model: str, v: IsvcView) -> None:
        ref = self.ref(model)
        champion = v.champion_version
        if champion is None:
            raise ServingError(
                f"rollback of {model!r}: the InferenceService does not say which version is champion"
            )
        uri = v.annotations.get(ANN_CHAMPION_URI) or self.resolve(model, champion)
        self._await_caught_up(ref)
        before: dict[str, int | None] = {}

        def decide(obj: Object) -> Object | None:
            cur = view(obj)
            if cur.candidate_version is None:
                return None
            before["n"] = revision_number(cur.latest_created)
            change = ModelChange(
                model, champion, uri, champion, extend_history(cur.history, cur.latest_created, champion), uri
            )
            return model_change_patch(change, self.settings, resource_version=None, canary_percent=0)

        self.api.update(ref, decide)
        if "n" in before:
            self._await_revision(
                ref,
                before["n"],
                f"the restored champion v{champion} (traffic stays 100% on the previous champion revision "
                "while canaryTrafficPercent is pinned at 0; do not remove it by hand)",
                raise_on_failure=True,
            )

    # -- waiting ---------------------------------------------------------------------------------

    def _await_revision(self, ref: Ref, before: int | None, what: str, *, raise_on_failure: bool) -> None:
        def outcome(current: Object | None) -> str | None:
            v = view(current or {})
            if v.settled_after(before):
                return ""
            return v.failed_after(before)

        try:
            problem = self.api.wait(ref, outcome, timeout_s=self.settings.ready_timeout_s)
        except TimeoutError:
            v = view(self.api.get(ref) or {})
            problem = f"not ready after {self.settings.ready_timeout_s:g}s: {v.pending_reason()}"
        if problem and raise_on_failure:
            raise ServingError(f"{ref}: {what} did not become ready: {problem}")

    def _await_share(self, ref: Ref, percent: int) -> None:
        def reached(current: Object | None) -> bool | None:
            v = view(current or {})
            if v.candidate_version is None:
                return True if percent == 0 else None
            return True if v.share(v.latest_created) == percent else None

        self._wait(ref, reached, TRAFFIC_TIMEOUT_S, f"candidate share {percent}%")

    def _await_caught_up(self, ref: Ref) -> None:
        """Before a model change: the controller has created the revision of the last one, so the
        next revision number (recorded in the history) is known."""

        def caught_up(current: Object | None) -> bool | None:
            v = view(current or {})
            created = revision_number(v.latest_created) or 0
            return True if not v.history or v.history[-1][0] <= created else None

        self._wait(ref, caught_up, self.settings.ready_timeout_s, "KServe to create the last revision")

    def _wait(self, ref: Ref, done: Callable[[Object | None], Any], timeout_s: float, what: str) -> None:
        try:
            self.api.wait(ref, done, timeout_s=timeout_s)
        except TimeoutError:
            v = view(self.api.get(ref) or {})
            raise ServingError(
                f"{ref}: timed out after {timeout_s:g}s waiting for {what} ({v.pending_reason()}; "
                f"traffic {[(e.revision, e.percent) for e in v.traffic]})"
            ) from None


def _champion_is(v: IsvcView, champion: str) -> bool:
    """``champion`` is what the InferenceService rolls out outside a canary."""
    if v.canary_percent is not None:
        return v.champion_version == champion
    return v.version == champion
