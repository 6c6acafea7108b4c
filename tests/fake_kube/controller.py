"""KServe's controller, played in-process against :class:`~fake_kube.server.FakeKubeApi`'s store.

It reacts to InferenceService writes the way KServe v0.20 (with Knative and Istio) does, as far as
a canary controller can observe it:

**Knative mode** — a change of the predictor's template (everything but ``canaryTrafficPercent``,
*annotations included*: KServe copies them onto the revision) creates revision
``{name}-predictor-{n:05d}``, ready after ``ready_delay`` seconds unless its storage URI is
``broken`` (fails with ``modelStatus.lastFailureInfo`` ModelLoadFailed and PredictorReady False) or
``never_ready`` (stays Unknown). Traffic follows KServe's ksvc reconciler: with
``canaryTrafficPercent`` P and a rolled-out revision, ``latest`` (resolved by Knative to the latest
*ready* revision) gets P and ``prev`` (the last rolled-out one) the rest; a revision that reaches
100 % becomes ``latestRolledoutRevision``. ``status.observedGeneration`` is the Knative service's
(here: the number of revisions), not the InferenceService's generation.

**Standard mode** — ``canaryTrafficPercent`` is ignored (as in KServe); a storage URI change rolls
the ``{name}-predictor`` Deployment (apps/v1), complete after ``ready_delay``; the InferenceService
stays Ready on its old pods meanwhile.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fake_kube.server import ApiError, FakeKubeApi, Key

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"
_DISALLOWED = {"kubectl.kubernetes.io/last-applied-configuration"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Revision:
    name: str
    storage_uri: str
    created: float
    failure: str | None = None
    hold: bool = False

    def ready(self, now: float, delay: float) -> bool:
        return self.failure is None and not self.hold and now >= self.created + delay


@dataclass
class IsvcState:
    template: str | None = None
    revisions: list[Revision] = field(default_factory=list)
    latest_rolledout: str | None = None
    previous_rolledout: str | None = None
    uri: str | None = None
    changed_at: float = 0.0


class FakeKServe:
    """Run with ``with FakeKServe(api):``; tune ``ready_delay``, ``broken``, ``never_ready`` and
    ``default_mode`` (the cluster's mode for an InferenceService without the annotation)."""

    def __init__(self, api: FakeKubeApi, *, ready_delay: float = 0.05, default_mode: str = "Knative") -> None:
        self.api = api
        self.ready_delay = ready_delay
        self.default_mode = default_mode
        self.broken: dict[str, str] = {}
        self.never_ready: set[str] = set()
        self.paused = threading.Event()
        self.state: dict[Key, IsvcState] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kserve", daemon=True)

    def __enter__(self) -> FakeKServe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def break_model(
        self, storage_uri: str, message: str = "failed to load model: ValueError: bad pickle"
    ) -> None:
        """Revisions of ``storage_uri`` fail to load (an existing one fails too)."""
        self.broken[storage_uri] = message
        for state in self.state.values():
            for revision in state.revisions:
                if revision.storage_uri == storage_uri:
                    revision.failure = message

    def revisions(self, namespace: str, name: str) -> list[str]:
        state = self.state.get(("serving.kserve.io", "inferenceservices", namespace, name))
        return [] if state is None else [r.name for r in state.revisions]

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        store = self.api.store
        while not self._stop.is_set():
            with store.changed:
                store.changed.wait(0.02)
            if self.paused.is_set():
                continue
            for key in [k for k in list(store.objects) if k[1] == "inferenceservices"]:
                obj = store.get(key)
                if obj is None:
                    self.state.pop(key, None)
                    continue
                try:
                    self.reconcile(key, obj)
                except ApiError:
                    continue  # deleted or changed meanwhile: the next pass sees it

    def reconcile(self, key: Key, obj: dict[str, Any]) -> None:
        annotations = obj["metadata"].get("annotations") or {}
        mode = annotations.get(MODE_ANNOTATION, self.default_mode)
        mode = {"Serverless": "Knative", "RawDeployment": "Standard"}.get(mode, mode)
        state = self.state.setdefault(key, IsvcState())
        status = self._standard(key, obj, state) if mode == "Standard" else self._knative(key, obj, state)
        if status != obj.get("status"):
            self.api.store.write(key, lambda cur: {**cur, "status": status}, status=True)

    # -- Knative mode ----------------------------------------------------------------------------

    def _knative(self, key: Key, obj: dict[str, Any], st: IsvcState) -> dict[str, Any]:
        _, _, ns, name = key
        predictor = copy.deepcopy(obj["spec"]["predictor"])
        percent = predictor.pop("canaryTrafficPercent", None)
        annotations = {
            k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k not in _DISALLOWED
        }
        template = json.dumps({"predictor": predictor, "annotations": annotations}, sort_keys=True)
        now = time.monotonic()
        if template != st.template:
            uri = (predictor.get("model") or {}).get("storageUri", "")
            revision = Revision(
                f"{name}-predictor-{len(st.revisions) + 1:05d}",
                uri,
                now,
                failure=self.broken.get(uri),
                hold=uri in self.never_ready,
            )
            st.revisions.append(revision)
            st.template = template
        ready = [r for r in st.revisions if r.ready(now, self.ready_delay)]
        latest_created = st.revisions[-1]
        latest_ready = ready[-1].name if ready else None
        last_rolled = st.latest_rolledout
        if last_rolled == latest_ready and percent is not None and percent < 100:
            last_rolled = st.previous_rolledout
        targets: list[tuple[str | None, int, str | None, bool]] = []
        if percent is not None and last_rolled:
            targets.append((latest_ready, percent, "latest", True))
            if percent < 100:
                targets.append((last_rolled, 100 - percent, "prev", False))
        else:
            targets.append((latest_ready, 100, None, True))
        domain = f"{ns}.example.com"
        traffic = []
        for revision, share, tag, latest in targets:
            if revision is None:
                continue
            entry: dict[str, Any] = {"revisionName": revision, "percent": share, "latestRevision": latest}
            if tag:
                entry["tag"] = tag
                entry["url"] = f"http://{tag}-{name}-predictor.{domain}"
            traffic.append(entry)
        for entry in traffic:
            if entry["revisionName"] == latest_ready and entry["percent"] == 100:
                if st.latest_rolledout != latest_ready:
                    st.previous_rolledout = st.latest_rolledout
                st.latest_rolledout = latest_ready
        failed = latest_created.failure
        created_ready = latest_created.name == latest_ready
        config = "True" if created_ready else ("False" if failed else "Unknown")
        route = "True" if latest_ready else "Unknown"
        predictor_ready = (
            "True" if config == "True" and route == "True" else ("False" if failed else "Unknown")
        )
        reason = "RevisionFailed" if failed else ("" if created_ready else "RevisionMissing")
        message = f'Revision "{latest_created.name}" failed with message: {failed}.' if failed else ""
        conditions = [
            self._condition("IngressReady", route),
            self._condition("PredictorConfigurationReady", config, reason, message),
            self._condition("PredictorReady", predictor_ready, reason, message),
            self._condition("PredictorRouteReady", route),
            self._condition("Ready", predictor_ready, reason, message),
        ]
        status: dict[str, Any] = {
            "observedGeneration": len(st.revisions),
            "url": f"http://{name}.{domain}",
            "address": {"url": f"http://{name}-predictor.{ns}.svc.cluster.local"},
            "deploymentMode": "Knative",
            "conditions": conditions,
            "components": {
                "predictor": {
                    "latestCreatedRevision": latest_created.name,
                    **({"latestReadyRevision": latest_ready} if latest_ready else {}),
                    **({"latestRolledoutRevision": st.latest_rolledout} if st.latest_rolledout else {}),
                    **({"previousRolledoutRevision": st.previous_rolledout} if st.previous_rolledout else {}),
                    "traffic": traffic,
                    "url": f"http://{name}-predictor.{domain}",
                }
            },
            "modelStatus": self._model_status(latest_created, created_ready),
        }
        return status

    @staticmethod
    def _model_status(revision: Revision, ready: bool) -> dict[str, Any]:
        if revision.failure:
            return {
                "transitionStatus": "BlockedByFailedLoad",
                "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
                "lastFailureInfo": {
                    "reason": "ModelLoadFailed",
                    "message": revision.failure,
                    "modelRevisionName": revision.name,
                    "location": revision.name,
                },
                "copies": {"failedCopies": 1, "totalCopies": 1},
            }
        state = "Loaded" if ready else "Loading"
        return {
            "transitionStatus": "UpToDate" if ready else "InProgress",
            "states": {"activeModelState": "Loaded", "targetModelState": state},
            "copies": {"failedCopies": 0, "totalCopies": 1},
        }

    @staticmethod
    def _condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
        cond = {"type": kind, "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"}
        if status != "True" and reason:
            cond["reason"] = reason
        if status != "True" and message:
            cond["message"] = message
        return cond

    # -- Standard mode ---------------------------------------------------------------------------

    def _standard(self, key: Key, obj: dict[str, Any], st: IsvcState) -> dict[str, Any]:
        _, _, ns, name = key
        uri = ((obj["spec"]["predictor"].get("model")) or {}).get("storageUri", "")
        dep_key: Key = ("apps", "deployments", ns, f"{name}-predictor")
        store = self.api.store
        now = time.monotonic()
        if uri != st.uri:
            st.uri, st.changed_at = uri, now
            deployment = store.get(dep_key)
            if deployment is None:
                store.create(dep_key, self._deployment(ns, name, uri))
            else:
                store.write(dep_key, lambda cur: _with_uri(cur, uri))
        deployment = store.get(dep_key) or {}
        failure = self.broken.get(uri)
        done = failure is None and uri not in self.never_ready and now >= st.changed_at + self.ready_delay
        if done:
            generation = deployment["metadata"]["generation"]
            rolled = {
                "observedGeneration": generation,
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
            }
            if deployment.get("status") != rolled:
                store.write(dep_key, lambda cur: {**cur, "status": rolled}, status=True)
        available = bool((store.get(dep_key) or {}).get("status", {}).get("availableReplicas"))
        ready = "True" if available else ("False" if failure else "Unknown")
        reason = "ModelLoadFailed" if failure else ""
        status: dict[str, Any] = {
            "url": f"http://{name}.{ns}.example.com",
            "address": {"url": f"http://{name}-predictor.{ns}.svc.cluster.local"},
            "deploymentMode": "Standard",
            "conditions": [
                self._condition("IngressReady", ready),
                self._condition("PredictorReady", ready, reason, failure or ""),
                self._condition("Ready", ready, reason, failure or ""),
            ],
            "components": {"predictor": {"url": f"http://{name}-predictor.{ns}.svc.cluster.local"}},
            "modelStatus": self._model_status(Revision(f"{name}-predictor", uri, 0.0, failure), done),
        }
        return status

    @staticmethod
    def _deployment(ns: str, name: str, uri: str) -> dict[str, Any]:
        labels = {"app": f"isvc.{name}-predictor"}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"{name}-predictor", "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, "annotations": {SOURCE_URI: uri}},
                    "spec": {"containers": [{"name": "kserve-container", "image": "kserve/runtime"}]},
                },
            },
        }


def _with_uri(deployment: dict[str, Any], uri: str) -> dict[str, Any]:
    deployment = copy.deepcopy(deployment)
    deployment["spec"]["template"]["metadata"]["annotations"][SOURCE_URI] = uri
    return deployment
