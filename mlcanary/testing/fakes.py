"""In-memory fakes of the seams, for tests and dry runs: a registry, a serving backend, a metrics
source and a clock. They keep the same contracts as the real adapters (idempotent alias and traffic
operations, the same errors) so flow and engine tests exercise real decisions without processes.

``fail_on`` lets a test inject a crash: the named method raises :class:`InjectedCrashError` the next
time it is called (once), which is how "crash between promote steps" is tested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from mlcanary.registry.protocol import LoadedModel, NewVersion
from mlcanary.rollout.arms import CHAMPION
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.lease import ReleaseLease
from mlcanary.rollout.measurements import ArmMetrics, Measurements, PairedScores, Percentiles
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.ports import EvidenceRecorder, Notifier
from mlcanary.rollout.serving import ArmStatus, ServingError, ServingStatus
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.stats import MeanSummary
from mlcanary.rollout.tags import release_from_tags
from mlcanary.rollout.versions import ModelNotFoundError, ModelVersionInfo, VersionNotFoundError


class InjectedCrashError(RuntimeError):
    """Raised by a fake where a test asked for a crash."""


class _Crashable:
    def __init__(self) -> None:
        self.crash_points: set[str] = set()
        self.calls: list[str] = []

    def fail_on(self, method: str) -> None:
        """Make the next call of ``method`` raise :class:`InjectedCrashError` (once)."""
        self.crash_points.add(method)

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if method in self.crash_points:
            self.crash_points.discard(method)
            raise InjectedCrashError(f"injected crash in {method}")


@dataclass
class FakeClock:
    """A clock that moves only when told to."""

    current: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> datetime:
        self.current += delta
        return self.current


class InMemoryRegistry(_Crashable):
    """``ModelRegistry`` in memory. ``add_version`` creates versions without training."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, dict[str, ModelVersionInfo]] = {}
        self.alias_map: dict[str, dict[str, str]] = {}
        self.models: dict[tuple[str, str], Any] = {}

    def add_version(self, name: str, model: Any = None, tags: Mapping[str, str] | None = None) -> str:
        versions = self.versions.setdefault(name, {})
        self.alias_map.setdefault(name, {})
        number = str(len(versions) + 1)
        versions[number] = ModelVersionInfo(
            name=name,
            version=number,
            run_id=None,
            source=f"memory://{name}/{number}",
            created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=len(versions)),
            tags=dict(tags or {}),
        )
        self.models[(name, number)] = model
        return number

    def _version(self, name: str, version: str) -> ModelVersionInfo:
        if name not in self.versions:
            raise ModelNotFoundError(f"model {name!r} is not registered")
        if str(version) not in self.versions[name]:
            raise VersionNotFoundError(f"model {name!r} has no version {version!r}")
        info = self.versions[name][str(version)]
        aliases = tuple(sorted(a for a, v in self.alias_map[name].items() if v == info.version))
        return replace(info, aliases=aliases)

    def model_exists(self, name: str) -> bool:
        return name in self.versions

    def list_models(self) -> list[str]:
        return sorted(self.versions)

    def aliases(self, name: str) -> dict[str, str]:
        if name not in self.versions:
            raise ModelNotFoundError(f"model {name!r} is not registered")
        return dict(self.alias_map[name])

    def get_version(self, name: str, version: str) -> ModelVersionInfo:
        return self._version(name, version)

    def version_for_alias(self, name: str, alias: str) -> ModelVersionInfo | None:
        version = self.aliases(name).get(alias)
        return None if version is None else self._version(name, version)

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        self.aliases(name)
        return [self._version(name, v) for v in sorted(self.versions[name], key=int)]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._enter("set_alias")
        self._version(name, version)
        self.alias_map[name][alias] = str(version)

    def delete_alias(self, name: str, alias: str) -> None:
        self._enter("delete_alias")
        self.aliases(name).get(alias)
        self.alias_map[name].pop(alias, None)

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        self._enter("set_tags")
        info = self._version(name, version)
        self.versions[name][info.version] = replace(
            self.versions[name][info.version], tags={**info.tags, **{k: str(v) for k, v in tags.items()}}
        )

    def register(self, name: str, new: NewVersion) -> ModelVersionInfo:
        number = self.add_version(name, new.model, new.tags)
        return self._version(name, number)

    def load_model(self, name: str, version: str) -> LoadedModel:
        self._version(name, version)
        return LoadedModel(
            name=name, version=str(version), model=self.models[(name, str(version))], features=()
        )

    def load_reference(self, name: str, version: str) -> pd.DataFrame:
        self._version(name, version)
        return pd.DataFrame()


class FakeServingBackend(_Crashable):
    """``ServingBackend`` that records what it was told and reports it back as observed."""

    def __init__(self) -> None:
        super().__init__()
        self.served: dict[str, dict[str, str | None]] = {}
        self.weights: dict[str, int] = {}
        self.shadows: dict[str, float] = {}
        self.candidate_ready = True

    def _status(self, model: str) -> ServingStatus:
        arms = self.served.get(model)
        if not arms:
            return ServingStatus(model=model)
        candidate = arms.get("candidate")
        percent = self.weights.get(model, 0)
        return ServingStatus(
            model=model,
            arms={
                "champion": ArmStatus("champion", arms.get("champion"), True),
                "candidate": ArmStatus(
                    "candidate", candidate, candidate is not None and self.candidate_ready
                ),
            },
            traffic={"champion": 100 - percent, "candidate": percent},
            endpoint=f"memory://{model}",
            shadow=self.shadows.get(model, 0.0),
        )

    def deploy(
        self, model: str, champion: str, candidate: str | None = None, candidate_percent: int = 0
    ) -> ServingStatus:
        self._enter("deploy")
        self.served[model] = {"champion": champion, "candidate": candidate}
        self.weights[model] = candidate_percent if candidate else 0
        self.shadows[model] = 0.0
        return self._status(model)

    def set_traffic(self, model: str, candidate_percent: int) -> ServingStatus:
        self._enter("set_traffic")
        if candidate_percent and not (self.served.get(model) or {}).get("candidate"):
            raise ServingError(f"{model}: no candidate is serving")
        self.weights[model] = candidate_percent
        self.shadows[model] = 0.0
        return self._status(model)

    def set_shadow(self, model: str, share: float) -> ServingStatus:
        self._enter("set_shadow")
        if not (self.served.get(model) or {}).get("candidate"):
            raise ServingError(f"{model}: no candidate is serving")
        if not 0.0 < share <= 1.0:
            raise ServingError(f"shadow share must be within (0, 1], got {share}")
        self.weights[model] = 0
        self.shadows[model] = share
        return self._status(model)

    def promote(self, model: str) -> ServingStatus:
        self._enter("promote")
        arms = self.served.get(model) or {}
        if arms.get("candidate"):
            self.served[model] = {"champion": arms["candidate"], "candidate": None}
        self.weights[model] = 0
        self.shadows[model] = 0.0
        return self._status(model)

    def rollback(self, model: str) -> ServingStatus:
        self._enter("rollback")
        if model in self.served:
            self.served[model]["candidate"] = None
        self.weights[model] = 0
        self.shadows[model] = 0.0
        return self._status(model)

    def status(self, model: str) -> ServingStatus:
        return self._status(model)


class ScriptedMetrics:
    """``MetricsSource`` whose measurements come from a function of the release and the time."""

    def __init__(self, script: Callable[[ReleaseState, datetime, datetime], Measurements]) -> None:
        self.script = script
        self.calls = 0

    def measure(self, release: ReleaseState, *, window_start: datetime, now: datetime) -> Measurements:
        self.calls += 1
        return self.script(release, window_start, now)


def steady_arm(requests: int, error_rate: float, latency_ms: float = 20.0) -> ArmMetrics:
    """Cumulative metrics of one arm that served ``requests`` at a steady error rate and latency
    (5 % slower than the champion's P95, 4 % positive predictions, a tenth in the last window)."""
    return ArmMetrics(
        version="x",
        requests=requests,
        errors=round(requests * error_rate),
        log_latency=MeanSummary(n=requests, mean=math.log(latency_ms), variance=0.05, log_scale=True),
        latency_ms=Percentiles(latency_ms, latency_ms * 1.4, latency_ms * 1.8),
        slow=round(requests * 0.05),
        predictions=requests,
        positives=round(requests * 0.04),
        window_requests=requests // 10,
        window_errors=0,
    )


def steady_pairs(mirrored: int, *, agreement: float = 0.995, shift: float = 0.0) -> PairedScores:
    """Pairs of a shadow phase: ``mirrored`` requests answered by both models, ``agreement`` of
    them with the same label, the candidate's probabilities ``shift`` above the champion's."""
    return PairedScores(
        live=mirrored,
        mirrored=mirrored,
        pairs=mirrored,
        agree=round(mirrored * agreement),
        probability_diff=MeanSummary(n=mirrored, mean=shift, variance=0.02**2) if mirrored else None,
        mean_abs_dp=abs(shift) + 0.01,
    )


def steady_traffic(
    candidate_error_rate: float,
    *,
    rps: float = 20.0,
    champion_error_rate: float = 0.01,
    shadow_share: float = 1.0,
    shadow_agreement: float = 0.995,
) -> ScriptedMetrics:
    """Metrics of steady traffic at ``rps`` since the release began, split by its current weight;
    in the shadow phase ``shadow_share`` of it mirrored to the candidate, answered with
    ``shadow_agreement`` (see :func:`steady_pairs`)."""

    def script(release: ReleaseState, window_start: datetime, now: datetime) -> Measurements:
        total = int((now - release.started_at).total_seconds() * rps)
        if release.phase == Phase.SHADOWING:
            mirrored = int(total * shadow_share)
            pairs = replace(steady_pairs(mirrored, agreement=shadow_agreement), live=total)
            return Measurements(
                start=release.started_at,
                end=now,
                window_start=window_start,
                champion=steady_arm(total, champion_error_rate),
                candidate=steady_arm(mirrored, candidate_error_rate),
                agreement=pairs.agreement,
                paired=pairs,
            )
        candidate = int(total * release.traffic / 100)
        return Measurements(
            start=release.started_at,
            end=now,
            window_start=window_start,
            champion=steady_arm(total - candidate, champion_error_rate),
            candidate=steady_arm(candidate, candidate_error_rate),
        )

    return ScriptedMetrics(script)


class FakeWorld:
    """An engine's surroundings in memory, for tests and dry runs.

    ``model`` is registered with versions 1 (``@champion``) and 2; a serving backend, a clock and
    steady traffic (``steady_traffic(candidate_error_rate)``, replaceable through :attr:`metrics`)
    stand beside it, and no lease (evidence recorder) unless :attr:`lease` (:attr:`recorder`) is
    set. :meth:`make_engine` builds a :class:`RolloutEngine` on the current attributes each time it
    is called; it ignores its argument, so it can stand in for a factory that takes
    settings (``flows.canary.engine_for``).
    """

    def __init__(
        self,
        policy: RolloutPolicy,
        *,
        model: str = "fraud",
        candidate_error_rate: float = 0.01,
        notifier: Notifier | None = None,
    ) -> None:
        self.policy = policy
        self.model = model
        self.registry = InMemoryRegistry()
        self.registry.add_version(model)
        self.registry.add_version(model)
        self.registry.set_alias(model, CHAMPION, "1")
        self.backend = FakeServingBackend()
        self.clock = FakeClock()
        self.metrics = steady_traffic(candidate_error_rate)
        self.notifier = notifier
        self.lease: ReleaseLease | None = None
        self.recorder: EvidenceRecorder | None = None

    def make_engine(self, _settings: object = None) -> RolloutEngine:
        return RolloutEngine(
            registry=self.registry,
            backend=self.backend,
            metrics=self.metrics,
            policy=self.policy,
            clock=self.clock,
            notifier=self.notifier,
            lease=self.lease,
            recorder=self.recorder,
        )

    def release(self, version: str = "2") -> ReleaseState | None:
        """The release state recorded on ``version`` (None if it never took part in one)."""
        tags = dict(self.registry.get_version(self.model, version).tags)
        return release_from_tags(self.model, version, tags)
