"""The real judge on a simulated stream: ``decide()`` with a real policy, look by look, as the monitor
runs it, with the engine's state changes (step up, promote, roll back) applied between looks.

At each look the cumulative counts since the release started become the :class:`Measurements` the
inference-log metrics source would return: requests, 5xx, the log-latency summary, requests slower
than the champion's P95 (the true one: the store uses the champion's empirical P95 over the window),
positive predictions, labelled outcomes of requests older than the policy's label delay, the last
look's window for bursts, paired agreement re-scored on at most ``drift_max_rows`` logged inputs per
arm, and a ready candidate. The Evidently drift checks are advisory in the policies benchmarked here
(they cannot change a decision), so they are left unmeasured.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from benchmarks.judge.streams import Stream, simulate
from benchmarks.judge.truth import Scenario
from mlcanary.rollout.decide import decide
from mlcanary.rollout.measurements import Agreement, ArmMetrics, LabelOutcomes, Measurements, Percentiles
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.stats import MeanSummary

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAIRED_ROWS = 2_000
"""Logged inputs per arm re-scored for paired agreement (``telemetry.drift_max_rows``)."""


@dataclass(frozen=True)
class Cadence:
    """How often the judge looks and with which policy: ``dt`` is the simulation's bucket (the
    baselines' finest interval), ``look_s`` the monitor's tick, ``horizon_s`` how long a release
    may run (the policy's ``max_duration`` plus one look)."""

    name: str
    policy: RolloutPolicy
    dt: float

    @property
    def look_s(self) -> float:
        return self.policy.tick_interval.total_seconds()

    @property
    def horizon_s(self) -> float:
        return self.policy.max_duration.total_seconds() + self.look_s

    @property
    def buckets(self) -> int:
        return round(self.horizon_s / self.dt)


@dataclass(frozen=True)
class Outcome:
    """How one simulated release ended: ``promote``, ``rollback`` or ``undecided``; when (seconds
    since the start), after how many canary requests, why (the failing checks, or the rule), and how
    many looks after both arms first reached the sample floor (1 = that very look)."""

    action: str
    at_s: float
    canary_requests: int
    reason: str
    looks_after_floor: int | None


_FIELDS = ("requests", "errors", "log_sum", "log_sumsq", "slow", "positives")


class _Cumulative:
    """Running sums of the effective stream (which switches share when the release steps up)."""

    def __init__(self, stream: Stream) -> None:
        self.arms = {
            arm: {f: getattr(getattr(stream, arm), f).astype(float).copy() for f in (*_FIELDS, "cells")}
            for arm in ("champion", "candidate")
        }
        self._sums()

    def _sums(self) -> None:
        self.cum = {
            arm: {f: np.cumsum(a, axis=0) for f, a in fields.items()} for arm, fields in self.arms.items()
        }

    def switch(self, stream: Stream, from_bucket: int) -> None:
        for arm in ("champion", "candidate"):
            source = getattr(stream, arm)
            for f in (*_FIELDS, "cells"):
                self.arms[arm][f][from_bucket:] = getattr(source, f)[from_bucket:]
        self._sums()

    def total(self, arm: str, field: str, end: int) -> np.ndarray:
        """Sum over buckets [0, end)."""
        if end <= 0:
            return np.zeros(4) if field == "cells" else np.zeros(())
        return self.cum[arm][field][end - 1]


def _arm_metrics(
    scenario_arm: object, cum: _Cumulative, arm: str, end: int, previous: int, label_end: int
) -> ArmMetrics:
    n = int(cum.total(arm, "requests", end))
    errors = int(cum.total(arm, "errors", end))
    latency = scenario_arm.latency  # type: ignore[attr-defined]
    tp, fp, fn, tn = (int(x) for x in cum.total(arm, "cells", label_end))
    window = n - int(cum.total(arm, "requests", previous))
    return ArmMetrics(
        version=arm,
        requests=n,
        errors=errors,
        log_latency=MeanSummary.from_sums(
            n,
            float(cum.total(arm, "log_sum", end)),
            max(float(cum.total(arm, "log_sumsq", end)), 0.0),
            log_scale=True,
        )
        if n > 1
        else None,
        latency_ms=Percentiles(*latency.percentiles()) if n else None,
        slow=int(cum.total(arm, "slow", end)),
        predictions=n - errors,
        positives=int(cum.total(arm, "positives", end)),
        labels=LabelOutcomes(true_positives=tp, false_positives=fp, false_negatives=fn, true_negatives=tn),
        window_requests=window,
        window_errors=errors - int(cum.total(arm, "errors", previous)),
    )


def run(scenario: Scenario, cadence: Cadence, canary_rps: float, seed: int) -> Outcome:
    """One release of ``scenario`` judged by ``decide()`` under ``cadence`` (see the module docstring).

    ``canary_rps`` is the candidate's rate at the first step; the total rate stays constant, so a
    step up raises the candidate's share (and rate) as the real split does.
    """
    policy = cadence.policy
    steps = policy.steps
    total_rps = canary_rps * 100 / steps[0]
    streams: dict[int, Stream] = {}

    def stream_at(percent: int) -> Stream:
        if percent not in streams:
            streams[percent] = simulate(
                scenario,
                total_rps=total_rps,
                candidate_share=percent / 100,
                dt=cadence.dt,
                buckets=cadence.buckets,
                horizon_s=cadence.horizon_s,
                seed=seed * 1000 + percent,
            )
        return streams[percent]

    cum = _Cumulative(stream_at(steps[0]))
    rng = np.random.default_rng(seed * 1000 + 999)
    state = ReleaseState(
        model="m",
        candidate_version="candidate",
        champion_version="champion",
        phase=Phase.PROGRESSING,
        step_index=0,
        traffic=steps[0],
        started_at=T0,
        step_started_at=T0,
    )
    per_look = round(cadence.look_s / cadence.dt)
    delay_buckets = int(policy.labels.delay.total_seconds() // cadence.dt)
    floor_look: int | None = None
    previous = 0
    for look, end in enumerate(range(per_look, cadence.buckets + 1, per_look), start=1):
        now = T0 + timedelta(seconds=end * cadence.dt)
        label_end = max(end - delay_buckets, 0)
        champion = _arm_metrics(scenario.champion, cum, "champion", end, previous, label_end)
        candidate = _arm_metrics(scenario.candidate, cum, "candidate", end, previous, label_end)
        progress = end * cadence.dt / cadence.horizon_s
        paired = min(champion.predictions, PAIRED_ROWS) + min(candidate.predictions, PAIRED_ROWS)
        agreement = Agreement(
            n=paired, agree=int(rng.binomial(paired, scenario.at(progress)[2])), mean_abs_dp=0.0
        )
        measurements = Measurements(
            start=T0,
            end=now,
            window_start=T0 + timedelta(seconds=previous * cadence.dt),
            champion=champion,
            candidate=candidate,
            agreement=agreement if paired else None,
            candidate_ready=True,
            label_cutoff=now - policy.labels.delay,
        )
        if floor_look is None and min(champion.requests, candidate.requests) >= policy.min_samples_per_arm:
            floor_look = look
        decision = decide(policy, state, measurements, now)
        previous = end
        after = None if floor_look is None else look - floor_look + 1
        if decision.action in ("promote", "rollback"):
            failing = [c.name for c in decision.checks if c.verdict == "fail" and not c.advisory]
            why = ", ".join(failing) if failing else decision.reason.split(":")[0]
            return Outcome(decision.action, end * cadence.dt, candidate.requests, why, after)
        if decision.action == "step_up":
            state = ReleaseState(
                **{
                    **state.__dict__,
                    "step_index": state.step_index + 1,
                    "traffic": decision.traffic,
                    "step_started_at": now,
                }
            )
            cum.switch(stream_at(decision.traffic), end)
    return Outcome(
        "undecided", cadence.horizon_s, int(cum.total("candidate", "requests", cadence.buckets)), "", None
    )
