"""Release phases, the state of a release, and what the judge decides at each tick.

The state is persisted as ``mlcanary.*`` tags on the candidate version (the codec is
:mod:`mlcanary.rollout.tags`), so any monitor run, on any machine, resumes where the last one stopped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

Action = Literal["hold", "step_up", "await_approval", "promote", "rollback"]
Verdict = Literal["pass", "fail", "inconclusive", "error"]


class Phase(StrEnum):
    """Where a release is. ``shadowing`` is the optional first phase (no user traffic on the
    candidate, a share of requests mirrored to it); ``promoting`` / ``rolling_back`` are written
    *before* acting, so a crash mid-action is completed by the next run; ``awaiting_approval`` is
    a release the judge would promote, held at its last step until a human answers; ``failed``
    needs a human."""

    PENDING = "pending"
    SHADOWING = "shadowing"
    PROGRESSING = "progressing"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK)

    @property
    def active(self) -> bool:
        return self in (
            Phase.PENDING,
            Phase.SHADOWING,
            Phase.PROGRESSING,
            Phase.AWAITING_APPROVAL,
            Phase.PROMOTING,
            Phase.ROLLING_BACK,
        )


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict with the evidence behind it.

    ``value`` is the candidate's, ``baseline`` the champion's (None for one-arm checks);
    ``threshold`` says what was required; ``test`` names the statistics used; ``blocking`` is True
    when this result alone prevents promotion; ``reason`` is one sentence for a person: what was
    measured on each arm, the limit, the test and what it concluded.
    """

    name: str
    verdict: Verdict
    critical: bool
    advisory: bool
    blocking: bool
    value: float | None
    baseline: float | None
    threshold: str
    test: str
    n_champion: int | None
    n_candidate: int | None
    ci_low: float | None = None
    ci_high: float | None = None
    detail: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """What the judge decided at one tick, why, and every check behind it."""

    action: Action
    reason: str
    checks: tuple[CheckResult, ...]
    traffic: int
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "traffic": self.traffic,
            "at": self.at.isoformat(),
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, default=str)


@dataclass(frozen=True)
class ReleaseState:
    """A release of ``candidate_version`` against ``champion_version`` of ``model``.

    ``step_index`` indexes the policy's steps; ``traffic`` is the candidate percent last set;
    ``approval_requested_at`` is when the release began waiting for a human (None otherwise).
    """

    model: str
    candidate_version: str
    champion_version: str
    phase: Phase
    step_index: int
    traffic: int
    started_at: datetime
    step_started_at: datetime
    ticks: int = 0
    release_run_id: str | None = None
    reason: str | None = None
    approval_requested_at: datetime | None = None

    @property
    def approval_since(self) -> datetime:
        """When the wait for approval began (the step's start if the time was never recorded)."""
        return self.approval_requested_at or self.step_started_at

    def with_phase(self, phase: Phase, reason: str | None = None) -> ReleaseState:
        return replace(self, phase=phase, reason=reason if reason is not None else self.reason)
