"""One soak from start to end: train, bring the stack up, traffic + release + memory samples for
the whole duration, then read every counter and reconcile. The stack is always taken down."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.serving.cpu import CpuShare, cpu_phase, stack_pids
from benchmarks.serving.measure import say
from benchmarks.serving.setup import bench_settings
from benchmarks.soak import counters
from benchmarks.soak.client import ClientResult, soak_client
from benchmarks.soak.memory import MemorySampler
from benchmarks.soak.plan import SoakPlan
from benchmarks.soak.reconcile import Counts, Reconciliation, reconcile
from benchmarks.soak.release import ReleaseLog, drive_release, register_turning_candidate

if TYPE_CHECKING:
    from mlcanary.config import Settings

CLIENT = "client (load generator)"
DRIVER = "soak driver (rollout engine)"
LOGGER_WARNINGS = {
    "dropped": "payload logger dropped",
    "failed": "payload logger failed to deliver",
    "undelivered": "undelivered event",
}


@dataclass
class SoakResult:
    """Everything the report shows."""

    plan: SoakPlan
    versions: tuple[str, str]
    client: ClientResult
    release: ReleaseLog
    reconciliation: Reconciliation
    counts: Counts
    memory: dict[str, list[tuple[float, int]]]
    cpu: dict[str, CpuShare]
    ready_s: Mapping[str, float] = field(default_factory=dict)
    """Seconds after the memory sampler's start when a process started late was ready."""
    candidate_log_warnings: Mapping[str, int] = field(default_factory=dict)
    peak_pending: Mapping[str, int] = field(default_factory=dict)
    """The largest payload-logger backlog (queued events) seen per arm during the soak."""
    catch_up_s: float | None = None
    """Seconds after the client's end until every live payload logger had delivered its queue."""
    facts: dict[str, str] = field(default_factory=dict)


#: Longest wait, after the last answer, for the payload loggers to deliver their queues.
DRAIN_WAIT_S = 600.0


class LoggerWatch:
    """The model servers' payload-logger counters, read about every second: the last reading per
    arm (a retired server's counters go with it) and the largest backlog (``pending``) seen."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self.urls = urls
        self.last: dict[str, dict[str, int]] = {}
        self.peak_pending: dict[str, int] = dict.fromkeys(urls, 0)

    def poll(self) -> None:
        for arm, url in self.urls.items():
            stats = counters.payload_logger(url)
            if stats is not None:
                self.last[arm] = stats
                self.peak_pending[arm] = max(self.peak_pending[arm], stats["pending"])

    def drain(self, timeout_s: float = DRAIN_WAIT_S) -> float | None:
        """Wait until every live logger has delivered (or failed) all it enqueued; seconds it
        took, None if ``timeout_s`` passed first. The live loggers' last readings are then final."""
        started = time.monotonic()
        while True:
            live = {arm: counters.payload_logger(url) for arm, url in self.urls.items()}
            live = {arm: stats for arm, stats in live.items() if stats is not None}
            self.last.update(live)
            if all(_drained(stats) for stats in live.values()):
                for arm in live:
                    self.last[arm] = {**live[arm], "final": 1}
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                return None
            time.sleep(0.5)


def _drained(stats: Mapping[str, int]) -> bool:
    return stats["pending"] == 0 and stats["sent"] + stats["failed"] + stats["dropped"] >= stats["enqueued"]


def soak_settings(plan: SoakPlan, work_dir: Path, rows: int = 2000, estimator: str | None = None) -> Settings:
    """The stack's settings: state (MLflow, inference log, logs) under ``work_dir``, free ports,
    the plan's policy."""
    return bench_settings(work_dir / "state", rows, estimator, plan.overrides())


def run_soak(plan: SoakPlan, settings: Settings, work_dir: Path) -> SoakResult:
    """Run the soak of ``plan`` on a stack of ``settings`` (see :func:`soak_settings`)."""
    from mlcanary.registry.mlflow_registry import registry_from_settings
    from mlcanary.serving.local.envoy import EnvoyLayout
    from mlcanary.serving.local.stack import down, up
    from mlcanary.training import train

    state_dir = settings.state_dir
    model = settings.model.name
    rows = settings.data.synthetic.rows
    say(f"training @champion ({settings.model.estimator}, {rows} rows) in {state_dir}")
    champion = train(settings, registry_from_settings(settings)).version
    candidate = register_turning_candidate(settings, champion, plan.healthy_calls)
    serving = settings.serving
    watch = LoggerWatch(
        {arm: serving.url(getattr(serving, f"{arm}_port")) for arm in ("champion", "candidate")}
    )

    cpu: dict[str, CpuShare] = {}
    try:
        say("bringing the local stack up (collector, Envoy, champion)")
        info = up(settings, with_candidate=False)
        sampler: MemorySampler | None = None
        with (
            cpu_phase("soak", cpu),
            soak_client(
                work_dir / "client",
                {
                    "url": info.front_door_url,
                    "collector_url": serving.collector_url,
                    "model": model,
                    "rate": plan.rate,
                    "duration_s": plan.duration_s,
                    "seed": plan.seed,
                },
            ) as client_run,
        ):
            t0 = time.monotonic()
            sampler = MemorySampler(
                lambda: {**stack_pids(state_dir), CLIENT: client_run.pid, DRIVER: os.getpid()},
                interval_s=plan.sample_s,
            )
            sampler.start(t0)
            say(f"soak: {plan.rate:g} requests/s for {plan.minutes:g} min; release of v{candidate}")
            try:
                release = drive_release(settings, plan, candidate, t0, watch.poll)
                say("waiting for the client to drain")
                client = client_run.wait()
            finally:
                sampler.stop()
        say("waiting for the payload loggers to deliver their queues")
        catch_up_s = watch.drain()
        say("reading every counter")
        store_rows, halves, labels = counters.store_counts(info.store_url, client.run_id)
        counts = Counts(
            run_id=client.run_id,
            records=client.records,
            client=client.report,
            access_log=counters.access_log(EnvoyLayout.from_settings(settings).access_log_path),
            envoy_stats=counters.envoy_stats(info.envoy_admin_url),
            store_rows=store_rows,
            store_halves=halves,
            labels_stored=labels,
            collector=counters.collector_stats(serving.collector_url),
            loggers={arm: watch.last.get(arm) for arm in watch.urls},
        )
        warnings = counters.log_warnings(state_dir / "logs" / "model-candidate.log", LOGGER_WARNINGS)
    finally:
        say("taking the stack down")
        down(settings)
    return SoakResult(
        plan=plan,
        versions=(champion, candidate),
        client=client,
        release=release,
        reconciliation=reconcile(counts),
        counts=counts,
        memory=sampler.samples if sampler else {},
        cpu=cpu,
        ready_s=_ready_s(release, t0),
        candidate_log_warnings=warnings,
        peak_pending=watch.peak_pending,
        catch_up_s=catch_up_s,
    )


def _ready_s(release: ReleaseLog, t0: float) -> dict[str, float]:
    """The candidate's server was ready when the canary started (its second phase)."""
    if len(release.phases) < 2:
        return {}
    return {"model-candidate": release.phases[1][0] / 1e9 - t0}
