"""``mlcanary demo``: the whole story on the local stack, with times compressed by the demo profile.

1. a champion is trained and served behind Envoy; traffic flows through the front door;
2. a better candidate is trained, canaried under traffic, stepped up and **promoted**;
3. a bad candidate (the same model behind a flaky, slow feature service: 30 % of requests fail, the
   rest 60 ms slower) is canaried and **rolled back** within seconds of the evidence;
4. a side-by-side summary and a self-contained HTML report with plots close the story.

While it runs, a live view shows the phase, the traffic each arm receives (read back from Envoy)
and every check. The same engine the Prefect ``canary-monitor`` flow runs does each tick here.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from mlcanary.config import Settings, load_settings
from mlcanary.registry import CANDIDATE, TAG_PREFIX, NewVersion, registry_from_settings
from mlcanary.report import SUMMARY_COLUMNS, ReleaseRecord, format_summary_value, summary_rows, write_report
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.ports import EvidenceRecorder
from mlcanary.rollout.state import Decision, ReleaseState
from mlcanary.training import run_overrides, train
from mlcanary.wiring import build_engine, evidence_recorder

VERDICT_STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow", "error": "magenta"}
ACTION_STYLE = {
    "promote": "bold green",
    "rollback": "bold red",
    "step_up": "bold cyan",
    "hold": "yellow",
    "await_approval": "bold magenta",
}


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: the releases and where the report is."""

    records: list[ReleaseRecord]
    report: Path


class _Recorder:
    """Wraps the MLflow evidence recorder and keeps each tick for the live view and the report."""

    def __init__(self, inner: EvidenceRecorder) -> None:
        self.inner = inner
        self.ticks: list[tuple[Measurements, Decision]] = []

    def begin(self, release: ReleaseState) -> str | None:
        return self.inner.begin(release)

    def record_tick(self, release: ReleaseState, measurements: Measurements, decision: Decision) -> None:
        self.ticks.append((measurements, decision))
        self.inner.record_tick(release, measurements, decision)

    def finish(self, release: ReleaseState) -> None:
        self.inner.finish(release)

    def attach_report(self, release: ReleaseState, name: str, html: str) -> None:
        attach = getattr(self.inner, "attach_report", None)
        if attach is not None:
            attach(release, name, html)


class _Traffic:
    """Background traffic through the front door for as long as a release runs."""

    def __init__(self, settings: Settings, rps: float, seconds: float, seed: int) -> None:
        from mlcanary.traffic import TrafficPlan, run_traffic

        serving = settings.serving
        self.plan = TrafficPlan(
            front_door_url=f"http://{serving.host}:{serving.front_door_port}",
            model=settings.model.name,
            rps=rps,
            duration_s=seconds,
            seed=seed,
            collector_url=f"http://{serving.host}:{serving.collector_port}",
            feedback_delay_s=2.0,
            feedback_share=0.5,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="demo-traffic", daemon=True)
        self.thread.start()
        self.future = asyncio.run_coroutine_threadsafe(run_traffic(self.plan), self.loop)

    def stop(self) -> None:
        self.future.cancel()
        # Cancelled or finished: either way the traffic has stopped.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            self.future.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _checks_table(decision: Decision | None) -> Table:
    table = Table(expand=True, show_edge=False, pad_edge=False)
    for column in ("check", "verdict", "champion", "candidate", "n"):
        table.add_column(column, no_wrap=True)
    if decision is None:
        return table
    for check in decision.checks:
        tag = " ⚑" if check.critical else " ·" if check.advisory else ""
        style = VERDICT_STYLE.get(check.verdict, "white")
        table.add_row(
            check.name + tag,
            f"[{style}]{check.verdict}[/{style}]",
            "—" if check.baseline is None else f"{check.baseline:.4g}",
            "—" if check.value is None else f"{check.value:.4g}",
            f"{check.n_champion or '—'} / {check.n_candidate or '—'}",
        )
    return table


def _view(title: str, release: ReleaseState, traffic: dict[str, int] | None, record: _Recorder) -> Panel:
    measured, decision = record.ticks[-1] if record.ticks else (None, None)
    served = traffic or {"champion": 100 - release.traffic, "candidate": release.traffic}
    lines = Table.grid(padding=(0, 2))
    lines.add_row("phase", f"[bold]{release.phase.value}[/bold]", "tick", str(release.ticks))
    lines.add_row(
        "traffic (Envoy)",
        f"champion {served['champion']} %  ·  candidate {served['candidate']} %",
        "requests",
        f"{measured.champion.requests} / {measured.candidate.requests}" if measured else "—",
    )
    if decision is not None:
        style = ACTION_STYLE.get(decision.action, "white")
        lines.add_row("decision", f"[{style}]{decision.action}[/{style}]", "", "")
        lines.add_row("why", decision.reason[:110], "", "")
    return Panel(Group(lines, _checks_table(decision)), title=title, title_align="left")


def _run_release(
    console: Console,
    engine: RolloutEngine,
    record: _Recorder,
    settings: Settings,
    title: str,
    version: str,
    *,
    deadline_s: float,
) -> ReleaseState:
    model = settings.model.name
    state = engine.start_canary(model, version)
    interval = settings.rollout.tick_interval.total_seconds()
    started = time.monotonic()
    with Live(_view(title, state, None, record), console=console, refresh_per_second=4) as live:
        while not state.phase.terminal and time.monotonic() - started < deadline_s:
            time.sleep(interval)
            state = engine.tick(model).release
            observed = engine.backend.status(model).traffic
            live.update(_view(title, state, observed, record))
    return state


def _register_faulty(settings: Settings, base_version: str) -> str:
    """Register the demo's bad candidate: the good model behind a flaky, slow feature service."""
    from models.faults import FaultyModel

    registry = registry_from_settings(settings)
    name = settings.model.name
    base = registry.load_model(name, base_version)
    reference = registry.load_reference(name, base_version)
    # Healthy for its first calls (warm-up, preflight): the feature service breaks under live load.
    faulty = FaultyModel(base.model, failure_share=0.3, extra_latency_ms=60.0, healthy_calls=5)
    info = registry.register(
        name,
        NewVersion(
            model=faulty,
            features=base.features,
            reference=reference,
            input_example=reference.head(3),
            metrics={},
            params={"base_version": base_version, "failure_share": "0.3", "extra_latency_ms": "60"},
            tags={
                TAG_PREFIX + "gate": "manual",
                TAG_PREFIX + "note": f"v{base_version} behind a flaky feature service (fault injection)",
            },
            run_name=f"faulty-{name}-from-v{base_version}",
        ),
    )
    # Set by hand, as a hurried human (or a webhook) would: the canary is the safety net.
    registry.set_alias(name, CANDIDATE, info.version)
    return info.version


def _summary(console: Console, records: list[ReleaseRecord]) -> None:
    table = Table(title="side by side", title_justify="left")
    keys = [k for k, _ in SUMMARY_COLUMNS if k not in ("model", "reason")]
    for key, heading in SUMMARY_COLUMNS:
        if key in keys:
            table.add_column(heading)
    for row in summary_rows(records):
        table.add_row(*(format_summary_value(k, row.get(k)) for k in keys))
    console.print(table)
    for row in summary_rows(records):
        console.print(f"• {row['release']}: {row['reason']}", highlight=False)


def run_demo(
    console: Console,
    *,
    profile: str = "demo",
    config_file: Path | None = None,
    rps: float = 40.0,
    keep_up: bool = False,
    say: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the whole story (see the module docstring); the stack is stopped at the end unless
    ``keep_up``."""
    from mlcanary.serving.local.stack import down, up

    say = say or (lambda message: console.rule(message, align="left"))
    base = load_settings(profile, config_file=config_file)
    down(base)
    if base.state_dir.exists():
        shutil.rmtree(base.state_dir)
    # Evidently takes ~10 s to import: warm it up while the first model trains.
    threading.Thread(target=lambda: __import__("evidently"), daemon=True).start()

    def settings_for(**overrides: Any) -> Settings:
        return load_settings(profile, config_file=config_file, overrides=run_overrides(**overrides))

    say("1 · the champion: a quick shallow random forest, now serving production")
    champion_settings = load_settings(
        profile,
        config_file=config_file,
        overrides={
            "model.estimator": "random_forest",
            "model.params": {"max_depth": 2, "n_estimators": 20},
            "data.synthetic.seed": 1,
        },
    )
    with console.status("training v1…"):
        first = train(champion_settings, registry_from_settings(champion_settings))
    console.print(f"v{first.version} → @{first.alias}: {first.reason}", highlight=False)
    with console.status("starting the local stack: collector, Envoy, champion model server…"):
        info = up(base, with_candidate=False)
    console.print(f"front door {info.front_door_url}  ·  Envoy admin {info.envoy_admin_url}")

    records: list[ReleaseRecord] = []
    window = base.rollout.max_duration.total_seconds()
    traffic = _Traffic(base, rps, seconds=3 * window + 120, seed=7)
    try:
        say("2 · a better model: logistic regression, canaried under live traffic")
        good_settings = settings_for(estimator="logistic_regression", synthetic={"seed": 2})
        with console.status("training v2…"):
            good = train(good_settings, registry_from_settings(good_settings))
        console.print(f"v{good.version} → @{good.alias}: {good.reason}", highlight=False)
        record = _Recorder(evidence_recorder(base, registry_from_settings(base)))
        engine = build_engine(base, recorder=record)
        state = _run_release(
            console,
            engine,
            record,
            base,
            f"v{good.version} logistic regression",
            good.version,
            deadline_s=window + 60,
        )
        records.append(ReleaseRecord(f"v{good.version} logistic regression", state, record.ticks))

        say("3 · a bad candidate: v2 behind a flaky feature service (30 % errors, +60 ms)")
        with console.status("registering the faulty version…"):
            bad_version = _register_faulty(base, good.version)
        record = _Recorder(evidence_recorder(base, registry_from_settings(base)))
        engine = build_engine(base, recorder=record)
        state = _run_release(
            console,
            engine,
            record,
            base,
            f"v{bad_version} flaky feature service",
            bad_version,
            deadline_s=window + 60,
        )
        records.append(ReleaseRecord(f"v{bad_version} flaky feature service", state, record.ticks))
    finally:
        traffic.stop()

    say("4 · the evidence")
    _summary(console, records)
    from mlcanary.telemetry.store import InferenceLogStore

    report = write_report(
        base.state_dir / "report.html", records, InferenceLogStore(base.store_url), title="mlcanary demo"
    )
    console.print(f"HTML report: [bold]{report.resolve()}[/bold]")
    console.print(f"MLflow UI:   mlflow ui --backend-store-uri {base.tracking_uri}", highlight=False)
    if keep_up:
        console.print("the local stack is still up: `mlcanary -p demo down` stops it")
    else:
        down(base)
    return DemoResult(records=records, report=report)
