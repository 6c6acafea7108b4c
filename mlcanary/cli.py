"""The ``mlcanary`` command line (a stable contract: see DESIGN.md, "Command line").

Every command loads the configuration once (``--profile`` / ``--config`` / ``MLCANARY_*``), turns
known errors into one red line on stderr and a non-zero exit code (2 for configuration, 1 for the
rest), and never prints a traceback for a user mistake.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mlcanary.config import ConfigError, Settings, load_settings
from mlcanary.data.loader import DataError
from mlcanary.registry import RegistryError, registry_from_settings
from mlcanary.status import ReleaseStatus, read_status
from mlcanary.training import TrainingError, TrainingOutcome, run_overrides, train

app = typer.Typer(
    name="mlcanary",
    help="Canary releases for ML models: train, split traffic, judge both arms, promote or roll back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

# Quiet, offline-friendly MLflow defaults for every command (users may still override them).
_MLFLOW_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


class _State:
    profile: str | None = None
    config_file: Path | None = None

    def settings(
        self, overrides: dict[str, Any] | None = None, *, default_profile: str | None = None
    ) -> Settings:
        """Settings from the global options; ``default_profile`` applies when neither was given."""
        profile = self.profile or (None if self.config_file else default_profile)
        return load_settings(profile, config_file=self.config_file, overrides=overrides)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except (DataError, RegistryError, TrainingError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


@app.callback()
def main(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="Configuration profile: local (default), demo or kserve. Env: MLCANARY_PROFILE.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A config YAML file instead of a profile. Env: MLCANARY_CONFIG."),
    ] = None,
) -> None:
    """Canary releases for ML models."""
    for key, value in _MLFLOW_ENV.items():
        os.environ.setdefault(key, value)
    state = _State()
    state.profile, state.config_file = profile, config
    ctx.obj = state


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


def _run_training(settings: Settings, say: Callable[[str], None]) -> TrainingOutcome:
    registry = registry_from_settings(settings)
    return train(settings, registry, log=say)


@app.command("train")
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
    with _user_errors():
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
            outcome = _run_training(settings, lambda _m: None)
            typer.echo(json.dumps(outcome.to_dict(), default=str))
            return
        with console.status("training…") as status:
            outcome = _run_training(settings, lambda m: status.update(m))
        _print_outcome(outcome)


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


@app.command("status")
def status_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Registered model name (default from config).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the stable contract in DESIGN.md).")
    ] = False,
) -> None:
    """Show a model's champion, candidate, phase, observed traffic and last decision."""
    with _user_errors():
        settings = ctx.obj.settings()
        status = read_status(registry_from_settings(settings), model or settings.model.name)
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
    if status.last_decision:
        console.print(f"last decision: {status.last_decision.action}: {status.last_decision.reason}")
    console.print(_status_table(status))


@app.command("config")
def config_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the effective configuration (defaults + profile file + MLCANARY_* overrides)."""
    import yaml

    with _user_errors():
        settings = ctx.obj.settings()
    data = settings.model_dump(mode="json")
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False))


DEMO_STEPS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "a quick baseline: a shallow random forest on last month's transactions",
        {
            "model.estimator": "random_forest",
            "model.params": {"max_depth": 2, "n_estimators": 20},
            "data.synthetic.seed": 1,
        },
    ),
    (
        "a better model: logistic regression on this month's transactions",
        {"model.estimator": "logistic_regression", "data.synthetic.seed": 2},
    ),
    (
        "an over-fitted one: gradient boosting with a learning rate of 0.9",
        {
            "model.estimator": "hist_gradient_boosting",
            "model.params": {
                "learning_rate": 0.9,
                "max_iter": 300,
                "max_leaf_nodes": 63,
                "min_samples_leaf": 2,
                "early_stopping": False,
            },
            "data.synthetic.seed": 3,
        },
    ),
)


@app.command("demo")
def demo_command(
    ctx: typer.Context,
    keep: Annotated[
        bool, typer.Option(help="Keep the demo's earlier state instead of starting fresh.")
    ] = False,
) -> None:
    """The whole story on embedded defaults (profile 'demo', state in .mlcanary/demo).

    Trains a champion, a candidate that passes the offline gate and a broken version the gate
    rejects, then prints the registry.
    """
    with _user_errors():
        settings = ctx.obj.settings(default_profile="demo")
        if not keep and settings.state_dir.exists():
            shutil.rmtree(settings.state_dir)
        console.rule("[bold]mlcanary demo[/bold]")
        console.print(f"state: {settings.state_dir.resolve()}   MLflow: {settings.tracking_uri}")
        for number, (story, overrides) in enumerate(DEMO_STEPS, start=1):
            console.rule(f"step {number}: {story}", align="left")
            step_settings = ctx.obj.settings(overrides, default_profile="demo")
            with console.status("training…") as status:
                outcome = _run_training(step_settings, lambda m: status.update(m))
            _print_outcome(outcome)
        console.rule("registry")
        release = read_status(registry_from_settings(settings), settings.model.name)
        console.print(_status_table(release))
        console.print("[bold]mlcanary status --json[/bold] (abridged):")
        typer.echo(release.model_dump_json(exclude={"versions"}))
        console.print(
            f"\nBrowse it: [bold]mlflow ui --backend-store-uri {settings.tracking_uri}[/bold]",
            highlight=False,
        )


if __name__ == "__main__":
    app()
