"""The ``mlcanary`` command line (a stable contract: see DESIGN.md, "Command line").

Every command loads the configuration once (``--profile`` / ``--config`` / ``MLCANARY_*``), turns
known errors into one red line on stderr and a non-zero exit code (2 for configuration, 1 for the
rest), and never prints a traceback for a user mistake.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import typer
from rich.console import Console
from rich.table import Table

from mlcanary.config import ConfigError, Settings, load_settings
from mlcanary.data.loader import DataError
from mlcanary.registry import RegistryError, registry_from_settings
from mlcanary.status import ReleaseStatus, Traffic, read_status
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


def _runtime_errors() -> tuple[type[Exception], ...]:
    """Errors of the serving and rollout layers that are the user's to read, not tracebacks."""
    from mlcanary.rollout.engine import RolloutError
    from mlcanary.serving.backend import ServingError
    from mlcanary.serving.local.processes import ProcessError
    from mlcanary.serving.local.stack import StackError

    return (RolloutError, ServingError, StackError, ProcessError, NotImplementedError)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except (DataError, RegistryError, TrainingError, ValueError, *_runtime_errors()) as exc:
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


def _observed_traffic(settings: Settings, model: str) -> Traffic | None:
    """Weights as the serving layer reports them, or None when nothing serves ``model``."""
    from mlcanary.wiring import serving_backend

    try:
        observed = serving_backend(settings).status(model)
    except Exception:  # status must answer even when the serving layer is down or unreachable
        return None
    if observed.traffic is None:
        return None
    return Traffic(champion=observed.traffic["champion"], candidate=observed.traffic["candidate"])


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
        name = model or settings.model.name
        registry = registry_from_settings(settings)
        status = read_status(
            registry,
            name,
            traffic=_observed_traffic(settings, name),
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
    if status.last_decision:
        console.print(f"last decision: {status.last_decision.action}: {status.last_decision.reason}")
    if status.drift_reference:
        console.print(f"drift reference: {status.drift_reference}", highlight=False)
    for check, why in status.no_data.items():
        console.print(f"no data for {check}: {why}", highlight=False)
    console.print(_status_table(status))


def _drift_reference(settings, registry, name: str) -> str | None:  # type: ignore[no-untyped-def]
    """Which drift reference the current (or next) release of ``name`` uses."""
    from mlcanary.reference import describe_reference
    from mlcanary.registry import CHAMPION, RegistryError
    from mlcanary.rollout.state import ReleaseState
    from mlcanary.wiring import reference_config

    try:
        champion = registry.version_for_alias(name, CHAMPION)
        candidate = registry.version_for_alias(name, "candidate")
    except RegistryError:
        return None
    if champion is None:
        return None
    started = None
    if candidate is not None:
        state = ReleaseState.from_tags(name, candidate.version, dict(candidate.tags))
        started = state.started_at if state is not None else None
    return describe_reference(reference_config(settings), champion, started).description


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


@app.command("demo")
def demo_command(
    ctx: typer.Context,
    rps: Annotated[float, typer.Option(help="Requests per second of live traffic during the demo.")] = 40.0,
    keep_up: Annotated[bool, typer.Option(help="Leave the local stack running at the end.")] = False,
) -> None:
    """The whole story on the local stack, in a few minutes (profile 'demo', state in .mlcanary/demo).

    A champion serves behind Envoy; a better candidate is canaried under traffic and promoted; a bad
    candidate (flaky, slow feature service) is canaried and rolled back within seconds of the
    evidence. A live view shows phase, traffic per arm and every check; it ends with a side-by-side
    summary and a self-contained HTML report.
    """
    from mlcanary.demo import run_demo

    with _user_errors():
        run_demo(
            console,
            profile=ctx.obj.profile or ("demo" if ctx.obj.config_file is None else None),  # type: ignore[arg-type]
            config_file=ctx.obj.config_file,
            rps=rps,
            keep_up=keep_up,
        )


@app.command("collector")
def collector_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.collector_port, 8090).")] = None,
    db_url: Annotated[
        str | None, typer.Option(help="Inference-log database URL (default: inference.db in the state dir).")
    ] = None,
) -> None:
    """Run the inference-log collector: KServe logger CloudEvents in, one row per request out.

    Accepts request/response events from the local model servers and from KServe's logger agent,
    pairs them by ce-id and answers 2xx only once the row is committed. Feedback labels go to
    POST /feedback. Runs until interrupted.
    """
    from mlcanary.telemetry.collector import run_collector

    with _user_errors():
        settings = ctx.obj.settings()
        resolve_arm = None
        if settings.serving.backend == "kserve":
            # KServe's logger names the pod, not the arm: resolve it through the InferenceService.
            from mlcanary.serving.kserve.arms import ArmResolver
            from mlcanary.serving.kserve.backend import KServeBackend

            resolve_arm = ArmResolver(KServeBackend.from_settings(settings))
    if db_url is None and settings.telemetry.store_url is None:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    run_collector(
        host or settings.serving.host,
        port or settings.serving.collector_port,
        db_url or settings.store_url,
        resolve_arm=resolve_arm,
        outputs=settings.model.outputs,
        threshold=settings.training.decision_threshold,
    )


@app.command("traffic")
def traffic_command(
    ctx: typer.Context,
    rps: Annotated[float, typer.Option(help="Requests per second to send.")] = 20.0,
    duration: Annotated[float | None, typer.Option(help="Seconds to send for.")] = None,
    requests: Annotated[
        int | None, typer.Option(help="Total requests to send (instead of --duration).")
    ] = None,
    covariate_shift: Annotated[
        float, typer.Option(help="Drift the replayed rows' features (std devs, 0-5).")
    ] = 0.0,
    fraud_rate: Annotated[float, typer.Option(help="Share of fraud in the replayed rows.")] = 0.04,
    noise: Annotated[float, typer.Option(help="Share of labels flipped in the replayed rows.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the replayed rows.")] = 0,
    arm: Annotated[
        str | None, typer.Option(help="Force every request to one arm: champion or candidate.")
    ] = None,
    feedback: Annotated[bool, typer.Option(help="Post ground-truth labels to the collector.")] = True,
    feedback_delay: Annotated[float, typer.Option(help="Seconds before a label is posted.")] = 3.0,
    feedback_share: Annotated[float, typer.Option(help="Share of requests that get a label.")] = 0.5,
    url: Annotated[
        str | None,
        typer.Option(help="Front door URL (default: the local Envoy; kserve: kserve.ingress_url)."),
    ] = None,
    host_header: Annotated[
        str | None,
        typer.Option(help="Host header (kserve default: the InferenceService's host from its status)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data: Annotated[
        Path | None,
        typer.Option(help="Replay the rows of your CSV or Parquet file instead of the bundled data."),
    ] = None,
    target_column: Annotated[
        str | None,
        typer.Option("--target", help="With --data: the 0/1 label column, posted as delayed feedback."),
    ] = None,
) -> None:
    """Replay rows of the bundled dataset, or of your own file (--data), through the front door.

    Shows a progress bar, posts delayed ground-truth labels to the collector and ends with a
    per-arm summary: requests, errors, latency percentiles and positive rate.
    """
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mlcanary.traffic import TrafficPlan, render_summary, run_traffic_sync

    with _user_errors():
        settings = ctx.obj.settings()
        target = _traffic_target(settings, url, host_header)
    host, serving = settings.serving.host, settings.serving
    local_collector = f"http://{host}:{serving.collector_port}"
    try:
        plan = TrafficPlan(
            front_door_url=target.url,
            host_header=target.host_header,
            protocol=target.protocol,
            model=settings.model.name,
            rps=rps,
            duration_s=duration if duration is not None or requests is not None else 10.0,
            total_requests=requests,
            seed=seed,
            covariate_shift=covariate_shift,
            fraud_rate=fraud_rate,
            noise=noise,
            collector_url=(target.collector_url if target.cluster else local_collector) if feedback else None,
            feedback_delay_s=feedback_delay,
            feedback_share=feedback_share,
            force_arm=arm,
            data_path=None if data is None else str(data),
            target=target_column,
        )
        if data is not None:
            from mlcanary.traffic import FileRows

            FileRows.read(
                str(data), target_column
            )  # fail here, in one line, on a file that cannot be replayed
        elif target_column is not None:
            raise ValueError("--target needs --data (the bundled rows carry their own labels)")
    except ValidationError as exc:
        err_console.print(f"[red]error:[/red] invalid traffic options: {exc}", highlight=False)
        raise typer.Exit(2) from None
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        report = run_traffic_sync(plan)
        typer.echo(json.dumps(report.to_dict()))
    else:
        columns = (
            TextColumn("[bold]traffic"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[arms]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("traffic", total=plan.planned_requests, arms="")

            def show(p) -> None:  # type: ignore[no-untyped-def]
                arms = "  ".join(f"{a} {n}" for a, n in p.per_arm.items() if n) + (
                    f"  errors {p.errors}" if p.errors else ""
                )
                progress.update(task, completed=p.done, total=p.total, arms=arms)

            report = run_traffic_sync(plan, on_progress=show)
        console.print(render_summary(report))
    if report.total.ok == 0:
        raise typer.Exit(1)


class _Target(NamedTuple):
    url: str
    host_header: str | None
    protocol: Literal["v1", "v2"]
    collector_url: str | None
    cluster: bool


def _traffic_target(settings: Settings, url: str | None, host_header: str | None) -> _Target:
    """Where `traffic` sends: the local Envoy, or (kserve) the Istio ingress with the
    InferenceService's host, in the protocol of the configured runtime."""
    serving = settings.serving
    if serving.backend != "kserve":
        return _Target(
            url or f"http://{serving.host}:{serving.front_door_port}", host_header, "v1", None, False
        )
    from urllib.parse import urlparse

    from mlcanary.wiring import serving_backend

    ks = settings.kserve
    front = url or ks.ingress_url
    if not front:
        raise ValueError(
            "no ingress to send to: pass --url (e.g. after `kubectl port-forward -n istio-system "
            "svc/istio-ingressgateway 8080:80`, --url http://127.0.0.1:8080) or set kserve.ingress_url"
        )
    if host_header is None:
        endpoint = serving_backend(settings).status(settings.model.name).endpoint
        host_header = urlparse(endpoint).hostname if endpoint else None
    protocol: Literal["v1", "v2"] = "v2" if ks.runtime == "mlflow" else "v1"
    return _Target(front, host_header, protocol, ks.collector_url, True)


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from mlcanary.wiring import build_engine

    return build_engine(settings)


def _print_decision(decision) -> None:  # type: ignore[no-untyped-def]
    colour = {"rollback": "red", "promote": "green", "step_up": "cyan"}.get(decision.action, "yellow")
    console.print(f"[{colour}][bold]{decision.action}[/bold][/{colour}]: {decision.reason}", highlight=False)
    table = Table(show_edge=False)
    for column in ("check", "verdict", "champion", "candidate", "requirement", "n", "test"):
        table.add_column(column)
    for check in decision.checks:
        mark = {"pass": "green", "fail": "red", "error": "magenta"}.get(check.verdict, "yellow")
        table.add_row(
            check.name + (" (critical)" if check.critical else " (advisory)" if check.advisory else ""),
            f"[{mark}]{check.verdict}[/{mark}]",
            "—" if check.baseline is None else f"{check.baseline:.4g}",
            "—" if check.value is None else f"{check.value:.4g}",
            check.threshold,
            f"{check.n_champion or '—'}/{check.n_candidate or '—'}",
            check.test,
        )
    console.print(table)


@app.command("release")
def release_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Registered model (default from config).")] = None,
    version: Annotated[
        str | None, typer.Option(help="Version to canary (default: the one holding @candidate).")
    ] = None,
) -> None:
    """Start a canary: deploy the candidate beside @champion at the policy's first traffic step."""
    with _user_errors():
        settings = ctx.obj.settings()
        name = model or settings.model.name
        registry = registry_from_settings(settings)
        if version is None:
            candidate = registry.version_for_alias(name, "candidate")
            if candidate is None:
                raise RegistryError(f"{name} has no @candidate: train one or pass --version")
            version = candidate.version
        state = _engine(settings).start_canary(name, version)
    console.print(
        f"{name} v{state.candidate_version}: [bold]{state.phase.value}[/bold] at {state.traffic} % "
        f"beside champion v{state.champion_version}"
    )


@app.command("step")
def step_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Registered model (default from config).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Run one monitor tick now (measure, judge, act, record) and print the decision."""
    with _user_errors():
        settings = ctx.obj.settings()
        result = _engine(settings).tick(model or settings.model.name)
    if as_json:
        payload = {"phase": result.release.phase.value, "note": result.note}
        payload["decision"] = result.decision.to_dict() if result.decision else None
        typer.echo(json.dumps(payload, default=str))
        return
    if result.decision is None:
        console.print(f"{result.release.model}: {result.note} ({result.release.phase.value})")
        return
    _print_decision(result.decision)
    console.print(f"phase: {result.release.phase.value}, candidate traffic {result.release.traffic} %")


@app.command("promote")
def promote_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Registered model (default from config).")] = None,
    reason: Annotated[str, typer.Option(help="Why; recorded on the version.")] = "promoted by hand",
) -> None:
    """Promote the release in progress now: all traffic to the candidate, @champion moves to it."""
    with _user_errors():
        settings = ctx.obj.settings()
        state = _engine(settings).promote(model or settings.model.name, reason)
    console.print(f"{state.model} v{state.candidate_version} is [green]@champion[/green]: {reason}")


@app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Registered model (default from config).")] = None,
    reason: Annotated[
        str, typer.Option(help="Why; recorded as the rejection reason.")
    ] = "rolled back by hand",
) -> None:
    """Roll the release in progress back now: all traffic to the champion, the version rejected."""
    with _user_errors():
        settings = ctx.obj.settings()
        state = _engine(settings).rollback(model or settings.model.name, reason)
    console.print(f"{state.model} v{state.candidate_version} [red]rolled back[/red]: {reason}")


_ModelArg = Annotated[str | None, typer.Argument(help="Registered model (default from config).")]
_CommentOpt = Annotated[str, typer.Option(help="Why; recorded as the release's reason.")]
_ApproverOpt = Annotated[str, typer.Option(help="Who decides; recorded with the reason.")]


def _answer_approval(
    ctx: typer.Context, model: str | None, approve: bool, comment: str, approver: str
) -> None:
    with _user_errors():
        settings = ctx.obj.settings()
        engine = _engine(settings)
        answer = engine.approve if approve else engine.reject
        state = answer(model or settings.model.name, comment, approver)
    outcome = "is [green]@champion[/green]" if approve else "[red]rolled back[/red]"
    console.print(f"{state.model} v{state.candidate_version} {outcome}: {state.reason}")


@app.command("approve")
def approve_command(
    ctx: typer.Context, model: _ModelArg = None, comment: _CommentOpt = "", approver: _ApproverOpt = ""
) -> None:
    """Approve the release waiting for approval (rollout.approval): promote it now."""
    _answer_approval(ctx, model, True, comment, approver)


@app.command("reject")
def reject_command(
    ctx: typer.Context, model: _ModelArg = None, comment: _CommentOpt = "", approver: _ApproverOpt = ""
) -> None:
    """Reject the release waiting for approval (rollout.approval): roll it back now."""
    _answer_approval(ctx, model, False, comment, approver)


@app.command("up")
def up_command(
    ctx: typer.Context,
    candidate_percent: Annotated[
        int | None,
        typer.Option(help="Candidate traffic % if @candidate exists (default: the policy's first step)."),
    ] = None,
    candidate: Annotated[bool, typer.Option(help="Serve @candidate beside the champion.")] = True,
    platform: Annotated[
        bool,
        typer.Option(
            "--platform",
            help="Also run the platform: an MLflow server (:5000), a Prefect server (:4200) with the "
            "deployments of prefect.yaml and a worker, and the webhook receiver registered in MLflow. "
            "Writes <state>/platform.env to source. `mlcanary down` stops it all.",
        ),
    ] = False,
) -> None:
    """Start the local stack for the registered model: collector, Envoy, champion (+ candidate).

    Waits until everything is healthy and prints the URLs. Safe to re-run: what already serves the
    right version is left alone. With --platform, the MLflow and Prefect servers, a Prefect worker and
    the webhook receiver come first (the stack then starts once @champion exists), so setting
    @candidate in MLflow starts a canary you can watch in both UIs.
    """
    if platform:
        _platform_up(ctx)
        return
    from mlcanary.serving.local.stack import up

    with _user_errors():
        settings = ctx.obj.settings()
        percent = candidate_percent if candidate_percent is not None else settings.rollout.steps[0]
        with console.status("starting the local stack (collector, Envoy, model servers)…"):
            info = up(settings, candidate_percent=percent, with_candidate=candidate)
    _print_stack(info)


def _print_stack(info) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=f"{info.model}: local stack", title_justify="left", show_header=False)
    for name, url in info.urls().items():
        table.add_row(name, url)
    console.print(table)
    traffic = info.serving.traffic or {}
    console.print(
        f"champion v{info.champion_version} {traffic.get('champion', 100)} %"
        + (
            f", candidate v{info.candidate_version} {traffic.get('candidate', 0)} %"
            if info.candidate_version
            else ""
        )
    )
    if getattr(info, "candidate_problem", None):
        err_console.print(
            f"[yellow]warning:[/yellow] {info.candidate_problem}", highlight=False, soft_wrap=True
        )
    console.print(f"try: curl -s {info.front_door_url}/v1/models/{info.model}  ·  mlcanary traffic --rps 20")


def _platform_up(ctx: typer.Context) -> None:
    from mlcanary import platform

    with _user_errors():
        settings = ctx.obj.settings()
        try:
            with console.status("starting the platform…") as spinner:

                def show(message: str) -> None:
                    if message.startswith("✓"):
                        console.print(f"[green]✓[/green]{message[1:]}", highlight=False)
                    else:
                        spinner.update(message)

                info = platform.up(settings, progress=show)
        except platform.PlatformError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    table = Table(title="platform", title_justify="left")
    for column in ("process", "pid", "url", "state"):
        table.add_column(column)
    for state in platform.status(info.settings):
        started = "started" if state.name in info.started else "already running"
        mark = "green" if state.healthy is not False else "red"
        table.add_row(state.name, str(state.pid or "-"), state.url or "", f"[{mark}]{started}[/{mark}]")
    console.print(table)
    for name, url in info.urls().items():
        console.print(f"{name}: {url}", highlight=False)
    if info.monitor_interval_s is not None:
        console.print(f"canary-monitor runs every {info.monitor_interval_s:g} s (rollout.tick_interval)")
    if info.stack is not None:
        _print_stack(info.stack)
    elif info.stack_note:
        console.print(info.stack_note, highlight=False)
    console.print(f"point your shell at it: [bold]source {info.paths.env_file}[/bold]", highlight=False)


@app.command("down")
def down_command(ctx: typer.Context) -> None:
    """Stop every process of the local stack (Envoy, model servers, collector) and, if running, the
    platform of `up --platform` (worker, webhook receiver, Prefect and MLflow servers). Safe to re-run."""
    from mlcanary import platform

    with _user_errors():
        settings = ctx.obj.settings()
        try:
            stopped = platform.down(settings)
        except platform.PlatformError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


webhook_app = typer.Typer(
    help="The MLflow registry webhook receiver: @candidate set in MLflow → a Prefect event.",
    no_args_is_help=False,
)
app.add_typer(webhook_app, name="webhook")


@webhook_app.callback(invoke_without_command=True)
def webhook_command(
    ctx: typer.Context,
    prefect_api_url: Annotated[
        str | None, typer.Option(help="Prefect API URL (default: $PREFECT_API_URL or the local 4200).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.webhook_port, 8095).")] = None,
) -> None:
    """Run the receiver: verifies X-MLflow-Signature with $MLCANARY_WEBHOOK_SECRET, drops replays
    and stale deliveries, and posts an accepted @candidate event to the Prefect API."""
    if ctx.invoked_subcommand is not None:
        return
    from mlcanary.webhook import WebhookConfigError, run_webhook

    with _user_errors():
        settings = ctx.obj.settings()
    api = prefect_api_url or os.environ.get("PREFECT_API_URL") or "http://127.0.0.1:4200/api"
    try:
        run_webhook(
            host or settings.serving.host,
            port or settings.serving.webhook_port,
            prefect_api_url=api,
            state_dir=settings.state_dir,
        )
    except WebhookConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


@webhook_app.command("register")
def webhook_register_command(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="Receiver URL MLflow delivers to (default: the local receiver).")
    ] = None,
) -> None:
    """Create or update the MLflow webhook pointing at the receiver, with $MLCANARY_WEBHOOK_SECRET.

    The MLflow *server* must allow the target: MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true and
    MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https for a loopback receiver, and a stable
    MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY so secrets survive restarts.
    """
    from mlcanary.webhook import WebhookConfigError, register_webhook, secret_from_env

    with _user_errors():
        settings = ctx.obj.settings()
        target = url or f"http://{settings.serving.host}:{settings.serving.webhook_port}/webhook"
        try:
            webhook_id = register_webhook(settings.tracking_uri, target, secret_from_env())
        except WebhookConfigError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
    console.print(f"MLflow webhook {webhook_id} → {target}")


if __name__ == "__main__":
    app()
