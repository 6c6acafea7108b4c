"""What an InferenceService's status says about the two arms (pure: an object in, facts out).

KServe (Knative mode) reports ``status.components.predictor``: ``latestCreatedRevision``,
``latestReadyRevision``, ``latestRolledoutRevision``, ``previousRolledoutRevision`` and
``traffic[]`` (``revisionName``, ``percent``, ``tag``, ``latestRevision``), plus conditions and
``modelStatus``. Each traffic entry's revision is mapped to the version it serves through the
``mlcanary.io/revisions`` history, then to an arm: the candidate's version → candidate, anything
else → champion. So a canary whose revision never became ready — KServe then silently sends its
share to the latest *ready* revision, often the champion's — shows 0 % on the candidate, as it is.

Readiness of a change is never judged by ``observedGeneration`` (KServe copies the Knative
service's): a change is settled when a revision newer than the one before it exists, it is the
latest ready one, and ``Ready`` is true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlcanary.rollout.arms import CANDIDATE, CHAMPION, Arm
from mlcanary.rollout.serving import ArmStatus, ServingStatus
from mlcanary.serving.kserve.objects import (
    ANN_CHAMPION,
    ANN_VERSION,
    History,
    read_history,
    revision_number,
    version_of_revision,
)

_FAILURE_CONDITIONS = ("PredictorConfigurationReady", "PredictorReady", "Ready")


@dataclass(frozen=True)
class TrafficEntry:
    """One ``status.components.predictor.traffic[]`` entry."""

    revision: str | None
    percent: int
    tag: str | None = None
    latest: bool = False
    url: str | None = None


@dataclass(frozen=True)
class Condition:
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class IsvcView:
    """The facts of one InferenceService that mlcanary acts on."""

    name: str
    resource_version: str | None
    canary_percent: int | None
    version: str | None
    champion_version: str | None
    history: History
    latest_created: str | None
    latest_ready: str | None
    latest_rolledout: str | None
    previous_rolledout: str | None
    traffic: tuple[TrafficEntry, ...]
    conditions: Mapping[str, Condition]
    failure: str | None
    url: str | None
    storage_uri: str | None
    annotations: Mapping[str, str] = field(default_factory=dict)

    # -- derived facts ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        cond = self.conditions.get("Ready")
        return cond is not None and cond.status == "True"

    @property
    def candidate_version(self) -> str | None:
        """The version under canary: set when ``canaryTrafficPercent`` is and the spec's model is not
        the champion's (during a durable rollback both are the champion's)."""
        if self.canary_percent is None or self.version is None or self.version == self.champion_version:
            return None
        return self.version

    def version_of(self, revision: str | None) -> str | None:
        return version_of_revision(self.history, revision)

    def settled_after(self, before: int | None) -> bool:
        """A revision newer than ``before`` exists, is the latest ready one, and Ready is true."""
        created = revision_number(self.latest_created)
        if created is None or (before is not None and created <= before):
            return False
        return self.latest_created == self.latest_ready and self.ready

    def failed_after(self, before: int | None) -> str | None:
        """Why the revision created after ``before`` will not get ready, if KServe says so."""
        created = revision_number(self.latest_created)
        if created is None or (before is not None and created <= before):
            return None
        if self.latest_created == self.latest_ready:
            return None
        if self.failure:
            return f"revision {self.latest_created}: {self.failure}"
        for kind in _FAILURE_CONDITIONS:
            cond = self.conditions.get(kind)
            if cond is not None and cond.status == "False" and (cond.reason or cond.message):
                return f"revision {self.latest_created}: {kind} False: {cond.reason} {cond.message}".strip()
        return None

    def share(self, revision: str | None) -> int:
        return sum(entry.percent for entry in self.traffic if revision and entry.revision == revision)

    def pending_reason(self) -> str:
        """Why the latest revision is not (yet) serving, from conditions (for messages)."""
        parts = []
        if self.latest_created != self.latest_ready:
            parts.append(f"latest created {self.latest_created} ≠ latest ready {self.latest_ready}")
        for kind in _FAILURE_CONDITIONS:
            cond = self.conditions.get(kind)
            if cond is not None and cond.status != "True":
                parts.append(f"{kind} {cond.status} {cond.reason} {cond.message}".strip())
        if self.failure:
            parts.append(self.failure)
        return "; ".join(parts) or "not ready"


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _failure(model_status: Mapping[str, Any]) -> str | None:
    info = model_status.get("lastFailureInfo") or {}
    if not info:
        state = (model_status.get("states") or {}).get("activeModelState")
        return "model failed to load" if state == "FailedToLoad" else None
    text = ": ".join(str(info[k]) for k in ("reason", "message") if info.get(k))
    if info.get("exitCode") is not None:
        text += f" (exit code {info['exitCode']})"
    return text or "model failed"


def view(isvc: Mapping[str, Any]) -> IsvcView:
    """Read an InferenceService object (as the API returns it) into an :class:`IsvcView`."""
    metadata = isvc.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    spec = (isvc.get("spec") or {}).get("predictor") or {}
    status = isvc.get("status") or {}
    predictor = ((status.get("components") or {}).get("predictor")) or {}
    traffic = tuple(
        TrafficEntry(
            revision=entry.get("revisionName"),
            percent=_int(entry.get("percent")) or 0,
            tag=entry.get("tag"),
            latest=bool(entry.get("latestRevision")),
            url=entry.get("url"),
        )
        for entry in predictor.get("traffic") or []
    )
    conditions = {
        c["type"]: Condition(str(c.get("status", "Unknown")), c.get("reason") or "", c.get("message") or "")
        for c in status.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type")
    }
    return IsvcView(
        name=str(metadata.get("name", "")),
        resource_version=metadata.get("resourceVersion"),
        canary_percent=_int(spec.get("canaryTrafficPercent")),
        version=annotations.get(ANN_VERSION),
        champion_version=annotations.get(ANN_CHAMPION),
        history=read_history(annotations),
        latest_created=predictor.get("latestCreatedRevision"),
        latest_ready=predictor.get("latestReadyRevision"),
        latest_rolledout=predictor.get("latestRolledoutRevision"),
        previous_rolledout=predictor.get("previousRolledoutRevision"),
        traffic=traffic,
        conditions=conditions,
        failure=_failure(status.get("modelStatus") or {}),
        url=status.get("url"),
        storage_uri=(spec.get("model") or {}).get("storageUri"),
        annotations=dict(annotations),
    )


def arm_of_version(v: IsvcView, version: str | None) -> Arm:
    return CANDIDATE if version is not None and version == v.candidate_version else CHAMPION


def revisions_by_arm(v: IsvcView) -> dict[Arm, list[str]]:
    """Revisions carrying each arm's version now (for per-revision metrics and the collector)."""
    found: dict[Arm, list[str]] = {CHAMPION: [], CANDIDATE: []}
    candidates = {e.revision for e in v.traffic if e.revision} | {
        r for r in (v.latest_created, v.latest_ready, v.latest_rolledout, v.previous_rolledout) if r
    }
    champion = v.champion_version if v.candidate_version is not None else v.version_of(_serving_revision(v))
    for revision in sorted(candidates, key=lambda r: revision_number(r) or 0):
        version = v.version_of(revision)
        if version is None:
            continue
        if version == v.candidate_version and revision == v.latest_created:
            found[CANDIDATE].append(revision)
        elif version == champion:
            found[CHAMPION].append(revision)
    return found


def _serving_revision(v: IsvcView) -> str | None:
    """The revision with the most traffic (the champion's when no canary runs)."""
    if not v.traffic:
        return v.latest_ready
    return max(v.traffic, key=lambda e: e.percent).revision


def serving_status(model: str, isvc: Mapping[str, Any] | None) -> ServingStatus:
    """Observed arms and traffic of ``model`` served by one Knative-mode InferenceService."""
    if isvc is None:
        return ServingStatus(model=model, detail="no InferenceService")
    v = view(isvc)
    notes: list[str] = []
    candidate_version = v.candidate_version
    candidate_rev = v.latest_created if candidate_version is not None else None
    shares: dict[Arm, int] = {CHAMPION: 0, CANDIDATE: 0}
    champion_version = v.champion_version if candidate_version is not None else None
    for entry in v.traffic:
        served = v.version_of(entry.revision)
        if candidate_rev is not None and entry.revision == candidate_rev:
            shares[CANDIDATE] += entry.percent
            continue
        shares[CHAMPION] += entry.percent
        if champion_version is None:
            champion_version = served
        elif entry.percent and served is not None and served != champion_version:
            notes.append(
                f"{entry.percent}% goes to revision {entry.revision} serving v{served}, not champion "
                f"v{champion_version}"
            )
        if candidate_rev is not None and entry.latest and entry.percent:
            notes.append(
                f"the canary's {entry.percent}% goes to {entry.revision}: candidate revision "
                f"{candidate_rev} is not ready"
            )
    traffic = shares if v.traffic else None
    if traffic is not None and sum(traffic.values()) != 100:
        notes.append(f"traffic[] sums to {sum(traffic.values())}%")
    champion_rev = next((e.revision for e in v.traffic if e.revision != candidate_rev and e.percent), None)
    champion_ready = champion_rev is not None
    arms: dict[Arm, ArmStatus] = {
        CHAMPION: ArmStatus(
            CHAMPION,
            champion_version or v.version,
            champion_ready,
            url=v.url,
            detail=None if champion_ready else v.pending_reason(),
        )
    }
    if candidate_version is not None:
        failure = v.failed_after(None) if v.latest_created != v.latest_ready else None
        ready = v.latest_created == v.latest_ready
        tagged = next((e.url for e in v.traffic if e.tag == "latest" and e.url), None)
        arms[CANDIDATE] = ArmStatus(
            CANDIDATE,
            candidate_version,
            ready,
            url=tagged or v.url,
            detail=None if ready else (failure or v.pending_reason()),
        )
    if v.canary_percent is not None and candidate_version is None:
        notes.append(f"canaryTrafficPercent {v.canary_percent} pinned while the champion's model is restored")
    return ServingStatus(
        model=model,
        arms=arms,
        traffic=traffic,
        endpoint=v.url,
        detail="; ".join(notes) or None,
    )
