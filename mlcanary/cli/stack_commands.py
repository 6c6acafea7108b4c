"""``mlcanary up``, ``down``, ``collector`` and ``traffic``: the local stack (and platform) and the
traffic that flows through it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

import typer
from rich.table import Table

from mlcanary.cli.common import console, err_console, fail, user_errors

if TYPE_CHECKING:
    from mlcanary.config import Settings
    from mlcanary.demo.traffic.plan import TrafficPlan
    from mlcanary.demo.traffic.report import Progress, TrafficReport
    from mlcanary.serving.local.stack import StackInfo


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
            help="Also run the platform: an MLflow server (serving.mlflow_port), a Prefect server "
            "(serving.prefect_port) with the deployments of prefect.yaml and a worker, and the webhook "
            "receiver registered in MLflow. Writes <state>/platform.env to source. `mlcanary down` "
            "stops it all.",
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

    with user_errors():
        settings = ctx.obj.settings()
        percent = candidate_percent if candidate_percent is not None else settings.rollout.steps[0]
        with console.status("starting the local stack (collector, Envoy, model servers)…"):
            info = up(settings, candidate_percent=percent, with_candidate=candidate)
    print_stack(info)


def print_stack(info: StackInfo) -> None:
    """The stack's URLs and the split it serves."""
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
    if info.candidate_problem:
        err_console.print(
            f"[yellow]warning:[/yellow] {info.candidate_problem}", highlight=False, soft_wrap=True
        )
    console.print(f"try: curl -s {info.front_door_url}/v1/models/{info.model}  ·  mlcanary traffic --rps 20")


def _platform_up(ctx: typer.Context) -> None:
    from mlcanary import platform

    with user_errors():
        settings = ctx.obj.settings()
        with console.status("starting the platform…") as spinner:

            def show(message: str) -> None:
                if message.startswith("✓"):
                    console.print(f"[green]✓[/green]{message[1:]}", highlight=False)
                else:
                    spinner.update(message)

            info = platform.up(settings, progress=show)
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
        print_stack(info.stack)
    elif info.stack_note:
        console.print(info.stack_note, highlight=False)
    console.print(f"point your shell at it: [bold]source {info.paths.env_file}[/bold]", highlight=False)


def down_command(ctx: typer.Context) -> None:
    """Stop every process of the local stack (Envoy, model servers, collector) and, if running, the
    platform of `up --platform` (worker, webhook receiver, Prefect and MLflow servers). Safe to re-run."""
    from mlcanary import platform

    with user_errors():
        settings = ctx.obj.settings()
        stopped = platform.down(settings)
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def collector_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.collector_port).")] = None,
    db_url: Annotated[
        str | None, typer.Option(help="Inference-log database URL (default: telemetry.store_url).")
    ] = None,
) -> None:
    """Run the inference-log collector: KServe logger CloudEvents in, one row per request out.

    Accepts request/response events from the local model servers and from KServe's logger agent,
    pairs them by ce-id and answers 2xx only once the row is committed. Feedback labels go to
    POST /feedback. Runs until interrupted.
    """
    from mlcanary.telemetry.collector import run_collector

    with user_errors():
        settings = ctx.obj.settings()
        resolve_arm = None
        if settings.serving.backend == "kserve":
            # KServe's logger names the pod, not the arm: resolve it through the InferenceService.
            from mlcanary.serving.kserve.arms import ArmResolver
            from mlcanary.serving.kserve.backend import KServeBackend

            resolve_arm = ArmResolver(
                KServeBackend.from_settings(settings), ttl_s=settings.kserve.arm_cache_s
            )
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
        typer.Option(help="Front door URL (default: serving.front_door_url; kserve: kserve.ingress_url)."),
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

    from mlcanary.demo.traffic.plan import TrafficPlan
    from mlcanary.demo.traffic.render import render_summary
    from mlcanary.demo.traffic.rows import FileRows
    from mlcanary.demo.traffic.run import run_traffic_sync

    with user_errors():
        settings = ctx.obj.settings()
        target = _traffic_target(settings, url, host_header)
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
            collector_url=target.collector_url if feedback else None,
            feedback_delay_s=feedback_delay,
            feedback_share=feedback_share,
            force_arm=arm,
            data_path=None if data is None else str(data),
            target=target_column,
        )
        if data is not None:
            # Fail here, in one line, on a file that cannot be replayed.
            FileRows.read(str(data), target_column)
        elif target_column is not None:
            raise ValueError("--target needs --data (the bundled rows carry their own labels)")
    except ValidationError as exc:
        raise fail(f"invalid traffic options: {exc}", 2) from None
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        report = run_traffic_sync(plan)
        typer.echo(json.dumps(report.to_dict()))
    else:
        report = _with_progress(plan)
        console.print(render_summary(report))
    if report.total.ok == 0:
        raise typer.Exit(1)


class _Target(NamedTuple):
    url: str
    host_header: str | None
    protocol: Literal["v1", "v2"]
    collector_url: str | None


def _traffic_target(settings: Settings, url: str | None, host_header: str | None) -> _Target:
    """Where `traffic` sends: the local Envoy, or (kserve) the Istio ingress with the
    InferenceService's host, in the protocol of the configured runtime."""
    serving = settings.serving
    if serving.backend != "kserve":
        return _Target(url or serving.front_door_url, host_header, "v1", serving.collector_url)
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
    return _Target(front, host_header, protocol, ks.collector_url)


def _with_progress(plan: TrafficPlan) -> TrafficReport:
    """Run ``plan`` with a progress bar (requests per arm and errors so far)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as ProgressBar

    from mlcanary.demo.traffic.run import run_traffic_sync

    columns = (
        TextColumn("[bold]traffic"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[arms]}"),
        TimeRemainingColumn(),
    )
    with ProgressBar(*columns, console=console, transient=False) as progress:
        task = progress.add_task("traffic", total=plan.planned_requests, arms="")

        def show(p: Progress) -> None:
            arms = "  ".join(f"{a} {n}" for a, n in p.per_arm.items() if n)
            arms += f"  errors {p.errors}" if p.errors else ""
            progress.update(task, completed=p.done, total=p.total, arms=arms)

        return run_traffic_sync(plan, on_progress=show)
