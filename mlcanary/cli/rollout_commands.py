"""``mlcanary release``, ``step``, ``promote``, ``rollback``, ``approve`` and ``reject``: a release
driven by hand through the same engine the Prefect flows run."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from mlcanary.cli.common import console, user_errors
from mlcanary.rollout.arms import CANDIDATE

if TYPE_CHECKING:
    from mlcanary.config import Settings
    from mlcanary.rollout.engine import RolloutEngine
    from mlcanary.rollout.state import Decision

ACTION_STYLES = {"rollback": "red", "promote": "green", "step_up": "cyan", "await_approval": "magenta"}

_ModelArg = Annotated[str | None, typer.Argument(help="Registered model (default from config).")]
_CommentOpt = Annotated[str, typer.Option(help="Why; recorded as the release's reason.")]
_ApproverOpt = Annotated[str, typer.Option(help="Who decides; recorded with the reason.")]


def engine_for(settings: Settings) -> RolloutEngine:
    """The engine every rollout command drives (tests replace it to inject fakes)."""
    from mlcanary.wiring import build_engine

    return build_engine(settings, runner="mlcanary command line")


def print_decision(decision: Decision) -> None:
    """The action, its reason and the check table."""
    from mlcanary.views.check_table import terminal_table

    style = ACTION_STYLES.get(decision.action, "yellow")
    console.print(f"[{style}][bold]{decision.action}[/bold][/{style}]: {decision.reason}", highlight=False)
    console.print(terminal_table(decision.checks))


def release_command(
    ctx: typer.Context,
    model: _ModelArg = None,
    version: Annotated[
        str | None, typer.Option(help="Version to canary (default: the one holding @candidate).")
    ] = None,
) -> None:
    """Start a canary: deploy the candidate beside @champion at the policy's first traffic step."""
    from mlcanary.rollout.versions import RegistryError

    with user_errors():
        settings = ctx.obj.settings()
        name = model or settings.model.name
        engine = engine_for(settings)
        if version is None:
            candidate = engine.registry.version_for_alias(name, CANDIDATE)
            if candidate is None:
                raise RegistryError(f"{name} has no @candidate: train one or pass --version")
            version = candidate.version
        state = engine.start_canary(name, version)
    console.print(
        f"{name} v{state.candidate_version}: [bold]{state.phase.value}[/bold] at {state.traffic} % "
        f"beside champion v{state.champion_version}"
    )


def step_command(
    ctx: typer.Context,
    model: _ModelArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Run one monitor tick now (measure, judge, act, record) and print the decision."""
    from mlcanary.rollout.lease import LeaseHeldError

    with user_errors():
        settings = ctx.obj.settings()
        try:
            result = engine_for(settings).tick(model or settings.model.name)
        except LeaseHeldError as held:
            # Another run is ticking or acting on this release: this tick yields, which is normal.
            typer.echo(json.dumps({"yielded": str(held), "holder": held.holder}) if as_json else str(held))
            return
    if as_json:
        payload = {"phase": result.release.phase.value, "note": result.note}
        payload["decision"] = result.decision.to_dict() if result.decision else None
        typer.echo(json.dumps(payload, default=str))
        return
    if result.decision is None:
        console.print(f"{result.release.model}: {result.note} ({result.release.phase.value})")
        return
    print_decision(result.decision)
    console.print(f"phase: {result.release.phase.value}, candidate traffic {result.release.traffic} %")


def promote_command(
    ctx: typer.Context,
    model: _ModelArg = None,
    reason: Annotated[str, typer.Option(help="Why; recorded on the version.")] = "promoted by hand",
) -> None:
    """Promote the release in progress now: all traffic to the candidate, @champion moves to it."""
    with user_errors():
        settings = ctx.obj.settings()
        state = engine_for(settings).promote(model or settings.model.name, reason)
    console.print(f"{state.model} v{state.candidate_version} is [green]@champion[/green]: {reason}")


def rollback_command(
    ctx: typer.Context,
    model: _ModelArg = None,
    reason: Annotated[
        str, typer.Option(help="Why; recorded as the rejection reason.")
    ] = "rolled back by hand",
) -> None:
    """Roll the release in progress back now: all traffic to the champion, the version rejected."""
    with user_errors():
        settings = ctx.obj.settings()
        state = engine_for(settings).rollback(model or settings.model.name, reason)
    console.print(f"{state.model} v{state.candidate_version} [red]rolled back[/red]: {reason}")


def _answer_approval(
    ctx: typer.Context, model: str | None, approve: bool, comment: str, approver: str
) -> None:
    with user_errors():
        settings = ctx.obj.settings()
        engine = engine_for(settings)
        answer = engine.approve if approve else engine.reject
        state = answer(model or settings.model.name, comment, approver)
    outcome = "is [green]@champion[/green]" if approve else "[red]rolled back[/red]"
    console.print(f"{state.model} v{state.candidate_version} {outcome}: {state.reason}")


def approve_command(
    ctx: typer.Context, model: _ModelArg = None, comment: _CommentOpt = "", approver: _ApproverOpt = ""
) -> None:
    """Approve the release waiting for approval (rollout.approval): promote it now."""
    _answer_approval(ctx, model, True, comment, approver)


def reject_command(
    ctx: typer.Context, model: _ModelArg = None, comment: _CommentOpt = "", approver: _ApproverOpt = ""
) -> None:
    """Reject the release waiting for approval (rollout.approval): roll it back now."""
    _answer_approval(ctx, model, False, comment, approver)
