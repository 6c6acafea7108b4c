"""``KServeBackend``: the :class:`~mlcanary.rollout.serving.ServingBackend` of a Kubernetes cluster.

Each call reads the model's InferenceService, detects the deployment mode it runs in (its
annotation in either spelling, else ``status.deploymentMode``; ``kserve.deployment_mode`` for one
that does not exist yet) and runs that mode's sequence:

* Knative (older name Serverless): :class:`~mlcanary.serving.kserve.knative.KnativeRollout`,
  ``canaryTrafficPercent`` on one InferenceService;
* Standard (older name RawDeployment), where KServe ignores that field:
  :class:`~mlcanary.serving.kserve.standard.StandardRollout`, two InferenceServices and our own
  Istio VirtualService with exact weights. Never a silent no-op.

Contract beyond the protocol's: every write is a JSON merge patch carrying the read's
``resourceVersion`` (409 → read again and decide again); API calls retry with backoff on 5xx, 429
and timeouts; the release is named in the InferenceService's ``mlcanary.io/*`` annotations. The
backend keeps no state between calls: any process (a CLI command, a flow run in a pod) sees the same.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kubernetes import client as k8s

from mlcanary.rollout.arms import CANDIDATE, CHAMPION, Arm
from mlcanary.rollout.serving import ServingError, ServingStatus
from mlcanary.serving.kserve.knative import KnativeRollout, isvc_ref
from mlcanary.serving.kserve.kube import KubeApi, api_client
from mlcanary.serving.kserve.objects import DeploymentMode, mode_of, parse_mode
from mlcanary.serving.kserve.observe import revisions_by_arm, view
from mlcanary.serving.kserve.standard import StandardRollout, deployment_name
from mlcanary.serving.kserve.storage import MlflowStorageResolver, StorageResolver

if TYPE_CHECKING:
    from mlcanary.config import KServeSettings, Settings

# Knative pods are <revision>-deployment-<replicaset hash>-<pod hash>; Standard ones <isvc>-predictor-….
_KNATIVE_POD = re.compile(r"^(?P<revision>.+-\d{5})-deployment-[a-z0-9]+-[a-z0-9]+$")


def _check_percent(percent: int) -> None:
    if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
        raise ServingError(f"candidate_percent must be an integer 0..100, got {percent!r}")


class KServeBackend:
    """``ServingBackend`` over KServe InferenceServices (see the module docstring)."""

    def __init__(self, settings: KServeSettings, api: KubeApi, resolve: StorageResolver) -> None:
        self.settings = settings
        self.api = api
        self.resolve = resolve
        self.default_mode = parse_mode(settings.deployment_mode)
        self.knative = KnativeRollout(api, settings, resolve)
        self.standard = StandardRollout(api, k8s.AppsV1Api(api.custom.api_client), settings, resolve)

    @classmethod
    def from_settings(cls, settings: Settings) -> KServeBackend:
        """The backend for ``settings.kserve`` with MLflow resolving storage URIs."""
        ks = settings.kserve
        api = KubeApi(
            api_client(api_url=ks.api_url, context=ks.context),
            timeout_s=ks.request_timeout_s,
            retries=ks.retries,
            backoff_s=ks.backoff_s,
        )
        resolver = MlflowStorageResolver(
            settings.tracking_uri, settings.registry_uri, ks.proxied_artifacts_root
        )
        return cls(ks, api, resolver)

    def mode(self, model: str) -> DeploymentMode:
        """The mode ``model``'s InferenceService runs in (the configured one if it does not exist)."""
        obj = self.api.get(isvc_ref(model, self.settings.namespace))
        try:
            return self.default_mode if obj is None else mode_of(obj, self.default_mode)
        except ValueError as exc:
            raise ServingError(f"{model}: {exc}; mlcanary drives Knative and Standard mode only") from None

    def _rollout(self, model: str) -> KnativeRollout | StandardRollout:
        return self.knative if self.mode(model) is DeploymentMode.KNATIVE else self.standard

    # -- the protocol ----------------------------------------------------------------------------

    def deploy(
        self, model: str, champion: str, candidate: str | None = None, candidate_percent: int = 0
    ) -> ServingStatus:
        _check_percent(candidate_percent)
        if candidate is None and candidate_percent:
            raise ServingError(f"candidate_percent={candidate_percent} needs a candidate version")
        return self._rollout(model).deploy(
            model, str(champion), None if candidate is None else str(candidate), candidate_percent
        )

    def set_traffic(self, model: str, candidate_percent: int) -> ServingStatus:
        _check_percent(candidate_percent)
        return self._rollout(model).set_traffic(model, candidate_percent)

    def set_shadow(self, model: str, share: float) -> ServingStatus:
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < share <= 1.0:
            raise ServingError(f"shadow share must be within (0, 1], got {share!r}")
        return self._rollout(model).set_shadow(model, float(share))

    def promote(self, model: str) -> ServingStatus:
        return self._rollout(model).promote(model)

    def rollback(self, model: str) -> ServingStatus:
        return self._rollout(model).rollback(model)

    def status(self, model: str) -> ServingStatus:
        return self._rollout(model).status(model)

    # -- who serves what (metrics, the collector) ------------------------------------------------

    def workloads(self, model: str) -> dict[Arm, list[str]]:
        """Kubernetes workloads (Deployments) serving each arm now: Istio's ``destination_workload``."""
        if self.mode(model) is DeploymentMode.STANDARD:
            champion, candidate = self.standard.names(model)
            found: dict[Arm, list[str]] = {CHAMPION: [deployment_name(champion)], CANDIDATE: []}
            if self.api.get(isvc_ref(candidate, self.settings.namespace)) is not None:
                found[CANDIDATE].append(deployment_name(candidate))
            return found
        obj = self.api.get(isvc_ref(model, self.settings.namespace))
        if obj is None:
            return {CHAMPION: [], CANDIDATE: []}
        return {
            arm: [f"{rev}-deployment" for rev in revs] for arm, revs in revisions_by_arm(view(obj)).items()
        }

    def services(self, model: str) -> dict[Arm, list[str]]:
        """Kubernetes Services the proxies route each arm's requests to (Istio's
        ``destination_service_name``): Standard mode's ``<isvc>-predictor`` (our VirtualService's
        destinations), a Knative revision's ``<revision>`` and ``<revision>-private``."""
        if self.mode(model) is DeploymentMode.STANDARD:
            return self.workloads(model)  # the predictor Service is named as its Deployment
        found: dict[Arm, list[str]] = {}
        for arm, deployments in self.workloads(model).items():
            revisions = [d.removesuffix("-deployment") for d in deployments]
            found[arm] = [*revisions, *(f"{revision}-private" for revision in revisions)]
        return found

    def candidate_mirrored_only(self, model: str) -> bool:
        """Whether the candidate of ``model`` gets no user request while the route mirrors to it (the
        shadow phase, Standard mode only)."""
        if self.mode(model) is not DeploymentMode.STANDARD:
            return False
        observed = self.standard.status(model)
        return bool(observed.shadow) and observed.candidate_percent == 0

    def arm_of_pod(self, isvc_name: str, pod: str) -> tuple[str, Arm, str | None] | None:
        """(model, arm, version) of the pod that sent a logger event (its ``ce-source``), or None.

        Knative: the pod names its revision, mapped through the revision history. Standard: the
        InferenceService it belongs to names the arm."""
        suffix = self.settings.candidate_suffix
        ns = self.settings.namespace
        if isvc_name.endswith(suffix):
            model = isvc_name[: -len(suffix)]
            obj = self.api.get(isvc_ref(isvc_name, ns))
            return (model, CANDIDATE, view(obj).version if obj else None)
        obj = self.api.get(isvc_ref(isvc_name, ns))
        if obj is None:
            return None
        v = view(obj)
        match = _KNATIVE_POD.match(pod)
        if match is None or mode_of(obj, self.default_mode) is DeploymentMode.STANDARD:
            return (isvc_name, CHAMPION, v.version)
        revision = match.group("revision")
        for arm, revisions in revisions_by_arm(v).items():
            if revision in revisions:
                return (isvc_name, arm, v.version_of(revision))
        return (isvc_name, CHAMPION, v.version_of(revision))
