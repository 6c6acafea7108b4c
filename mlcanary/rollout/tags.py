"""Every ``mlcanary.*`` tag name, and the codec between a release and the tags that persist it.

The state of a release lives where users already look: tags on the candidate's MLflow model
version (:func:`release_tags` / :func:`release_from_tags`, plus the last decision as JSON), so any
monitor run on any machine resumes where the last one stopped. Training records its lineage and the
offline gate on each version, and the release evidence run carries a few tags of its own. Names here
are the *keys*; the tag itself is ``mlcanary.<key>`` (:func:`tag_name`), and
:meth:`~mlcanary.rollout.versions.ModelVersionInfo.tag` reads one by key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from mlcanary.rollout.state import Decision, Phase, ReleaseState

PREFIX: Final = "mlcanary."
MAX_TEXT: Final = 500
"""Free text (reasons, sources) is cut to this many characters in a tag."""
MAX_TAG_VALUE: Final = 5000
"""MLflow's limit on a tag value."""

# -- the release state, on the candidate version (written by the engine) ---------------------------
PHASE: Final = "phase"
CHAMPION_VERSION: Final = "champion_version"
STEP_INDEX: Final = "step_index"
TRAFFIC: Final = "traffic"
STARTED_AT: Final = "started_at"
STEP_STARTED_AT: Final = "step_started_at"
TICKS: Final = "ticks"
RELEASE_RUN_ID: Final = "release_run_id"
REASON: Final = "reason"
APPROVAL_REQUESTED_AT: Final = "approval_requested_at"
LAST_DECISION: Final = "last_decision"

# -- outcomes ------------------------------------------------------------------------------------
REJECTED: Final = "rejected"
"""Why a version must not be released (a failed gate or a rollback)."""
PREFLIGHT: Final = "preflight"
"""Why the release gate refused a version before any traffic (signature, preflight)."""
PREVIOUS_CHAMPION: Final = "previous_champion"
REPLACED_BY: Final = "replaced_by"

# -- training lineage and the offline gate (written by training) ----------------------------------
DATA_FINGERPRINT: Final = "data_fingerprint"
DATA_SOURCE: Final = "data_source"
GIT_COMMIT: Final = "git_commit"
GATE: Final = "gate"
GATE_REASON: Final = "gate_reason"
PRIMARY_METRIC: Final = "primary_metric"
TRAINED_AT: Final = "trained_at"
COMPARED_WITH_CHAMPION: Final = "compared_with_champion"
NOT_PROMOTED: Final = "not_promoted"
NOTE: Final = "note"
REFERENCE_ARTIFACT: Final = "reference_artifact"
"""Where the version's drift reference sample is, in its training run's artifacts."""

# -- the release evidence run (one MLflow run per release) ----------------------------------------
RUN_MODEL: Final = "model"
RUN_CANDIDATE_VERSION: Final = "candidate_version"
RUN_CHAMPION_VERSION: Final = "champion_version"
RUN_STARTED_AT: Final = "started_at"
RUN_PHASE: Final = "phase"
RUN_OUTCOME_REASON: Final = "outcome_reason"


def tag_name(key: str) -> str:
    """The full tag name of ``key``: ``mlcanary.<key>``."""
    return PREFIX + key


def metric_key(metric: str) -> str:
    """The key of a holdout metric recorded by training (``metric.<name>``)."""
    return f"metric.{metric}"


def tagged(values: Mapping[str, str]) -> dict[str, str]:
    """``{key: value}`` as tags: every key prefixed (see :func:`tag_name`)."""
    return {tag_name(key): value for key, value in values.items()}


# -- the codec -------------------------------------------------------------------------------------


def release_tags(state: ReleaseState) -> dict[str, str]:
    """The tags that persist ``state`` on its candidate version."""
    values = {
        PHASE: state.phase.value,
        CHAMPION_VERSION: state.champion_version,
        STEP_INDEX: str(state.step_index),
        TRAFFIC: str(state.traffic),
        STARTED_AT: state.started_at.isoformat(),
        STEP_STARTED_AT: state.step_started_at.isoformat(),
        TICKS: str(state.ticks),
    }
    if state.release_run_id:
        values[RELEASE_RUN_ID] = state.release_run_id
    if state.reason is not None:
        values[REASON] = state.reason[:MAX_TEXT]
    if state.approval_requested_at is not None:
        values[APPROVAL_REQUESTED_AT] = state.approval_requested_at.isoformat()
    return tagged(values)


class CorruptTagError(ValueError):
    """A release tag holds a value the codec cannot read (edited by hand, or written by something
    else). The message names the model, the version, the tag, its value and what it should be."""


def release_from_tags(model: str, version: str, tags: Mapping[str, str]) -> ReleaseState | None:
    """The state recorded on ``version`` of ``model``, or None if it never took part in a release.

    Raises :class:`CorruptTagError` (naming the tag) when a release tag cannot be read: a caller
    must not act on a release it cannot read, and nothing is changed by reading.
    """

    def tag(key: str) -> str | None:
        return tags.get(tag_name(key))

    def read(key: str, parse: Any, expected: str, default: str | None = None) -> Any:
        value = tag(key)
        if value is None:
            value = default
        try:
            return parse(value)
        except (TypeError, ValueError, OverflowError):
            raise CorruptTagError(
                f"{model} v{version}: tag {tag_name(key)} is {value!r}, not {expected}; fix or delete "
                "the tag in MLflow (nothing was changed)"
            ) from None

    phase = tag(PHASE)
    if phase is None:
        return None
    phases = ", ".join(p.value for p in Phase)
    approval = tag(APPROVAL_REQUESTED_AT)
    when = "an ISO 8601 time"
    started_at = read(STARTED_AT, _parse_time, when)
    return ReleaseState(
        model=model,
        candidate_version=version,
        champion_version=tag(CHAMPION_VERSION) or "",
        phase=read(PHASE, Phase, f"one of {phases}"),
        step_index=read(STEP_INDEX, _count, "a whole number >= 0", "0"),
        traffic=read(TRAFFIC, _percent, "a whole percent 0..100", "0"),
        started_at=started_at,
        step_started_at=read(STEP_STARTED_AT, _parse_time, when) if tag(STEP_STARTED_AT) else started_at,
        ticks=read(TICKS, _count, "a whole number >= 0", "0"),
        release_run_id=tag(RELEASE_RUN_ID),
        reason=tag(REASON),
        approval_requested_at=read(APPROVAL_REQUESTED_AT, _parse_time, when) if approval else None,
    )


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _percent(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 100:
        raise ValueError(value)
    return number


def decision_tag(decision: Decision) -> dict[str, str]:
    """The last decision as a tag: its JSON, verdicts, values and sample sizes kept and details
    dropped if it is too long."""
    text = decision.to_json()
    if len(text) > MAX_TAG_VALUE:
        slim = decision.to_dict()
        slim["checks"] = [
            {
                k: c[k]
                for k in (
                    "name",
                    "verdict",
                    "critical",
                    "value",
                    "baseline",
                    "threshold",
                    "n_champion",
                    "n_candidate",
                )
            }
            for c in slim["checks"]
        ]
        text = json.dumps(slim, default=str)[:MAX_TAG_VALUE]
    return {tag_name(LAST_DECISION): text}


def decision_from_tag(raw: str) -> dict[str, Any]:
    """The decision recorded by :func:`decision_tag` as a dict; ``ValueError`` if it is not one."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"{tag_name(LAST_DECISION)} is not a JSON object")
    return value


def release_run_tags(state: ReleaseState) -> dict[str, str]:
    """The tags of a release's evidence run when it is created."""
    return tagged(
        {
            RUN_MODEL: state.model,
            RUN_CANDIDATE_VERSION: state.candidate_version,
            RUN_CHAMPION_VERSION: state.champion_version,
            RUN_STARTED_AT: state.started_at.isoformat(),
        }
    )


def _parse_time(value: str | None) -> datetime:
    if not value:
        return datetime.fromtimestamp(0, tz=UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
