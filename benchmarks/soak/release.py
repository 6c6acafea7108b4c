"""The release a soak drives: a candidate that turns bad part-way, stepped up and rolled back by
the product's rollout engine (:func:`mlcanary.wiring.build_engine`, what ``mlcanary release`` and
``mlcanary step`` run), on the soak's timeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from benchmarks.serving.measure import say
from benchmarks.soak.plan import FAILURE_SHARE, STEPS, SoakPlan
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.registry.protocol import NewVersion
from mlcanary.rollout import tags
from mlcanary.rollout.arms import CANDIDATE

if TYPE_CHECKING:
    from mlcanary.config import Settings


_AFTER = {
    "rolled_back": "after the rollback",
    "promoted": "after the promotion",
    "failed": "after the failure",
}


def register_turning_candidate(settings: Settings, champion: str, healthy_calls: int) -> str:
    """Register the champion's model behind :class:`models.faults.FaultyModel`: healthy for its
    first ``healthy_calls`` model calls, then failing ``FAILURE_SHARE`` of them; set ``@candidate``."""
    from mlcanary.training import pip_requirements
    from models.faults import FaultyModel

    registry = registry_from_settings(settings)
    name = settings.model.name
    base = registry.load_model(name, champion)
    reference = registry.load_reference(name, champion)
    info = registry.register(
        name,
        NewVersion(
            model=FaultyModel(base.model, failure_share=FAILURE_SHARE, healthy_calls=healthy_calls),
            features=base.features,
            reference=reference,
            input_example=reference.head(3),
            metrics={},
            params={"base_version": champion, "healthy_calls": str(healthy_calls)},
            tags=tags.tagged({tags.GATE: "manual", tags.NOTE: "soak: turns bad part-way"}),
            run_name=f"soak-candidate-from-v{champion}",
            pip_requirements=pip_requirements(),
        ),
    )
    registry.set_alias(name, CANDIDATE, info.version)
    return info.version


@dataclass(frozen=True)
class TickRecord:
    """One tick of the release (or the start), seconds after the soak's start."""

    t_s: float
    action: str
    traffic: int
    reason: str


@dataclass
class ReleaseLog:
    """What the engine did, and when the candidate's share of traffic changed (monotonic ns)."""

    ticks: list[TickRecord] = field(default_factory=list)
    phases: list[tuple[int, str]] = field(default_factory=list)
    outcome: str = "not started"
    rolled_back_by_hand: bool = False
    errors: list[str] = field(default_factory=list)


def drive_release(
    settings: Settings,
    plan: SoakPlan,
    version: str,
    t0: float,
    poll: Callable[[], None],
) -> ReleaseLog:
    """Start the canary at ``plan.start_at``, tick every ``plan.tick_interval_s`` until the release
    ends, roll back by hand if the engine has not by ``plan.rollback_deadline`` (or by the end of a
    soak too short for the timeline), then wait for the end of the soak. ``poll`` is called about
    every second (the candidate's payload-logger counters)."""
    from mlcanary.wiring import build_engine

    engine = build_engine(settings, runner="soak")
    model = settings.model.name
    log = ReleaseLog(phases=[(time.monotonic_ns(), "champion only")])
    end = t0 + plan.duration_s

    def at(fraction: float) -> float:
        return t0 + fraction * plan.duration_s

    def note(action: str, traffic: int, reason: str) -> None:
        log.ticks.append(TickRecord(time.monotonic() - t0, action, traffic, reason))

    _sleep_until(at(plan.start_at), poll)
    state = engine.start_canary(model, version)
    log.phases.append((time.monotonic_ns(), f"canary {state.traffic} %"))
    note("start", state.traffic, f"canary started at {STEPS[0]} %")
    say(f"canary v{version} at {state.traffic} %")
    next_tick = time.monotonic() + plan.tick_interval_s
    while time.monotonic() < end:
        _sleep_until(min(next_tick, end), poll)
        if time.monotonic() >= end:
            break
        next_tick += plan.tick_interval_s
        if time.monotonic() >= at(plan.rollback_deadline):
            state = engine.rollback(model, "soak: the engine had not rolled back by the deadline")
            log.rolled_back_by_hand = True
            note("rollback (by hand)", 0, state.reason or "")
        else:
            try:
                result = engine.tick(model)
            except Exception as exc:  # a failed tick is retried by the next one, as the monitor does
                log.errors.append(f"{time.monotonic() - t0:.0f} s: {type(exc).__name__}: {exc}")
                continue
            state = result.release
            if result.decision is None:
                continue
            note(result.decision.action, state.traffic, result.decision.reason)
            if result.decision.action == "step_up":
                log.phases.append((time.monotonic_ns(), f"canary {state.traffic} %"))
                say(f"stepped up to {state.traffic} %")
        if state.phase.terminal:
            log.phases.append((time.monotonic_ns(), _AFTER.get(state.phase.value, state.phase.value)))
            say(f"release {state.phase.value}: {state.reason}")
            break
    if not state.phase.terminal:  # a soak too short for the timeline still ends the release
        state = engine.rollback(model, "soak: over before the release ended")
        log.rolled_back_by_hand = True
        note("rollback (by hand)", 0, state.reason or "")
        log.phases.append((time.monotonic_ns(), "after the rollback (by hand)"))
    log.outcome = f"{state.phase.value}: {state.reason}"
    _sleep_until(end, poll)
    return log


def _sleep_until(deadline: float, poll: Callable[[], None]) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        poll()
