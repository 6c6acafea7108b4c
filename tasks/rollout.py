"""Prefect tasks of the rollout flows: thin wrappers over :class:`mlcanary.rollout.engine.RolloutEngine`.

A tick retries once on a transient I/O failure: re-running it is safe (holding re-persists the same
state, a step up sets the same weights, an interrupted promote or roll back is completed). Manual
promote / roll back do not retry: a human asked once and should see a failure at once.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from mlcanary.rollout.engine import RolloutEngine, TickResult
from mlcanary.rollout.state import Decision, ReleaseState
from mlcanary.views.check_table import markdown_table, shadow_line
from tasks.retry import retry_on_io
from tasks.training import artifact_key

APPROVAL_REQUESTED_EVENT = "mlcanary.release.approval-requested"
"""The Prefect event the monitor emits when a release starts waiting for approval; the
``approve-release`` deployment's trigger (prefect.yaml) consumes it."""


def approval_requested_event(release: ReleaseState, profile: str, config_file: str | None) -> dict[str, Any]:
    """The event (name, resource, payload) saying ``release`` waits for approval, with what the
    approval run needs; prefect.yaml's ``approve-release`` trigger reads this payload."""
    return {
        "event": APPROVAL_REQUESTED_EVENT,
        "resource": {
            "prefect.resource.id": f"mlcanary.release.{release.model}.{release.candidate_version}",
            "prefect.resource.name": f"{release.model} v{release.candidate_version}",
            "mlflow.model": release.model,
        },
        "payload": {
            "model": release.model,
            "version": release.candidate_version,
            "profile": profile,
            "config_file": config_file or "",
            "reason": (release.reason or "")[:500],
        },
    }


def emit_approval_requested(release: ReleaseState, profile: str, config_file: str | None) -> None:
    """Tell Prefect that ``release`` waits for approval."""
    emit_event(**approval_requested_event(release, profile, config_file))


def decision_markdown(release: ReleaseState, decision: Decision) -> str:
    """The side-by-side table of one tick, as a Prefect markdown artifact."""
    lines = [
        f"# {release.model} v{release.candidate_version} vs champion v{release.champion_version}",
        "",
        f"**{decision.action}** at {decision.at:%Y-%m-%d %H:%M:%S} UTC: {decision.reason}",
        "",
        f"phase `{release.phase.value}` · candidate traffic {decision.traffic} % · tick {release.ticks}",
        "",
    ]
    shadow = shadow_line(decision.checks)
    if shadow is not None:
        lines += [f"**{shadow}**", ""]
    lines.append(markdown_table(decision.checks))
    return "\n".join(lines)


@task(name="start-canary", cache_policy=NO_CACHE)
def start_release(engine: RolloutEngine, model: str, version: str) -> ReleaseState:
    state = engine.start_canary(model, version)
    get_run_logger().info(
        "%s v%s canary %s at %s %% (champion v%s)",
        model,
        version,
        state.phase.value,
        state.traffic,
        state.champion_version,
    )
    return state


@task(
    name="monitor-tick",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_on_io,
)
def tick(engine: RolloutEngine, model: str) -> TickResult:
    result = engine.tick(model)
    logger = get_run_logger()
    release, decision = result.release, result.decision
    if decision is None:
        logger.info("%s v%s: %s", model, release.candidate_version, result.note)
        return result
    logger.info("%s v%s: %s — %s", model, release.candidate_version, decision.action, decision.reason)
    key = artifact_key("canary", model)
    create_markdown_artifact(decision_markdown(release, decision), key=key, description=decision.reason[:500])
    elapsed = (decision.at - release.started_at).total_seconds()
    window = engine.policy.max_duration.total_seconds()
    create_progress_artifact(min(100.0, 100.0 * elapsed / window), key=f"{key}-window")
    return result


@task(name="promote", cache_policy=NO_CACHE)
def promote_release(engine: RolloutEngine, model: str, reason: str) -> ReleaseState:
    state = engine.promote(model, reason)
    get_run_logger().info("%s v%s promoted: %s", model, state.candidate_version, reason)
    return state


@task(name="approve", cache_policy=NO_CACHE)
def approve_release(engine: RolloutEngine, model: str, comment: str, approver: str) -> ReleaseState:
    state = engine.approve(model, comment, approver)
    get_run_logger().info("%s v%s approved and promoted: %s", model, state.candidate_version, state.reason)
    return state


@task(name="reject", cache_policy=NO_CACHE)
def reject_release(engine: RolloutEngine, model: str, comment: str, approver: str) -> ReleaseState:
    state = engine.reject(model, comment, approver)
    get_run_logger().info("%s v%s rejected and rolled back: %s", model, state.candidate_version, state.reason)
    return state


@task(name="rollback", cache_policy=NO_CACHE)
def rollback_release(engine: RolloutEngine, model: str, reason: str) -> ReleaseState:
    state = engine.rollback(model, reason)
    get_run_logger().info("%s v%s rolled back: %s", model, state.candidate_version, reason)
    return state


def release_summary(state: ReleaseState) -> dict[str, Any]:
    """A flow's JSON-able return value for a release."""
    return {
        "model": state.model,
        "candidate_version": state.candidate_version,
        "champion_version": state.champion_version,
        "phase": state.phase.value,
        "traffic": state.traffic,
        "ticks": state.ticks,
        "reason": state.reason,
    }
