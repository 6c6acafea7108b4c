"""A crash at every step of start, promote and roll back, on the real local stack (issue 14, item 7).

Real Envoy, real model-server processes, the real MLflow SQLite registry. A crash is injected by
wrapping the real adapters so that a chosen call — the k-th call of a registry write (``set_tags``,
``set_alias``, ``delete_alias``) or of a serving step inside the local backend (``set_weights`` on
Envoy, ``start`` / ``retire`` of a model server) — raises before it runs: the action stops there,
exactly as a process killed at that point would leave the stores. Then a fresh engine (new registry
client, new backend, as a new process would build them) runs the next monitor tick, and the release
must be finished and the registry and serving must agree. One stack serves every case; each case
resets the release (tags, aliases) and the two versions take turns as the candidate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from stack_helpers import LocalStack, local_stack, stack_settings

from mlcanary.registry.mlflow_registry import MlflowRegistry, registry_from_settings
from mlcanary.rollout import tags
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.ports import SystemClock
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.serving.local.backend import LocalBackend
from mlcanary.training import train
from mlcanary.wiring import metrics_source

pytestmark = [pytest.mark.integration, pytest.mark.long]

POLICY = {
    "rollout.steps": [50],
    "rollout.min_bake_per_step": "1h",
    "rollout.min_duration": "1h",
    "rollout.max_duration": "2h",
    "rollout.tick_interval": "1s",
    "rollout.min_samples_per_arm": 100_000,  # every judged tick holds: only resumption acts
    "rollout.checks": {
        "prediction_drift": {"enabled": False},
        "input_drift": {"enabled": False},
        "latency_p95": {"enabled": False},
    },
    "telemetry.drift_reports": False,
}
REGISTRY_WRITES = frozenset({"set_tags", "set_alias", "delete_alias"})
SERVING_STEPS = {
    "front_door": frozenset({"set_weights", "persist"}),
    "servers": frozenset({"start", "retire"}),
}
RELEASE_TAGS = [
    tags.PHASE,
    tags.CHAMPION_VERSION,
    tags.STEP_INDEX,
    tags.TRAFFIC,
    tags.STARTED_AT,
    tags.STEP_STARTED_AT,
    tags.TICKS,
    tags.RELEASE_RUN_ID,
    tags.REASON,
    tags.APPROVAL_REQUESTED_AT,
    tags.LAST_DECISION,
    tags.REJECTED,
]


class InjectedCrashError(RuntimeError):
    """The process "dies" here."""


@dataclass
class CrashPlan:
    """Raise before the ``occurrence``-th call of ``method`` (counted over every wrapped object)."""

    method: str
    occurrence: int
    calls: list[str] = field(default_factory=list)
    fired: bool = False

    def before(self, method: str) -> None:
        self.calls.append(method)
        if not self.fired and method == self.method and self.calls.count(method) == self.occurrence:
            self.fired = True
            raise InjectedCrashError(f"crash before {method} #{self.occurrence}")


class Crashing:
    """The real object, with ``methods`` going through the plan first."""

    def __init__(self, inner: Any, plan: CrashPlan, methods: frozenset[str]) -> None:
        self._inner, self._plan, self._methods = inner, plan, methods

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._methods:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._plan.before(name)
            return attribute(*args, **kwargs)

        return call


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_state: Path) -> Iterator[LocalStack]:
    settings = stack_settings(tmp_path_factory.mktemp("crash"), mlflow_dir=mlflow_state, **POLICY)
    with local_stack(settings, candidate=False) as running:
        second = train(settings, registry_from_settings(settings))
        assert second.alias == CANDIDATE
        yield running


def engine(stack: LocalStack, plan: CrashPlan | None = None) -> RolloutEngine:
    """An engine as a new process builds it (new clients); with ``plan``, its adapters crash."""
    settings = stack.settings
    registry: Any = registry_from_settings(settings)
    backend = LocalBackend(settings)
    metrics = metrics_source(settings, registry, None, backend)
    if plan is not None:
        registry = Crashing(registry, plan, REGISTRY_WRITES)
        backend.front_door = Crashing(backend.front_door, plan, SERVING_STEPS["front_door"])  # type: ignore[assignment]
        backend.servers = Crashing(backend.servers, plan, SERVING_STEPS["servers"])  # type: ignore[assignment]
    return RolloutEngine(
        registry=registry, backend=backend, metrics=metrics, policy=settings.rollout, clock=SystemClock()
    )


def reset(stack: LocalStack) -> tuple[str, str]:
    """A clean slate: the version not serving as champion is ``@candidate`` with no release tags."""
    registry = registry_from_settings(stack.settings)
    model = stack.model
    champion = registry.aliases(model)[CHAMPION]
    candidate = next(v.version for v in registry.list_versions(model) if v.version != champion)
    for key in RELEASE_TAGS:
        if registry.get_version(model, candidate).tag(key) is not None:
            registry.client.delete_model_version_tag(model, candidate, tags.tag_name(key))
    registry.set_alias(model, CANDIDATE, candidate)
    return champion, candidate


def release_of(registry: MlflowRegistry, model: str, version: str) -> ReleaseState:
    state = tags.release_from_tags(model, version, registry.get_version(model, version).tags)
    assert state is not None
    return state


def assert_registry_and_serving_agree(
    stack: LocalStack, champion: str, candidate: str | None, percent: int
) -> None:
    registry = registry_from_settings(stack.settings)
    expected_aliases = {CHAMPION: champion} | ({CANDIDATE: candidate} if candidate else {})
    assert registry.aliases(stack.model) == expected_aliases
    observed = LocalBackend(stack.settings).status(stack.model)
    assert observed.traffic == {"champion": 100 - percent, "candidate": percent}, observed.detail
    assert observed.arms["champion"].ready
    assert observed.arms["champion"].version == champion
    if candidate is None:
        assert not observed.arms["candidate"].ready, "the candidate server was not stopped"
    else:
        assert observed.arms["candidate"].ready
        assert observed.arms["candidate"].version == candidate


# The step a crash interrupts, named by the call it comes before (see the module docstring).
# Each kind of step the brief names (tags written, traffic moved, server stopped, alias moved), once
# per action; every case costs at least one model-server start, so the list is kept to these.
START = [
    ("set_tags", 1, "@candidate set, no release tag written"),
    ("set_weights", 1, "release tags written, nothing served yet"),
    ("set_tags", 2, "candidate serving and traffic moved, phase not written"),
]
PROMOTE = [
    ("start", 1, "promoting intent written, all traffic moved to the candidate arm"),
    (
        "set_alias",
        1,
        "champion restarted on the candidate's version, candidate server stopped, alias not moved",
    ),
    ("delete_alias", 1, "@champion moved, @candidate not removed"),
]
ROLLBACK = [
    ("retire", 1, "traffic moved back to the champion, candidate server up"),
    ("set_tags", 1, "candidate server stopped, intent not written"),
    ("set_tags", 2, "rolling-back intent written and @candidate removed, not tagged rejected"),
]


@pytest.mark.parametrize(("method", "occurrence", "step"), START, ids=[s for *_, s in START])
def test_a_start_crashed_at_any_step_is_finished_by_the_next_tick(
    stack: LocalStack, method: str, occurrence: int, step: str
) -> None:
    champion, candidate = reset(stack)
    engine(stack).backend.deploy(stack.model, champion, None, 0)  # no candidate server yet
    # As `mlcanary release` does: the start sets @candidate itself before writing the release.
    registry_from_settings(stack.settings).delete_alias(stack.model, CANDIDATE)
    plan = CrashPlan(method, occurrence)
    with pytest.raises(InjectedCrashError):
        engine(stack, plan).start_canary(stack.model, candidate)
    assert plan.fired, plan.calls
    assert plan.calls[0] == "set_alias", plan.calls

    result = engine(stack).tick(stack.model)
    assert result.release.phase == Phase.PROGRESSING, (step, result.note)
    assert release_of(registry_from_settings(stack.settings), stack.model, candidate).traffic == 50
    assert_registry_and_serving_agree(stack, champion, candidate, 50)


@pytest.mark.parametrize(("method", "occurrence", "step"), PROMOTE, ids=[s for *_, s in PROMOTE])
def test_a_promote_crashed_at_any_step_is_finished_by_the_next_tick(
    stack: LocalStack, method: str, occurrence: int, step: str
) -> None:
    champion, candidate = reset(stack)
    assert engine(stack).start_canary(stack.model, candidate).phase == Phase.PROGRESSING
    plan = CrashPlan(method, occurrence)
    with pytest.raises(InjectedCrashError):
        engine(stack, plan).promote(stack.model, "promoted by hand")
    assert plan.fired, plan.calls

    result = engine(stack).tick(stack.model)
    assert result.release.phase == Phase.PROMOTED, (step, result.note)
    registry = registry_from_settings(stack.settings)
    assert release_of(registry, stack.model, candidate).phase == Phase.PROMOTED
    assert registry.get_version(stack.model, champion).tag(tags.REPLACED_BY) == candidate
    assert_registry_and_serving_agree(stack, candidate, None, 0)


@pytest.mark.parametrize(("method", "occurrence", "step"), ROLLBACK, ids=[s for *_, s in ROLLBACK])
def test_a_rollback_crashed_at_any_step_is_finished_by_the_next_tick(
    stack: LocalStack, method: str, occurrence: int, step: str
) -> None:
    champion, candidate = reset(stack)
    assert engine(stack).start_canary(stack.model, candidate).phase == Phase.PROGRESSING
    plan = CrashPlan(method, occurrence)
    with pytest.raises(InjectedCrashError):
        engine(stack, plan).rollback(stack.model, "rolled back by hand")
    assert plan.fired, plan.calls

    result = engine(stack).tick(stack.model)
    assert result.release.phase == Phase.ROLLED_BACK, (step, result.note)
    registry = registry_from_settings(stack.settings)
    assert release_of(registry, stack.model, candidate).phase == Phase.ROLLED_BACK
    assert registry.get_version(stack.model, candidate).tag(tags.REJECTED)
    assert_registry_and_serving_agree(stack, champion, None, 0)
