"""The approval gate: ``approve-release`` pauses for a human approve / reject in the Prefect UI.

With ``rollout.approval.required``, a release the judge would promote moves to
``awaiting_approval`` and the monitor emits
:data:`tasks.rollout.APPROVAL_REQUESTED_EVENT`; the
``approve-release`` deployment's trigger (prefect.yaml) starts this flow, which pauses with a form
(:class:`ApprovalInput`) until a human answers or the approval window ends. Approve promotes,
reject rolls back; when the window ends unanswered a monitor tick applies
``approval.on_timeout``. The monitor keeps judging the release during the wait, so a critical
failure still rolls it back; an answer that arrives after that finds nothing to approve and says so.
The flow can also be run by hand from the UI for a release that waits.

Another run holding the model's lease when the answer (or the end of the window) comes is met as
the monitor meets it: this run changes nothing, logs ``yielded: <holder> holds the lease ...`` and
ends normally, returning ``{"model", "answer", "yielded", "holder"}``; the release keeps waiting.
An answer that yielded was not applied: give it again (run ``approve-release`` again, or
``mlcanary approve`` / ``reject``) once the holder is done.
"""

from __future__ import annotations

import math
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from pydantic import Field

from flows import canary
from flows.canary import Profile
from mlcanary.notify.message import mlflow_run_link
from mlcanary.rollout.engine import NothingToDoError, RolloutEngine
from mlcanary.rollout.lease import LeaseHeldError
from mlcanary.rollout.state import ReleaseState
from tasks import rollout as steps

POLL_INTERVAL_S = 10
"""How often the paused flow checks whether it was resumed (Prefect's default)."""

GRACE_S = 5
"""The pause outlasts the approval window by this much, so the timeout tick finds it ended."""


class ApprovalInput(RunInput):
    """The form a human fills in the Prefect UI to resume a release waiting for approval."""

    approve: bool = Field(
        False, description="Tick to approve (promote the candidate); leave unticked to reject (roll back)."
    )
    comment: str = Field("", max_length=500, description="Why; recorded as the release's reason.")
    approver: str = Field("", max_length=100, description="Who decides (recorded with the reason).")


def approval_description(engine: RolloutEngine, release: ReleaseState, tracking_uri: str | None) -> str:
    """The markdown shown above the approve / reject form."""
    approval = engine.policy.approval
    requested = release.approval_since
    deadline = requested + approval.timeout
    link = mlflow_run_link(tracking_uri, release.release_run_id)
    evidence = f"[MLflow run]({link})" if link else f"MLflow run `{release.release_run_id or '—'}`"
    verb = "promoted" if approval.on_timeout == "promote" else "rolled back"
    return "\n".join(
        [
            f"## Promote {release.model} v{release.candidate_version} over v{release.champion_version}?",
            "",
            f"The judge would promote: {release.reason or '(no reason recorded)'}",
            "",
            f"- candidate traffic: {release.traffic} % since {release.step_started_at:%Y-%m-%d %H:%M} UTC",
            f"- waiting since {requested:%Y-%m-%d %H:%M} UTC; with no answer by "
            f"{deadline:%Y-%m-%d %H:%M} UTC it is {verb} (checks permitting)",
            f"- evidence: {evidence}; the checks table of each tick is the `canary-{release.model}` artifact",
            "",
            "Tick **approve** to promote, leave it unticked to reject and roll back.",
        ]
    )


@flow(name="approve-release")
def approve_release(model: str, profile: Profile = "local", config_file: str | None = None) -> dict[str, Any]:
    """Pause for a human approve / reject of the release of ``model`` waiting for approval.

    Args:
        model: Registered model name.
        profile: Configuration profile when no config_file is given.
        config_file: Path to a config YAML file; overrides the profile.
    """
    logger = get_run_logger()
    settings = canary.settings_for(profile, config_file or None)
    engine = canary.engine_for(settings)
    try:
        release = engine.awaiting_approval(model)
    except NothingToDoError as exc:
        logger.info(str(exc))
        return {"model": model, "answer": None, "note": str(exc)}
    deadline = release.approval_since + engine.policy.approval.timeout
    remaining = (deadline - engine.clock.now()).total_seconds()
    if remaining <= 0:
        logger.warning("the approval window has already ended: applying rollout.approval.on_timeout")
        return _apply_timeout(engine, model)
    form = ApprovalInput.with_initial_data(
        description=approval_description(engine, release, settings.tracking_uri), approve=False
    )
    logger.info(
        "%s v%s waits for approval: resume this flow run in the Prefect UI (%.0f s left)",
        model,
        release.candidate_version,
        remaining,
    )
    try:
        answer = pause_flow_run(
            wait_for_input=form,
            timeout=math.ceil(remaining) + GRACE_S,
            poll_interval=POLL_INTERVAL_S,
            key=f"approval-{model}-{release.candidate_version}",
        )
    except FlowPauseTimeout:
        logger.warning("no answer within the approval window: applying rollout.approval.on_timeout")
        _running_again()
        return _apply_timeout(engine, model)
    choice = "approve" if answer.approve else "reject"
    act = steps.approve_release if answer.approve else steps.reject_release
    try:
        state = act(engine, model, answer.comment, answer.approver)
    except NothingToDoError as exc:
        # The monitor ended the release while the form was open (e.g. a critical check failed).
        logger.warning("%s arrived too late: %s", choice, exc)
        return {"model": model, "answer": choice, "note": str(exc)}
    except LeaseHeldError as held:
        logger.warning("%s not applied, give it again once that run is done: %s", choice, held)
        return _yielded(model, choice, held)
    return {**steps.release_summary(state), "answer": choice}


def _yielded(model: str, answer: str, held: LeaseHeldError) -> dict[str, Any]:
    """What the run returns when another run held the model's lease: it did nothing."""
    return {"model": model, "answer": answer, "yielded": str(held), "holder": held.holder}


def _running_again() -> None:
    """Mark this run running after its pause timed out.

    The server leaves a timed-out pause in ``Paused`` and fails the run when it ends ("completed and
    never resumed"); an unanswered approval is an expected outcome with an action of its own, so
    the run carries on as a normal run (forced: the orchestration rules refuse resuming it).
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def _apply_timeout(engine: RolloutEngine, model: str) -> dict[str, Any]:
    """One monitor tick: past the approval window it applies ``approval.on_timeout``."""
    try:
        result = steps.tick(engine, model)
    except NothingToDoError as exc:
        return {"model": model, "answer": "timeout", "note": str(exc)}
    except LeaseHeldError as held:
        # The holder is most likely the monitor's tick, which applies the same timeout itself.
        get_run_logger().info(str(held))
        return _yielded(model, "timeout", held)
    return {**steps.release_summary(result.release), "answer": "timeout"}
