"""The InferenceServices, VirtualService and merge patches mlcanary sends (pure: dicts in, dicts out).

Everything rendered here validates against the real CRD schemas (``tests/unit/kserve``). Custom
resources take no strategic merge patch, so every change is a JSON merge patch (RFC 7386): a
``None`` removes a field (``canaryTrafficPercent: null`` promotes). Patches carry
``metadata.resourceVersion``: the API server refuses a patch made from a stale read (409).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.serving.headers import ARM_SERVED_HEADER
from mlcanary.serving.kserve.objects import (
    ANN_CHAMPION,
    ANN_CHAMPION_URI,
    ANN_MODEL,
    ANN_RELEASE,
    ANN_REVISIONS,
    ANN_VERSION,
    ISTIO_GROUP,
    ISTIO_VERSION,
    ISVC_KIND,
    KSERVE_GROUP,
    KSERVE_VERSION,
    LABEL_ARM,
    LABEL_MANAGED_BY,
    MANAGER,
    MODE_ANNOTATION,
    TAG_ROUTING_ANNOTATION,
    VS_KIND,
    DeploymentMode,
    History,
    write_history,
)

if TYPE_CHECKING:
    from mlcanary.config import KServeSettings

#: (modelFormat, protocolVersion, runtime) per ``kserve.runtime``: MLServer is KServe's only runtime
#: listing the mlflow format; the sklearn server speaks V1 and loads one pickled file.
RUNTIMES: dict[str, tuple[str, str, str]] = {
    "mlflow": ("mlflow", "v2", "kserve-mlserver"),
    "sklearn": ("sklearn", "v1", "kserve-sklearnserver"),
}


@dataclass(frozen=True)
class ModelChange:
    """What one model change writes: the model's version, where KServe reads it, and the
    bookkeeping annotations that travel with it (see :mod:`mlcanary.serving.kserve.objects`)."""

    model: str
    version: str
    storage_uri: str
    champion_version: str
    history: History
    champion_storage_uri: str | None = None
    release: bool = False

    def annotations(self) -> dict[str, str | None]:
        return {
            ANN_MODEL: self.model,
            ANN_VERSION: self.version,
            ANN_CHAMPION: self.champion_version,
            ANN_RELEASE: f"{self.model}/{self.version}" if self.release else None,
            ANN_REVISIONS: write_history(self.history),
            ANN_CHAMPION_URI: self.champion_storage_uri,
        }


def predictor_model(
    settings: KServeSettings, storage_uri: str, serve_as: str | None = None
) -> dict[str, Any]:
    """``spec.predictor.model`` for the configured runtime. ``serve_as`` makes the model server answer
    under another model name than its InferenceService's (Standard mode's candidate answers under
    the public model name, so one URL reaches both arms)."""
    model_format, protocol, runtime = RUNTIMES[settings.runtime]
    model: dict[str, Any] = {
        "modelFormat": {"name": model_format},
        "protocolVersion": protocol,
        "runtime": runtime,
        "storageUri": storage_uri,
    }
    if settings.resources:
        model["resources"] = {kind: dict(values) for kind, values in settings.resources.items()}
    if serve_as is not None:
        # KServe merges these into the runtime's container: env by name, args appended (the last
        # --model_name wins in the sklearn server's argument parser).
        if settings.runtime == "mlflow":
            model["env"] = [{"name": "MLSERVER_MODEL_NAME", "value": serve_as}]
        else:
            model["args"] = [f"--model_name={serve_as}"]
    return model


REQUEST_ID_HEADER = "X-Request-Id"
"""Istio's per-request id, in Go's canonical spelling (the logger matches header names exactly)."""


def predictor(settings: KServeSettings, storage_uri: str, serve_as: str | None = None) -> dict[str, Any]:
    """``spec.predictor`` (without ``canaryTrafficPercent``)."""
    spec: dict[str, Any] = {
        "minReplicas": settings.min_replicas,
        "maxReplicas": max(settings.max_replicas, settings.min_replicas, 1),
        "model": predictor_model(settings, storage_uri, serve_as),
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.logger_url:
        # The logger copies the listed request headers into each event's ``metadata`` extension.
        # Istio gives every request an x-request-id and a mirrored copy keeps the original's, so it
        # pairs the candidate's answer to a copy with the champion's answer to the same request.
        spec["logger"] = {
            "mode": settings.logger_mode,
            "url": settings.logger_url,
            "metadataHeaders": [REQUEST_ID_HEADER],
        }
    return spec


def inference_service(
    name: str,
    change: ModelChange,
    settings: KServeSettings,
    *,
    mode: DeploymentMode,
    canary_percent: int | None = None,
    arm: str | None = None,
    serve_as: str | None = None,
) -> dict[str, Any]:
    """A whole InferenceService to create."""
    annotations = {k: v for k, v in change.annotations().items() if v is not None}
    annotations[MODE_ANNOTATION] = mode.value
    if mode is DeploymentMode.KNATIVE:
        annotations[TAG_ROUTING_ANNOTATION] = "true"
    labels = {LABEL_MANAGED_BY: MANAGER}
    if arm is not None:
        labels[LABEL_ARM] = arm
    spec = predictor(settings, change.storage_uri, serve_as)
    if canary_percent is not None:
        spec["canaryTrafficPercent"] = canary_percent
    return {
        "apiVersion": f"{KSERVE_GROUP}/{KSERVE_VERSION}",
        "kind": ISVC_KIND,
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"predictor": spec},
    }


def model_change_patch(
    change: ModelChange,
    settings: KServeSettings,
    *,
    resource_version: str | None,
    canary_percent: int | object | None = ...,
    serve_as: str | None = None,
) -> dict[str, Any]:
    """Merge patch that points the predictor at ``change``'s model (one new revision) and, unless
    ``canary_percent`` is ``...``, sets (int) or removes (None) ``canaryTrafficPercent`` in the same
    update — the only way KServe starts a canary on the new revision."""
    spec: dict[str, Any] = predictor(settings, change.storage_uri, serve_as)
    # A merge patch replaces lists and merges maps: send the whole model so nothing stale survives.
    spec["model"] = {**_nulls(("args", "env")), **spec["model"]}
    if canary_percent is not ...:
        spec["canaryTrafficPercent"] = canary_percent
    return {
        "metadata": _metadata_patch(resource_version, change.annotations()),
        "spec": {"predictor": spec},
    }


def traffic_patch(canary_percent: int | None, *, resource_version: str | None) -> dict[str, Any]:
    """Merge patch that only sets (or with None removes) ``canaryTrafficPercent``: no new revision."""
    return {
        "metadata": _metadata_patch(resource_version, {}),
        "spec": {"predictor": {"canaryTrafficPercent": canary_percent}},
    }


def _nulls(keys: tuple[str, ...]) -> dict[str, None]:
    return dict.fromkeys(keys)


def _metadata_patch(resource_version: str | None, annotations: Mapping[str, str | None]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


# -- Standard mode: our own VirtualService ------------------------------------------------------------


def host_of(isvc_name: str, settings: KServeSettings) -> str:
    """Public host of an InferenceService (``<name>.<namespace>.<domain>``)."""
    return f"{isvc_name}.{settings.namespace}.{settings.domain}"


def predictor_service_host(isvc_name: str, namespace: str) -> str:
    """Cluster-local host of a Standard-mode predictor's Service."""
    return f"{isvc_name}-predictor.{namespace}.svc.cluster.local"


def virtual_service_name(model: str) -> str:
    """The VirtualService mlcanary owns for ``model`` (never one of KServe's or Knative's)."""
    return f"{model}-mlcanary"


def virtual_service(
    model: str,
    champion_isvc: str,
    candidate_isvc: str | None,
    candidate_percent: int,
    settings: KServeSettings,
    *,
    resource_version: str | None = None,
    mirror_share: float = 0.0,
) -> dict[str, Any]:
    """Our VirtualService for Standard mode: exact integer weights between the two InferenceServices'
    predictors, the arm header forcing one of them, and a response header naming the arm that
    served. Both servers answer under the public model name, so paths need no rewrite. With a
    ``mirror_share`` (the shadow phase) the split route also mirrors that share of its requests
    to the candidate's predictor (Istio's ``mirror`` + ``mirrorPercentage``; Envoy discards the
    copies' answers and appends ``-shadow`` to their host)."""
    namespace = settings.namespace

    def destination(isvc: str, arm: str, weight: int | None = None) -> dict[str, Any]:
        route: dict[str, Any] = {
            "destination": {"host": predictor_service_host(isvc, namespace), "port": {"number": 80}},
            "headers": {"response": {"set": {ARM_SERVED_HEADER: arm}}},
        }
        if weight is not None:
            route["weight"] = weight
        return route

    http: list[dict[str, Any]] = []
    arms = [(CHAMPION, champion_isvc)] + ([(CANDIDATE, candidate_isvc)] if candidate_isvc else [])
    for arm, isvc in arms:
        http.append(
            {
                "name": f"force-{arm}",
                "match": [{"headers": {settings.arm_header: {"exact": arm}}}],
                "route": [destination(isvc, arm)],
            }
        )
    split = [destination(champion_isvc, CHAMPION, 100 - candidate_percent if candidate_isvc else 100)]
    if candidate_isvc:
        split.append(destination(candidate_isvc, CANDIDATE, candidate_percent))
    split_route: dict[str, Any] = {"name": "split", "route": split}
    if mirror_share > 0 and candidate_isvc:
        split_route["mirror"] = {
            "host": predictor_service_host(candidate_isvc, namespace),
            "port": {"number": 80},
        }
        split_route["mirrorPercentage"] = {"value": round(mirror_share * 100, 4)}
    http.append(split_route)
    metadata: dict[str, Any] = {
        "name": virtual_service_name(model),
        "namespace": namespace,
        "labels": {LABEL_MANAGED_BY: MANAGER, "mlcanary.io/model": model},
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": f"{ISTIO_GROUP}/{ISTIO_VERSION}",
        "kind": VS_KIND,
        "metadata": metadata,
        "spec": {
            "hosts": [host_of(model, settings)],
            "gateways": [settings.gateway, "mesh"],
            "http": http,
        },
    }


def virtual_service_mirror(vs: Mapping[str, Any]) -> float:
    """The share (0-1) of the split route's requests our VirtualService mirrors (0 without a mirror;
    a mirror without ``mirrorPercentage`` mirrors everything, as Istio does)."""
    for route in (vs.get("spec") or {}).get("http") or []:
        if route.get("name") == "split" and route.get("mirror"):
            value = (route.get("mirrorPercentage") or {}).get("value", 100.0)
            return min(max(float(value) / 100.0, 0.0), 1.0)
    return 0.0


def virtual_service_weights(vs: Mapping[str, Any], settings: KServeSettings) -> dict[str, int] | None:
    """Weights by arm of our VirtualService's split route (None when it has none)."""
    for route in (vs.get("spec") or {}).get("http") or []:
        if route.get("name") != "split":
            continue
        weights: dict[str, int] = {CHAMPION: 0, CANDIDATE: 0}
        destinations = route.get("route") or []
        for dest in destinations:
            arm = ((dest.get("headers") or {}).get("response") or {}).get("set", {}).get(ARM_SERVED_HEADER)
            if arm in weights:
                weights[arm] += int(dest.get("weight", 100 if len(destinations) == 1 else 0))
        return weights
    return None
