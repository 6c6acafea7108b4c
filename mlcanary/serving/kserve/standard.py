"""Standard mode (older name RawDeployment): two InferenceServices and our own Istio VirtualService.

KServe ignores ``canaryTrafficPercent`` in Standard mode (kserve issue 5335), so the split is ours:

* ``<model>`` serves the champion and ``<model><candidate_suffix>`` the candidate; the candidate's
  model server answers under the public model name (``MLSERVER_MODEL_NAME`` / ``--model_name``), so
  ``/v1/models/<model>:predict`` and ``/v2/models/<model>/infer`` reach either arm unchanged;
* the VirtualService ``<model>-mlcanary`` (ours: KServe's and Knative's own are reconciled back if
  edited) routes the public host with exact integer weights, lets the arm header force an arm, and
  sets ``x-mlcanary-arm-served`` (as Envoy does locally) on responses;
* a model change is a Deployment rolling update: it is complete when the predictor Deployment
  runs the new storage URI in every replica (``kubectl rollout status``'s rule), read from
  ``apps/v1`` — the InferenceService stays Ready on its old pods meanwhile.

Observed weights are the VirtualService as the API server stores it (what Istio is told); readiness
comes from each InferenceService and its Deployment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.serving import ArmStatus, ServingError, ServingStatus
from mlcanary.serving.kserve.knative import isvc_ref
from mlcanary.serving.kserve.kube import KubeApi, Object, Ref
from mlcanary.serving.kserve.manifests import (
    ModelChange,
    inference_service,
    model_change_patch,
    virtual_service,
    virtual_service_mirror,
    virtual_service_name,
    virtual_service_weights,
)
from mlcanary.serving.kserve.objects import (
    ANN_VERSION,
    ISTIO_GROUP,
    ISTIO_VERSION,
    VS_KIND,
    VS_PLURAL,
    DeploymentMode,
)
from mlcanary.serving.kserve.observe import view
from mlcanary.serving.kserve.storage import StorageResolver

if TYPE_CHECKING:
    from mlcanary.config import KServeSettings

logger = logging.getLogger(__name__)
SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"


_CACHE_MARGIN_S = 1.0
"""Added to ``arm_cache_s``: a lookup made just before the route changed has surely expired."""


def deployment_name(isvc: str) -> str:
    """The predictor Deployment KServe creates in Standard mode."""
    return f"{isvc}-predictor"


class StandardRollout:
    """The Standard-mode sequences of :class:`~mlcanary.serving.kserve.backend.KServeBackend`."""

    def __init__(
        self, api: KubeApi, apps: k8s.AppsV1Api, settings: KServeSettings, resolve: StorageResolver
    ) -> None:
        self.api = api
        self.apps = apps
        self.settings = settings
        self.resolve = resolve
        self.sleep: Callable[[float], None] = time.sleep

    def names(self, model: str) -> tuple[str, str]:
        return model, model + self.settings.candidate_suffix

    def vs_ref(self, model: str) -> Ref:
        return Ref(
            ISTIO_GROUP,
            ISTIO_VERSION,
            VS_PLURAL,
            self.settings.namespace,
            virtual_service_name(model),
            VS_KIND,
        )

    # -- the protocol ----------------------------------------------------------------------------

    def deploy(self, model: str, champion: str, candidate: str | None, percent: int) -> ServingStatus:
        champion_isvc, candidate_isvc = self.names(model)
        problem = self._ensure_version(champion_isvc, model, champion, CHAMPION, serve_as=None)
        if problem:
            raise ServingError(f"champion v{champion} of {model!r} is not serving: {problem}")
        if candidate is None:
            if self.api.get(isvc_ref(candidate_isvc, self.settings.namespace)) is not None:
                return self.rollback(model)
            self._set_weights(model, 0, with_candidate=False)
            return self.status(model, f"deploy: champion v{champion} at 100% (VirtualService)")
        # The route to the candidate exists at 0% before the candidate does.
        self._set_weights(model, 0, with_candidate=True)
        problem = self._ensure_version(candidate_isvc, model, candidate, CANDIDATE, serve_as=model)
        if problem:
            logger.warning("candidate of %s is not serving: %s", model, problem)
            return self.status(model, f"deploy: candidate not serving (0% routed to it): {problem}")
        self._set_weights(model, percent, with_candidate=True)
        return self.status(model, f"deploy: candidate v{candidate} at {percent}% (VirtualService)")

    def set_traffic(self, model: str, percent: int) -> ServingStatus:
        _, candidate_isvc = self.names(model)
        candidate = self.api.get(isvc_ref(candidate_isvc, self.settings.namespace))
        if candidate is None:
            if percent == 0:
                return self.status(model)
            raise ServingError(
                f"cannot send {percent}% of {model!r} to a candidate: no candidate is deployed"
            )
        if percent > 0 and not view(candidate).ready:
            raise ServingError(
                f"cannot send {percent}% of {model!r} to the candidate: it is not ready "
                f"({view(candidate).pending_reason()})"
            )
        self._leave_shadow(model, percent)
        self._set_weights(model, percent, with_candidate=True)
        return self.status(model, f"set_traffic: VirtualService weights {100 - percent}/{percent}")

    def set_shadow(self, model: str, share: float) -> ServingStatus:
        _, candidate_isvc = self.names(model)
        candidate = self.api.get(isvc_ref(candidate_isvc, self.settings.namespace))
        if candidate is None or not view(candidate).ready:
            why = "no candidate is deployed" if candidate is None else view(candidate).pending_reason()
            raise ServingError(f"cannot mirror {model!r} to the candidate: {why}")
        self._set_weights(model, 0, with_candidate=True, mirror_share=share)
        return self.status(
            model, f"set_shadow: 100/0 with {share:.0%} mirrored to {candidate_isvc} (VirtualService)"
        )

    def promote(self, model: str) -> ServingStatus:
        champion_isvc, candidate_isvc = self.names(model)
        ns = self.settings.namespace
        candidate = self.api.get(isvc_ref(candidate_isvc, ns))
        champion = self.api.get(isvc_ref(champion_isvc, ns))
        if candidate is None:
            return self.status(model, "promote: no candidate InferenceService (nothing to do)")
        target = view(candidate).version
        if target is None:
            raise ServingError(f"refusing to promote {model!r}: {candidate_isvc} does not say its version")
        if champion is not None and view(champion).version != target:
            if not view(candidate).ready:
                raise ServingError(
                    f"refusing to promote {model!r}: candidate v{target} is not ready "
                    f"({view(candidate).pending_reason()})"
                )
            # The candidate carries everything while the champion's pods roll to its model.
            self._set_weights(model, 100, with_candidate=True)
            problem = self._ensure_version(champion_isvc, model, target, CHAMPION, serve_as=None)
            if problem:
                raise ServingError(
                    f"promote of {model!r}: the champion InferenceService did not roll to v{target}: "
                    f"{problem}; the candidate keeps 100% meanwhile"
                )
        self._set_weights(model, 0, with_candidate=False)
        self.api.delete(isvc_ref(candidate_isvc, ns))
        return self.status(model, f"promote: {champion_isvc} serves v{target} with 100%")

    def rollback(self, model: str) -> ServingStatus:
        _, candidate_isvc = self.names(model)
        # Traffic first: the rollback must reach Istio before anything else happens.
        self._set_weights(model, 0, with_candidate=False)
        self.api.delete(isvc_ref(candidate_isvc, self.settings.namespace))
        return self.status(model, "rollback: 100% to the champion (VirtualService); candidate deleted")

    def status(self, model: str, note: str | None = None) -> ServingStatus:
        champion_isvc, candidate_isvc = self.names(model)
        ns = self.settings.namespace
        notes = [note] if note else []
        arms: dict[str, ArmStatus] = {}
        for arm, name in ((CHAMPION, champion_isvc), (CANDIDATE, candidate_isvc)):
            obj = self.api.get(isvc_ref(name, ns))
            if obj is None:
                continue
            v = view(obj)
            arms[arm] = ArmStatus(
                arm, v.version, v.ready, url=v.url, detail=None if v.ready else v.pending_reason()
            )  # type: ignore[arg-type]
        vs = self.api.get(self.vs_ref(model))
        traffic = virtual_service_weights(vs, self.settings) if vs is not None else None
        if vs is None and arms:
            notes.append(f"no VirtualService {virtual_service_name(model)}: Istio routes nothing for {model}")
        if traffic is not None:
            for arm, share in traffic.items():
                status = arms.get(arm)  # type: ignore[call-overload]
                if share and (status is None or not status.ready):
                    notes.append(f"{arm} gets {share}% but is not ready: that share fails")
        return ServingStatus(
            model=model,
            arms=arms,  # type: ignore[arg-type]
            traffic=traffic,  # type: ignore[arg-type]
            endpoint=f"http://{model}.{ns}.{self.settings.domain}",
            detail="; ".join(notes) or None,
            shadow=virtual_service_mirror(vs) if vs is not None else 0.0,
        )

    # -- steps -----------------------------------------------------------------------------------

    def _leave_shadow(self, model: str, percent: int) -> None:
        """From mirroring to serving users: first stop the mirror with no weight on the candidate,
        then wait out the collector's cache of the phase (``arm_cache_s``). KServe's logger does not
        say whether a request was a copy, so the collector tells from the route; without the pause,
        its cached view would file the candidate's first live answers as copies."""
        vs = self.api.get(self.vs_ref(model))
        if percent == 0 or vs is None or virtual_service_mirror(vs) == 0:
            return
        self._set_weights(model, 0, with_candidate=True)
        if self.settings.arm_cache_s > 0:
            self.sleep(self.settings.arm_cache_s + _CACHE_MARGIN_S)

    def _set_weights(
        self, model: str, percent: int, *, with_candidate: bool, mirror_share: float = 0.0
    ) -> None:
        """Write our VirtualService: ``percent`` to the candidate and, in the shadow phase, a
        ``mirror_share``; every other write ends the mirroring."""
        champion_isvc, candidate_isvc = self.names(model)
        ref = self.vs_ref(model)
        desired = virtual_service(
            model,
            champion_isvc,
            candidate_isvc if with_candidate else None,
            percent,
            self.settings,
            mirror_share=mirror_share,
        )
        if self.api.get(ref) is None:
            self.api.create(ref, desired)

        def decide(obj: Object) -> Object | None:
            if obj.get("spec") == desired["spec"]:
                return None
            return {"spec": desired["spec"]}

        self.api.update(ref, decide)

    def _ensure_version(
        self, name: str, model: str, version: str, arm: str, *, serve_as: str | None
    ) -> str | None:
        """Make InferenceService ``name`` serve ``version``; None once every replica runs it, else why not."""
        ref = isvc_ref(name, self.settings.namespace)
        uri = self.resolve(model, version)
        obj = self.api.get(ref)
        change = ModelChange(model, version, uri, version, [], champion_storage_uri=None)
        if obj is None:
            body = inference_service(
                name, change, self.settings, mode=DeploymentMode.STANDARD, arm=arm, serve_as=serve_as
            )
            self.api.create(ref, body)
        elif view(obj).version != version or view(obj).storage_uri != uri:
            self.api.update(
                ref,
                lambda cur: (
                    None
                    if view(cur).version == version and view(cur).storage_uri == uri
                    else model_change_patch(change, self.settings, resource_version=None, serve_as=serve_as)
                ),
            )
        return self._await_rollout(name, uri)

    def _await_rollout(self, name: str, uri: str) -> str | None:
        ref = isvc_ref(name, self.settings.namespace)

        def outcome(current: Object | None) -> str | None:
            if current is None:
                return f"{name} was deleted"
            v = view(current)
            if v.failure:
                return v.failure
            if not v.ready:
                return None
            return "" if self._rolled_out(name, uri) else None

        try:
            return self.api.wait(ref, outcome, timeout_s=self.settings.ready_timeout_s) or None
        except TimeoutError:
            v = view(self.api.get(ref) or {})
            return f"not rolled out after {self.settings.ready_timeout_s:g}s: {v.pending_reason()}"

    def _rolled_out(self, name: str, uri: str) -> bool:
        """``kubectl rollout status`` for the predictor Deployment, on the pod template with ``uri``."""
        try:
            deployment = self.apps.read_namespaced_deployment(
                deployment_name(name),
                self.settings.namespace,
                _request_timeout=self.settings.request_timeout_s,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise ServingError(f"reading Deployment {deployment_name(name)}: HTTP {exc.status}") from exc
        template = deployment.spec.template.metadata.annotations or {}
        if template.get(SOURCE_URI_ANNOTATION) != uri:
            return False
        status = deployment.status
        generation = deployment.metadata.generation or 0
        replicas = deployment.spec.replicas or 0
        return (
            (status.observed_generation or 0) >= generation
            and (status.updated_replicas or 0) >= replicas
            and (status.replicas or 0) == (status.updated_replicas or 0)
            and (status.available_replicas or 0) >= replicas
        )


def version_annotation(obj: Object) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_VERSION)
