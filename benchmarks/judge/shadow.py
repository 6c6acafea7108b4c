"""The shadow phase under the shipped policy: the real ``decide()`` on simulated mirrored traffic.

Each release starts in ``shadowing`` with ``configs/rollout.yaml``'s policy and its shadow phase on
(``shadow.enabled``, everything else as shipped). Every live request is answered by the champion;
``shadow.share`` of them is mirrored to the candidate. The stream of both arms comes from the same
simulator as the canary benchmark (:mod:`benchmarks.judge.streams`: the champion at the live rate,
the candidate at the mirrored rate), and the pairs from the real models' truth: for each mirrored
request both labels agree with the scenario's measured agreement, and the candidate − champion
probability has the mean and variance measured on fresh rows (:attr:`ModelTruth.shifts`). The
release ends when the judge rejects it in shadow or moves it on to the first canary step.

Run: ``python -m benchmarks.judge --only shadow [--out docs/benchmarks.md]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from benchmarks.judge.ours import T0, _arm_metrics, _Cumulative
from benchmarks.judge.streams import simulate
from benchmarks.judge.truth import ModelTruth, Scenario, scenarios
from benchmarks.provenance import commit
from mlcanary.config import load_settings
from mlcanary.rollout.decide import decide
from mlcanary.rollout.durations import format_duration
from mlcanary.rollout.measurements import Measurements, PairedScores
from mlcanary.rollout.policy import RolloutPolicy, ShadowPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.stats import MeanSummary

SHADOW_MARKERS = ("<!-- bench:judge-shadow:start -->", "<!-- bench:judge-shadow:end -->")
SCENARIOS = ("aa", "better", "err_1_3", "lat_30", "lat_x3", "flip", "cents")
LIVE_RATES = (0.1, 1.0, 10.0)
"""Live requests per second (all answered by the champion)."""
DT = 60.0


def shadow_policy() -> RolloutPolicy:
    """The shipped policy with its shadow phase on (its shipped duration, floor and share)."""
    shipped = load_settings(profile="local").rollout
    return shipped.model_copy(
        update={"shadow": ShadowPolicy(**{**shipped.shadow.model_dump(), "enabled": True})}
    )


def _shift(scenario: Scenario, models: ModelTruth) -> tuple[float, float]:
    if scenario.candidate.outcomes == scenario.champion.outcomes:
        return 0.0, 0.0  # the same model answers the same input the same way
    key = {"flip": "flipped", "cents": "cents_bug"}.get(scenario.name, "better")
    return models.shifts[key]


@dataclass(frozen=True)
class ShadowOutcome:
    """``rejected`` (in shadow), ``passed`` (on to the first canary step) or ``undecided``; when,
    after how many mirrored requests, and the failing checks of a rejection."""

    action: str
    at_s: float
    mirrored: int
    reason: str


def run_shadow(
    scenario: Scenario, models: ModelTruth, policy: RolloutPolicy, live_rps: float, seed: int
) -> ShadowOutcome:
    """One release's shadow phase of ``scenario`` at ``live_rps`` (see the module docstring)."""
    share = policy.shadow.share
    look_s = policy.tick_interval.total_seconds()
    horizon_s = policy.max_duration.total_seconds() + look_s
    buckets = round(horizon_s / DT)
    stream = simulate(
        scenario,
        total_rps=live_rps * (1 + share),
        candidate_share=share / (1 + share),
        dt=DT,
        buckets=buckets,
        horizon_s=horizon_s,
        seed=seed,
    )
    cum = _Cumulative(stream)
    rng = np.random.default_rng(seed + 7)
    mean, variance = _shift(scenario, models)
    state = ReleaseState(
        model="m",
        candidate_version="candidate",
        champion_version="champion",
        phase=Phase.SHADOWING,
        step_index=0,
        traffic=0,
        started_at=T0,
        step_started_at=T0,
    )
    per_look = round(look_s / DT)
    delay = int(policy.labels.delay.total_seconds() // DT)
    previous = 0
    for end in range(per_look, buckets + 1, per_look):
        now = T0 + timedelta(seconds=end * DT)
        champion = _arm_metrics(scenario.champion, cum, "champion", end, previous, max(end - delay, 0))
        candidate = _arm_metrics(scenario.candidate, cum, "candidate", end, previous, max(end - delay, 0))
        n = candidate.predictions
        diff = None
        if n:
            observed = rng.normal(mean, math.sqrt(variance / n)) if variance else mean
            diff = MeanSummary(n=n, mean=float(observed), variance=variance)
        pairs = PairedScores(
            live=champion.requests,
            mirrored=candidate.requests,
            pairs=n,
            agree=int(rng.binomial(n, scenario.agreement)) if n else 0,
            probability_diff=diff,
            mean_abs_dp=abs(mean),
        )
        measurements = Measurements(
            start=T0,
            end=now,
            window_start=T0 + timedelta(seconds=previous * DT),
            champion=champion,
            candidate=candidate,
            agreement=pairs.agreement,
            paired=pairs,
            candidate_ready=True,
            label_cutoff=now - policy.labels.delay,
        )
        decision = decide(policy, state, measurements, now)
        previous = end
        if decision.action in ("rollback", "step_up"):
            failing = [c.name for c in decision.checks if c.verdict == "fail" and not c.advisory]
            action = "rejected" if decision.action == "rollback" else "passed"
            return ShadowOutcome(action, end * DT, candidate.requests, ", ".join(failing))
    return ShadowOutcome("undecided", horizon_s, int(cum.total("candidate", "requests", buckets)), "")


def run_all_shadow(models: ModelTruth, runs: int) -> dict[tuple[str, float], list[ShadowOutcome]]:
    policy = shadow_policy()
    chosen = [s for s in scenarios(models) if s.name in SCENARIOS]
    return {
        (scenario.name, rate): [run_shadow(scenario, models, policy, rate, seed) for seed in range(runs)]
        for scenario in chosen
        for rate in LIVE_RATES
    }


def shadow_markdown(
    models: ModelTruth, results: dict[tuple[str, float], list[ShadowOutcome]], command: str
) -> str:
    policy = shadow_policy()
    shadow = policy.shadow
    titles = {s.name: (s.title, s.bad) for s in scenarios(models)}
    rows = [
        "| scenario | truth | live req/s | rejected in shadow | on to the canary "
        "| mirrored requests at the decision (median) | time (median) | failing checks |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for (name, rate), outcomes in results.items():
        title, bad = titles[name]
        rejected = [o for o in outcomes if o.action == "rejected"]
        passed = [o for o in outcomes if o.action == "passed"]
        decided = rejected + passed
        mirrored = f"{np.median([o.mirrored for o in decided]):,.0f}" if decided else "—"
        hours = f"{np.median([o.at_s for o in decided]) / 3600:.2f} h" if decided else "—"
        reasons = sorted({r for o in rejected for r in o.reason.split(", ") if r})
        shares = (f"{100 * len(group) / len(outcomes):.0f} %" for group in (rejected, passed))
        rows.append(
            f"| {title} | {'bad' if bad else 'good'} | {rate:g} | {' | '.join(shares)} | {mirrored} | "
            f"{hours} | {', '.join(reasons) or '—'} |"
        )
    runs = len(next(iter(results.values())))
    return "\n".join(
        [
            "### The shadow phase",
            "",
            f"`{command}` ({datetime.now(UTC):%Y-%m-%d}, commit {commit()}): the real `decide()` on "
            f"{runs} simulated shadow phases per cell, with "
            f"`configs/rollout.yaml` and its shadow phase on (duration {format_duration(shadow.duration)}, "
            f"{shadow.min_samples} mirrored requests, share {shadow.share:g}, latency margin "
            f"×{1 + shadow.latency_margin:g}; 15-minute looks). Every live request is answered by the "
            "champion; the candidate answers the mirrored copies (pairs drawn from the real models' "
            "agreement and probability differences, `benchmarks/judge/shadow.py`). *Rejected in shadow* "
            "means no user was ever served by the candidate.",
            "",
            *rows,
            "",
        ]
    )
