"""``mlcanary train``, ``status`` and ``config``: versions in the registry and the settings in force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mlcanary.cli.common import console, user_errors

if TYPE_CHECKING:
    from mlcanary.config import Settings
    from mlcanary.rollout.status import ReleaseStatus, Traffic
    from mlcanary.rollout.versions import VersionReader
    from mlcanary.training import TrainingOutcome


def _print_outcome(outcome: TrainingOutcome) -> None:
    colour = {"champion": "green", "candidate": "cyan"}.get(outcome.alias or "", "yellow")
    where = f"@{outcome.alias}" if outcome.alias else "no alias"
    console.print(
        f"[bold]{outcome.model}[/bold] version [bold]{outcome.version}[/bold] → [{colour}]{where}[/{colour}]"
    )
    console.print(f"  {outcome.reason}", highlight=False)
    metric = outcome.gate.metric
    line = f"  holdout {metric}: {outcome.metrics[metric]:.4f}"
    if outcome.champion_metrics:
        line += f"   champion v{outcome.champion_version}: {outcome.champion_metrics[metric]:.4f}"
    console.print(line, highlight=False)
    console.print(f"  data {outcome.data_fingerprint} · commit {outcome.git_commit[:12]}", highlight=False)


def train_command(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option(help="Train on your own CSV or Parquet file instead of the bundled data.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Name of the 0/1 label column in --data.")] = None,
    model_name: Annotated[
        str | None, typer.Option("--model", help="Registered model name (default from config).")
    ] = None,
    estimator: Annotated[
        str | None,
        typer.Option(help="logistic_regression, random_forest or hist_gradient_boosting."),
    ] = None,
    rows: Annotated[int | None, typer.Option(help="Rows of bundled data to generate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the bundled data generator.")] = None,
    covariate_shift: Annotated[
        float | None, typer.Option(help="Shift the bundled data's features (in std devs, 0-5).")
    ] = None,
    fraud_rate: Annotated[float | None, typer.Option(help="Share of fraud in the bundled data.")] = None,
    noise: Annotated[float | None, typer.Option(help="Share of bundled labels flipped at random.")] = None,
    replace_candidate: Annotated[
        bool, typer.Option(help="Take @candidate even if another version holds it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as one JSON object.")] = False,
) -> None:
    """Train a version, compare it with @champion on the same holdout, register it and set its alias.

    The first version ever becomes @champion; later ones become @candidate if they pass the offline
    gate, and are tagged rejected (with the reason) if they do not.
    """
    from mlcanary.registry.mlflow_registry import registry_from_settings
    from mlcanary.training import run_overrides, train

    with user_errors():
        synthetic = {
            "rows": rows,
            "seed": seed,
            "covariate_shift": covariate_shift,
            "fraud_rate": fraud_rate,
            "noise": noise,
        }
        settings = ctx.obj.settings(
            run_overrides(
                data_path=data,
                target=target,
                model_name=model_name,
                estimator=estimator,
                replace_candidate=replace_candidate,
                synthetic=synthetic,
            )
        )
        if as_json:
            outcome = train(settings, registry_from_settings(settings))
            typer.echo(json.dumps(outcome.to_dict(), default=str))
            return
        with console.status("training…") as status:
            outcome = train(settings, registry_from_settings(settings), log=status.update)
        _print_outcome(outcome)


def _observed_traffic(settings: Settings, model: str) -> tuple[Traffic | None, float | None]:
    """Weights and mirrored share as the serving layer reports them (None when nothing serves
    ``model``)."""
    from mlcanary.rollout.status import Traffic
    from mlcanary.wiring import serving_backend

    try:
        observed = serving_backend(settings).status(model)
    except Exception:  # status must answer even when the serving layer is down or unreachable
        return None, None
    if observed.traffic is None:
        return None, None
    traffic = Traffic(champion=observed.traffic["champion"], candidate=observed.traffic["candidate"])
    return traffic, observed.shadow


def _drift_reference(settings: Settings, registry: VersionReader, name: str) -> str | None:
    """Which drift reference the current (or next) release of ``name`` uses."""
    from mlcanary.rollout import tags
    from mlcanary.rollout.arms import CANDIDATE, CHAMPION
    from mlcanary.rollout.versions import RegistryError
    from mlcanary.signals.reference_source import describe_reference
    from mlcanary.wiring import reference_config

    try:
        champion = registry.version_for_alias(name, CHAMPION)
        candidate = registry.version_for_alias(name, CANDIDATE)
    except RegistryError:
        return None
    if champion is None:
        return None
    started = None
    if candidate is not None:
        state = tags.release_from_tags(name, candidate.version, candidate.tags)
        started = state.started_at if state is not None else None
    return describe_reference(reference_config(settings), champion, started).description


def _status_table(status: ReleaseStatus) -> Table:
    table = Table(title=f"{status.model}: registry", title_justify="left")
    for column in ("version", "aliases", "offline gate", "metric", "note"):
        table.add_column(column)
    for v in status.versions:
        aliases = " ".join(f"@{a}" for a in v.aliases)
        metric = f"{v.primary_metric} {v.metric_value:.4f}" if v.metric_value is not None else ""
        note = f"rejected: {v.rejected}" if v.rejected else ""
        table.add_row(v.version, aliases, v.gate or "", metric, note)
    return table


def status_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Registered model name (default from config).")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON object (a stable contract: see mlcanary/rollout/status.py)."
        ),
    ] = False,
) -> None:
    """Show a model's champion, candidate, phase, observed traffic and last decision."""
    # The registry is read without MLflow's client (REST or SQL, see registry/read_only.py): status
    # answers in well under 2 s, where importing mlflow alone takes several.
    from mlcanary.registry.read_only import registry_reader
    from mlcanary.rollout.status import read_status

    with user_errors():
        settings = ctx.obj.settings()
        name = model or settings.model.name
        with registry_reader(settings) as registry:
            traffic, mirrored = _observed_traffic(settings, name)
            status = read_status(
                registry,
                name,
                traffic=traffic,
                mirrored_share=mirrored,
                drift_reference=_drift_reference(settings, registry, name),
            )
    if as_json:
        typer.echo(status.model_dump_json())
        return
    console.print(
        f"[bold]{status.model}[/bold]  champion: v{status.champion_version or '-'}  "
        f"candidate: v{status.candidate_version or '-'}  phase: {status.phase or '-'}"
    )
    traffic = status.traffic
    console.print(
        "traffic: "
        + (f"champion {traffic.champion}% / candidate {traffic.candidate}%" if traffic else "not serving")
    )
    shadow = status.shadow
    if shadow is not None:
        share = f"{shadow.mirrored_share:.0%}" if shadow.mirrored_share is not None else "?"
        agreement = f", {shadow.agreement:.1%} agree" if shadow.agreement is not None else ""
        console.print(
            f"shadow: {share} of requests mirrored to the candidate (its answers discarded); "
            f"{shadow.mirrored or 0} mirrored of {shadow.live or 0} live, "
            f"{shadow.pairs or 0} paired answers{agreement}"
        )
    if status.last_decision:
        console.print(f"last decision: {status.last_decision.action}: {status.last_decision.reason}")
    if status.drift_reference:
        console.print(f"drift reference: {status.drift_reference}", highlight=False)
    for check, why in status.no_data.items():
        console.print(f"no data for {check}: {why}", highlight=False)
    console.print(_status_table(status))


def config_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the effective configuration (defaults + profile file + MLCANARY_* overrides)."""
    import yaml

    with user_errors():
        settings = ctx.obj.settings()
    data = settings.model_dump(mode="json")
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False))
