"""``mlcanary status``: where a model's release stands, as one JSON-able object.

The shape is a stable contract users script against (``mlcanary status --json``): ``phase``,
``champion_version``, ``candidate_version``, ``traffic`` (``{"champion": int, "candidate": int}`` as
observed at the serving layer) and ``last_decision`` (``{"action", "reason", "checks": [...]}``);
in the shadow phase also ``shadow`` (the mirrored share and the paired counts).
A field that is not known yet is ``null``; nothing is guessed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mlcanary.rollout import tags
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.versions import ModelVersionInfo, VersionReader


class Traffic(BaseModel):
    """Percent of requests each arm receives, as the serving layer reports it."""

    champion: int = Field(ge=0, le=100)
    candidate: int = Field(ge=0, le=100)


class Decision(BaseModel):
    """The last verdict of the judge: what it did, why, and every check behind it."""

    action: str
    reason: str
    checks: list[dict[str, Any]] = Field(default_factory=list)


class ShadowStatus(BaseModel):
    """The shadow phase as it stands: the share of requests mirrored to the candidate (observed at
    the serving layer; None when it cannot say) and, from the last shadow tick, the champion's
    answered live requests, the candidate's answers to mirrored copies, the pairs of answers to the
    same request and the share of them that agree."""

    mirrored_share: float | None = Field(None, ge=0.0, le=1.0)
    live: int | None = None
    mirrored: int | None = None
    pairs: int | None = None
    agreement: float | None = None


class VersionSummary(BaseModel):
    """One version in the status listing."""

    version: str
    aliases: list[str]
    gate: str | None
    primary_metric: str | None
    metric_value: float | None
    rejected: str | None
    created_at: str


class ReleaseStatus(BaseModel):
    """The status contract; extra fields may be added, none of these removed or renamed."""

    model: str
    phase: str | None
    champion_version: str | None
    candidate_version: str | None
    traffic: Traffic | None
    last_decision: Decision | None
    versions: list[VersionSummary] = Field(default_factory=list)
    approval_requested_at: str | None = Field(
        None, description="when the release began waiting for a human approval (phase awaiting_approval)"
    )
    shadow: ShadowStatus | None = Field(None, description="the shadow phase (phase shadowing only)")
    drift_reference: str | None = Field(
        None, description="what the candidate's inputs are compared with for input drift, and from where"
    )
    no_data: dict[str, str] = Field(
        default_factory=dict,
        description="checks of the last decision that cannot have data, and why (e.g. no probability)",
    )


def _summary(info: ModelVersionInfo) -> VersionSummary:
    metric = info.tag(tags.PRIMARY_METRIC)
    raw = info.tag(tags.metric_key(metric)) if metric else None
    return VersionSummary(
        version=info.version,
        aliases=list(info.aliases),
        gate=info.tag(tags.GATE),
        primary_metric=metric,
        metric_value=float(raw) if raw is not None else None,
        rejected=info.tag(tags.REJECTED),
        created_at=info.created_at.isoformat(timespec="seconds"),
    )


def _last_decision(info: ModelVersionInfo | None) -> Decision | None:
    raw = info.tag(tags.LAST_DECISION) if info else None
    if not raw:
        return None
    try:
        return Decision.model_validate(tags.decision_from_tag(raw))
    except ValueError:
        return Decision(
            action="unknown", reason=f"unreadable {tags.tag_name(tags.LAST_DECISION)} tag: {raw[:200]}"
        )


def _latest_release(versions: list[ModelVersionInfo]) -> tuple[ModelVersionInfo, ReleaseState] | None:
    """The latest release (in progress, promoted or rolled back): the one started last."""
    releases = [
        (info, state)
        for info in versions
        if (state := tags.release_from_tags(info.name, info.version, info.tags)) is not None
    ]
    return max(releases, key=lambda pair: pair[1].started_at, default=None)


def _shadow(decision: Decision | None, mirrored_share: float | None) -> ShadowStatus:
    checks = {c.get("name"): c for c in (decision.checks if decision else [])}
    errors, agreement = checks.get("error_rate", {}), checks.get("agreement", {})
    return ShadowStatus(
        mirrored_share=mirrored_share,
        live=errors.get("n_champion"),
        mirrored=errors.get("n_candidate"),
        pairs=agreement.get("n_candidate"),
        agreement=agreement.get("value"),
    )


def _no_data(decision: Decision | None) -> dict[str, str]:
    found = {}
    for check in decision.checks if decision else []:
        detail = str(check.get("detail") or "")
        if detail.startswith("no data: "):
            found[str(check.get("name"))] = detail.removeprefix("no data: ")
    return found


def read_status(
    registry: VersionReader,
    name: str,
    *,
    traffic: Traffic | None = None,
    mirrored_share: float | None = None,
    drift_reference: str | None = None,
) -> ReleaseStatus:
    """Status of ``name`` from the registry (aliases, ``mlcanary.*`` tags) and, when a serving
    backend reported them, the observed ``traffic`` and ``mirrored_share``. Raises
    ``ModelNotFoundError`` for an unknown model."""
    aliases = registry.aliases(name)
    versions = registry.list_versions(name)
    by_number = {v.version: v for v in versions}
    champion = by_number.get(aliases.get(CHAMPION, ""))
    candidate = by_number.get(aliases.get(CANDIDATE, ""))
    latest = _latest_release(versions)
    release = latest[1] if latest else None
    requested = release.approval_requested_at if release else None
    decision = _last_decision(latest[0] if latest else None)
    shadowing = release is not None and release.phase == Phase.SHADOWING
    return ReleaseStatus(
        model=name,
        phase=release.phase.value if release else None,
        champion_version=champion.version if champion else None,
        candidate_version=candidate.version if candidate else None,
        traffic=traffic,
        last_decision=decision,
        versions=[_summary(v) for v in versions],
        approval_requested_at=requested.isoformat() if requested else None,
        shadow=_shadow(decision, mirrored_share) if shadowing else None,
        drift_reference=drift_reference,
        no_data=_no_data(decision),
    )
