"""Runs every judge on every scenario, canary rate and cadence, in parallel processes, and
summarises the outcomes per cell (scenario × cadence × rate × judge)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np

from benchmarks.judge import baselines
from benchmarks.judge.ours import Cadence, Outcome, run
from benchmarks.judge.streams import simulate
from benchmarks.judge.truth import ModelTruth, Scenario, measure_models, scenarios
from mlcanary.config import load_settings

RATES = (0.1, 1.0, 10.0)
"""Canary requests per second at the first traffic step."""
JUDGES = ("ours", "flagger", "kayenta", "fixed_24h")


@cache
def cadences() -> dict[str, Cadence]:
    """The shipped policy (``configs/rollout.yaml`` through the ``local`` profile) at its 15-minute
    looks over 48 h, and the ``demo`` profile at its 3-second looks over 4 minutes."""
    return {
        "15m": Cadence(
            "15-minute looks over 48 h (configs/rollout.yaml)", load_settings(profile="local").rollout, 60.0
        ),
        "demo": Cadence(
            "demo cadence: 3-second looks over 4 min (configs/demo.yaml)",
            load_settings(profile="demo").rollout,
            1.0,
        ),
    }


@dataclass(frozen=True)
class Task:
    scenario: Scenario
    cadence: str
    rate: float
    seeds: tuple[int, ...]


def _one(task: Task) -> list[tuple[str, str, float, str, Outcome]]:
    cadence = cadences()[task.cadence]
    rows = []
    for seed in task.seeds:
        rows.append(
            (
                task.scenario.name,
                task.cadence,
                task.rate,
                "ours",
                run(task.scenario, cadence, task.rate, seed),
            )
        )
        if task.cadence != "15m":
            continue  # the baselines' documented intervals (1 min, 1 h, 24 h) do not fit a 4-minute window
        first = cadence.policy.steps[0]
        stream = simulate(
            task.scenario,
            total_rps=task.rate * 100 / first,
            candidate_share=first / 100,
            dt=cadence.dt,
            buckets=cadence.buckets,
            horizon_s=cadence.horizon_s,
            seed=seed * 1000 + first,  # the very stream ours starts on
            with_baseline=True,
        )
        key = (task.scenario.name, task.cadence, task.rate)
        rows.append((*key, "flagger", baselines.flagger(task.scenario, stream)))
        rows.append((*key, "kayenta", baselines.kayenta(task.scenario, stream)))
        rows.append((*key, "fixed_24h", baselines.fixed_window(task.scenario, stream, cadence.policy, seed)))
    return rows


@dataclass(frozen=True)
class Cell:
    """What one judge did over the runs of one scenario, cadence and rate."""

    scenario: str
    cadence: str
    rate: float
    judge: str
    runs: int
    rolled_back_by_check: int
    rolled_back_undecided: int
    promoted: int
    undecided: int
    median_requests: float
    median_hours: float
    max_hours: float
    max_looks_after_floor: int | None

    @property
    def rolled_back(self) -> int:
        return self.rolled_back_by_check + self.rolled_back_undecided


def summarise(scenario: str, cadence: str, rate: float, judge: str, outcomes: list[Outcome]) -> Cell:
    by_check = [o for o in outcomes if o.action == "rollback" and not o.reason.startswith("maximum duration")]
    undecided_rb = [o for o in outcomes if o.action == "rollback" and o.reason.startswith("maximum duration")]
    decided = [o for o in outcomes if o.action in ("rollback", "promote")]
    looks = [o.looks_after_floor for o in by_check if o.looks_after_floor is not None]
    return Cell(
        scenario=scenario,
        cadence=cadence,
        rate=rate,
        judge=judge,
        runs=len(outcomes),
        rolled_back_by_check=len(by_check),
        rolled_back_undecided=len(undecided_rb),
        promoted=sum(o.action == "promote" for o in outcomes),
        undecided=sum(o.action == "undecided" for o in outcomes),
        median_requests=float(np.median([o.canary_requests for o in decided])) if decided else float("nan"),
        median_hours=float(np.median([o.at_s for o in decided])) / 3600 if decided else float("nan"),
        max_hours=max((o.at_s for o in decided), default=float("nan")) / 3600,
        max_looks_after_floor=max(looks) if looks else None,
    )


@dataclass(frozen=True)
class Results:
    cells: list[Cell]
    scenarios: list[Scenario]
    models: ModelTruth
    seconds: float
    runs: int
    good_runs: int
    aa_runs: int


def run_all(
    runs: int,
    good_runs: int,
    aa_runs: int,
    workers: int | None = None,
    rates: Iterable[float] = RATES,
    models: ModelTruth | None = None,
) -> Results:
    """Every scenario × cadence × rate × judge, spread over ``workers`` processes: ``runs`` seeds
    per bad scenario (cheap: decided early; their medians need many), ``good_runs`` per good one
    (each runs to its promotion) and ``aa_runs`` for identical models, whose false-rollback rate is
    the goal that needs the most. ``models`` defaults to :func:`measure_models` at its full size."""
    started = time.monotonic()
    models = models or measure_models()
    cases = scenarios(models)
    tasks = []
    chunk = 10
    for scenario in cases:
        count = aa_runs if scenario.name == "aa" else runs if scenario.bad else good_runs
        for cadence in cadences():
            for rate in rates:
                for low in range(0, count, chunk):
                    tasks.append(Task(scenario, cadence, rate, tuple(range(low, min(low + chunk, count)))))
    outcomes: dict[tuple[str, str, float, str], list[Outcome]] = {}
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, rows in enumerate(pool.map(_one, tasks), start=1):
            for scenario, cadence, rate, judge, outcome in rows:
                outcomes.setdefault((scenario, cadence, rate, judge), []).append(outcome)
            if done % 20 == 0 or done == len(tasks):
                print(f"judge benchmark: {done}/{len(tasks)} task(s) done", file=sys.stderr)
    cells = [summarise(*key, values) for key, values in outcomes.items()]
    return Results(cells, cases, models, time.monotonic() - started, runs, good_runs, aa_runs)
