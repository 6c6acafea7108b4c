"""``mlcanary demo``: the whole story on the local stack, with times compressed by the demo profile.

1. a champion is trained and served behind Envoy; traffic flows through the front door;
2. a better candidate is trained, judged in a short **shadow** phase on mirrored requests (every
   user still on the champion), then canaried under traffic, stepped up and **promoted**;
3. a bad candidate (the same model behind a flaky, slow feature service: 30 % of requests fail, the
   rest 60 ms slower) is **rejected in shadow** within seconds of the evidence, before any user was
   served by it (with the profile's shadow phase off, it is canaried and rolled back instead);
4. a side-by-side summary and a self-contained HTML report with plots close the story.

While it runs, a view (:mod:`mlcanary.demo.live`) shows the phase, the traffic each arm receives
(read back from Envoy) and every check. The same engine the Prefect ``canary-monitor`` flow runs
does each tick here.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mlcanary.config import Settings, load_settings
from mlcanary.demo.live import BackgroundTraffic, TickRecorder, run_release
from mlcanary.demo.report import write_report
from mlcanary.demo.summary import SUMMARY_COLUMNS, ReleaseRecord, format_summary_value, summary_rows
from mlcanary.demo.traffic.plan import TrafficPlan
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.registry.protocol import NewVersion
from mlcanary.rollout import tags
from mlcanary.rollout.arms import CANDIDATE
from mlcanary.training import pip_requirements, run_overrides, train
from mlcanary.wiring import build_engine, evidence_recorder

SUMMARY_ROWS = [key for key, _ in SUMMARY_COLUMNS if key not in ("release", "reason")]
"""The summary's rows, one per measure (releases are its columns, so it fits any width)."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: the releases and where the report is."""

    records: list[ReleaseRecord]
    report: Path


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
            tags=tags.tagged(
                {
                    tags.GATE: "manual",
                    tags.NOTE: f"v{base_version} behind a flaky feature service (fault injection)",
                }
            ),
            run_name=f"faulty-{name}-from-v{base_version}",
            # Pinned like a trained version's: MLflow's inference would load the model in a
            # subprocess (seconds, and a warning on stderr when it is slow).
            pip_requirements=pip_requirements(),
        ),
    )
    # Set by hand, as a hurried human (or a webhook) would: the canary is the safety net.
    registry.set_alias(name, CANDIDATE, info.version)
    return info.version


def summary_table(records: list[ReleaseRecord]) -> Table:
    """The releases side by side: one column per release, one row per measure."""
    rows = summary_rows(records)
    headings = dict(SUMMARY_COLUMNS)
    table = Table(title="side by side", title_justify="left")
    table.add_column("")
    for row in rows:
        table.add_column(str(row["release"]), justify="right")
    for key in SUMMARY_ROWS:
        table.add_row(headings[key], *(format_summary_value(key, row.get(key)) for row in rows))
    return table


def _print_summary(console: Console, records: list[ReleaseRecord]) -> None:
    console.print(summary_table(records))
    for row in summary_rows(records):
        console.print(f"• {row['release']}: {row['reason']}", highlight=False)


def _traffic_plan(settings: Settings, rps: float, seconds: float) -> TrafficPlan:
    serving = settings.serving
    return TrafficPlan(
        front_door_url=serving.front_door_url,
        model=settings.model.name,
        rps=rps,
        duration_s=seconds,
        seed=7,
        collector_url=serving.collector_url,
        feedback_delay_s=2.0,
        feedback_share=0.5,
    )


def _release(console: Console, base: Settings, title: str, version: str, deadline_s: float) -> ReleaseRecord:
    ticks = TickRecorder(evidence_recorder(base, registry_from_settings(base)))
    engine = build_engine(base, recorder=ticks)
    state = run_release(console, engine, ticks, base, title, version, deadline_s=deadline_s)
    return ReleaseRecord(title, state, ticks.ticks)


def run_demo(
    console: Console,
    *,
    profile: str | None = "demo",
    config_file: Path | None = None,
    rps: float = 40.0,
    keep_up: bool = False,
    say: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the whole story (see the module docstring); the stack is stopped at the end unless
    ``keep_up``."""
    from mlcanary.serving.local.stack import down, up
    from mlcanary.telemetry.store import InferenceLogStore

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
    traffic = BackgroundTraffic(_traffic_plan(base, rps, seconds=3 * window + 120))
    try:
        how = "shadowed, then canaried" if base.rollout.shadow.enabled else "canaried"
        say(f"2 · a better model: logistic regression, {how} under live traffic")
        good_settings = settings_for(estimator="logistic_regression", synthetic={"seed": 2})
        with console.status("training v2…"):
            good = train(good_settings, registry_from_settings(good_settings))
        console.print(f"v{good.version} → @{good.alias}: {good.reason}", highlight=False)
        records.append(
            _release(console, base, f"v{good.version} logistic regression", good.version, window + 60)
        )

        shadow = " in shadow" if base.rollout.shadow.enabled else ""
        say(f"3 · a bad candidate{shadow}: v2 behind a flaky feature service (30 % errors, +60 ms)")
        with console.status("registering the faulty version…"):
            bad_version = _register_faulty(base, good.version)
        records.append(
            _release(console, base, f"v{bad_version} flaky feature service", bad_version, window + 60)
        )
    finally:
        traffic.stop()

    say("4 · the evidence")
    _print_summary(console, records)
    with InferenceLogStore(base.store_url) as store:
        report = write_report(base.state_dir / "report.html", records, store, title="mlcanary demo")
    console.print(f"HTML report: [bold]{report.resolve()}[/bold]", highlight=False)
    console.print(f"MLflow UI:   mlflow ui --backend-store-uri {base.tracking_uri}", highlight=False)
    if keep_up:
        console.print("the local stack is still up: `mlcanary -p demo down` stops it")
    else:
        down(base)
    return DemoResult(records=records, report=report)
