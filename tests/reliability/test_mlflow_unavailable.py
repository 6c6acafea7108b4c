"""MLflow stopped during a monitor tick, a promote and a rollback; its backend store on PostgreSQL.

One real ``mlflow server`` for the module, its backend store a database on a real PostgreSQL
(``tests/pg_server.py``), made unavailable by the test at the exact step under test and brought
back: during the tick the server process itself is stopped and started again; during promote and
rollback the TCP link in front of it is cut and restored (``tests/tcp_link.py``: refused connects
and reset connections, what a client sees of a stopped server, without the tens of seconds a restart
of ``mlflow server`` costs on 2 busy cores). The
engine is the real one on our :class:`MlflowRegistry` (retrying by ``mlflow.retry``, here tightened to
well under a second) and MLflow release evidence; the serving side is the in-memory serving backend
(these tests are about the registry) whose hooks stop MLflow mid-action, and scripted traffic.

What each test shows: the registry call fails with a bounded, clear ``RegistryUnavailableError``; the
release keeps a phase that says where it is; nothing is promoted that the registry could not confirm;
the first tick after MLflow is back completes the action. The release evidence MLflow cannot take
(a tick's, a release's outcome) is kept in the inference-log database and written when it is back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from pg_server import EmbeddedPostgres
from tcp_link import TcpLink

from mlcanary.config import Settings, load_settings
from mlcanary.registry.evidence import MlflowEvidence
from mlcanary.registry.mlflow_registry import MlflowRegistry, registry_from_settings
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.rollout.versions import RegistryUnavailableError
from mlcanary.runtime.env import child_env
from mlcanary.runtime.processes import ManagedProcess, start_process, wait_for_http
from mlcanary.telemetry.evidence_outbox import StoreEvidenceOutbox
from mlcanary.testing.fakes import FakeClock, FakeServingBackend, ScriptedMetrics, steady_traffic
from mlcanary.testing.ports import free_ports
from mlcanary.training import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(__import__("sys").executable).parent
# 4 tries, waits 0.2 + 0.4 + 0.5 s: the bound every failing call below must respect.
RETRY = {"mlflow.retry.attempts": 4, "mlflow.retry.first_delay_s": 0.2, "mlflow.retry.max_delay_s": 0.5}
RETRY_WINDOW_S = 1.1
POLICY = RolloutPolicy(
    steps=[10, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="3h",
    tick_interval="5m",
    min_samples_per_arm=100,
)


class MlflowServer:
    """``mlflow server`` on a PostgreSQL backend store; :meth:`stop` and :meth:`start` at will."""

    def __init__(self, store_url: str, state_dir: Path) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self.argv = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            store_url,
            "--default-artifact-root",
            str(state_dir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self.process: ManagedProcess | None = None
        self.starts: list[float] = []

    def start(self) -> None:
        began = time.monotonic()
        self.process = start_process(
            "mlflow",
            self.argv,
            state_dir=self.state_dir,
            log_path=self.state_dir / "mlflow.log",
            env=child_env() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        wait_for_http(f"{self.url}/health", timeout_s=120, process=self.process)
        self.starts.append(time.monotonic() - began)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@pytest.fixture(scope="module")
def mlflow_server(
    postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    store_url = postgres.create_database(f"mlflow_{uuid.uuid4().hex[:8]}")
    assert store_url.startswith("postgresql+psycopg://")
    server = MlflowServer(store_url, tmp_path_factory.mktemp("mlflow-pg"))
    # One try per HTTP request (our retry policy does the retrying); set here, restored after.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def link(mlflow_server: MlflowServer) -> Iterator[TcpLink]:
    """Every client call to MLflow goes through this link."""
    made = TcpLink(mlflow_server.port)
    yield made
    made.close()


@pytest.fixture(scope="module")
def settings(mlflow_server: MlflowServer, link: TcpLink) -> Settings:
    overrides = {
        "state_dir": str(mlflow_server.state_dir / "state"),
        "mlflow.tracking_uri": link.url,
        "model.name": "fraud-pg",
        "model.estimator": "logistic_regression",
        "data.synthetic.rows": 2000,
        "training.reference_rows": 300,
        **RETRY,
    }
    return load_settings("local", config_dir=REPO_ROOT / "configs", env={}, overrides=overrides)


@pytest.fixture(scope="module")
def registry(settings: Settings) -> MlflowRegistry:
    """A version trained and registered through our registry (@champion), and a second one from
    the same files as @candidate."""
    registry = registry_from_settings(settings)
    assert registry.retry.attempts == 4
    assert train(settings, registry).version == "1"
    assert new_version(registry, "fraud-pg") == "2"
    registry.set_alias("fraud-pg", CANDIDATE, "2")
    return registry


class HookedBackend(FakeServingBackend):
    """The in-memory serving backend; ``before[method]`` runs once, just before that step."""

    def __init__(self) -> None:
        super().__init__()
        self.before: dict[str, Callable[[], None]] = {}

    def _enter(self, method: str) -> None:
        hook = self.before.pop(method, None)
        if hook is not None:
            hook()
        super()._enter(method)


def engine_for(registry: MlflowRegistry, backend: FakeServingBackend, clock: FakeClock) -> RolloutEngine:
    return RolloutEngine(
        registry=registry,
        backend=backend,
        metrics=steady_traffic(0.01),
        policy=POLICY,
        clock=clock,
        recorder=MlflowEvidence(registry.client, "fraud-pg-releases", retry=registry.retry),
    )


def ready_to_promote(engine: RolloutEngine, clock: FakeClock, model: str) -> ReleaseState:
    """Tick a fresh release to its last step; the tick after (11 minutes on) promotes it."""
    clock.advance(timedelta(minutes=11))
    assert engine.tick(model).release.traffic == 50
    clock.advance(timedelta(minutes=11))
    result = engine.tick(model)
    assert result.decision is not None
    assert result.decision.action == "hold"
    return result.release


def fails_within_the_retry_window(action: Callable[[], object]) -> RegistryUnavailableError:
    began = time.monotonic()
    with pytest.raises(RegistryUnavailableError) as caught:
        action()
    assert time.monotonic() - began < RETRY_WINDOW_S + 5 * 4  # 4 refused connects, never minutes
    message = str(caught.value)
    assert "is unavailable" in message
    assert "failed 4 times" in message
    assert "last error" in message
    return caught.value


def phase_of(registry: MlflowRegistry, model: str, version: str) -> str | None:
    return registry.get_version(model, version).tag("phase")


def test_mlflow_on_postgres_round_trip_and_stopped_during_a_tick_promotes_nothing(
    mlflow_server: MlflowServer, registry: MlflowRegistry
) -> None:
    assert registry.aliases("fraud-pg") == {CHAMPION: "1", CANDIDATE: "2"}
    registry.set_tags("fraud-pg", "2", {"mlcanary.note": "written to PostgreSQL"})
    assert registry.get_version("fraud-pg", "2").tags["mlcanary.note"] == "written to PostgreSQL"
    assert registry.load_reference("fraud-pg", "1").shape[0] == 300

    clock, backend = FakeClock(), HookedBackend()
    engine = engine_for(registry, backend, clock)
    engine.start_canary("fraud-pg", "2")
    before = ready_to_promote(engine, clock, "fraud-pg")

    # MLflow dies while the tick measures: the judge would promote, but the tick cannot confirm the
    # release is unchanged (nor move an alias), so it acts on nothing.
    metrics = engine.metrics
    assert isinstance(metrics, ScriptedMetrics)
    script = metrics.script

    def dies_while_measuring(release, window_start, now):  # type: ignore[no-untyped-def]
        metrics.script = script
        mlflow_server.stop()
        return script(release, window_start, now)

    metrics.script = dies_while_measuring
    clock.advance(timedelta(minutes=11))
    fails_within_the_retry_window(lambda: engine.tick("fraud-pg"))
    assert backend.served["fraud-pg"] == {"champion": "1", "candidate": "2"}, "served before confirming"

    mlflow_server.start()
    assert len(mlflow_server.starts) == 2
    assert registry.aliases("fraud-pg") == {CHAMPION: "1", CANDIDATE: "2"}
    after = engine.active_release("fraud-pg")
    assert after is not None
    assert replace(after, reason=None) == replace(before, reason=None)

    result = engine.tick("fraud-pg")
    assert result.decision is not None
    assert result.decision.action == "promote"
    assert result.release.phase == Phase.PROMOTED
    assert registry.aliases("fraud-pg") == {CHAMPION: "2"}
    assert backend.served["fraud-pg"] == {"champion": "2", "candidate": None}


def new_version(registry: MlflowRegistry, model: str) -> str:
    """Another version of ``model`` from the champion's files (only the registry entry is new)."""
    champion = registry.version_for_alias(model, CHAMPION)
    assert champion is not None
    made = registry.client.create_model_version(model, source=champion.source, run_id=champion.run_id)
    return str(made.version)


def test_mlflow_unreachable_during_promote_is_completed_by_the_next_tick(
    link: TcpLink, registry: MlflowRegistry
) -> None:
    model = "fraud-pg"
    champion = registry.aliases(model)[CHAMPION]
    version = new_version(registry, model)
    clock, backend = FakeClock(), HookedBackend()
    engine = engine_for(registry, backend, clock)
    engine.start_canary(model, version)

    # Intent recorded, serving promoted, then MLflow is gone before the aliases move.
    backend.before["promote"] = link.cut
    fails_within_the_retry_window(lambda: engine.promote(model, "promoted by hand"))
    assert backend.served[model] == {"champion": version, "candidate": None}

    link.restore()
    assert phase_of(registry, model, version) == Phase.PROMOTING.value
    assert registry.aliases(model) == {CHAMPION: champion, CANDIDATE: version}

    result = engine.tick(model)
    assert result.note == "completed an interrupted promote"
    assert result.release.phase == Phase.PROMOTED
    assert registry.aliases(model) == {CHAMPION: version}
    assert registry.get_version(model, champion).tag("replaced_by") == version


def test_mlflow_unreachable_during_rollback_is_completed_by_the_next_tick(
    link: TcpLink, registry: MlflowRegistry
) -> None:
    model = "fraud-pg"
    champion = registry.aliases(model)[CHAMPION]
    clock, backend = FakeClock(), HookedBackend()
    engine = engine_for(registry, backend, clock)

    # (1) MLflow gone after the intent was recorded and the traffic moved.
    version = new_version(registry, model)
    engine.start_canary(model, version)
    original_set_tags = registry.set_tags

    def stop_after_intent(name, v, values):  # type: ignore[no-untyped-def]
        original_set_tags(name, v, values)
        if values.get("mlcanary.phase") == Phase.ROLLING_BACK.value:
            link.cut()

    registry.set_tags = stop_after_intent  # type: ignore[method-assign]
    try:
        fails_within_the_retry_window(lambda: engine.rollback(model, "bad smell"))
    finally:
        del registry.set_tags
    assert backend.served[model] == {"champion": champion, "candidate": None}
    link.restore()
    assert phase_of(registry, model, version) == Phase.ROLLING_BACK.value
    result = engine.tick(model)
    assert result.note == "completed an interrupted rollback"
    assert result.release.phase == Phase.ROLLED_BACK
    assert registry.aliases(model) == {CHAMPION: champion}
    assert registry.get_version(model, version).tag("rejected") == "bad smell"

    # (2) MLflow gone before the intent could be recorded: the traffic still leaves the candidate
    # at once; the next tick sees the candidate no longer served and rolls the release back.
    version = new_version(registry, model)
    engine.start_canary(model, version)
    backend.before["rollback"] = link.cut
    fails_within_the_retry_window(lambda: engine.rollback(model, "bad smell"))
    assert backend.served[model] == {"champion": champion, "candidate": None}
    link.restore()
    assert phase_of(registry, model, version) == Phase.PROGRESSING.value
    clock.advance(timedelta(minutes=5))
    result = engine.tick(model)
    assert result.release.phase == Phase.ROLLED_BACK, result.release.reason
    assert registry.aliases(model) == {CHAMPION: champion}
    assert "availability" in (registry.get_version(model, version).tag("rejected") or "")


class HookedEvidence(MlflowEvidence):
    """The real MLflow evidence; ``before[method]`` runs once, just before that write."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.before: dict[str, Callable[[], None]] = {}

    def _hook(self, method: str) -> None:
        hook = self.before.pop(method, None)
        if hook is not None:
            hook()

    def record_tick(self, release, measurements, decision) -> None:  # type: ignore[no-untyped-def]
        self._hook("record_tick")
        super().record_tick(release, measurements, decision)

    def finish(self, release: ReleaseState) -> None:
        self._hook("finish")
        super().finish(release)


def test_evidence_written_while_mlflow_is_unreachable_is_kept_and_written_when_it_is_back(
    link: TcpLink, registry: MlflowRegistry, tmp_path: Path
) -> None:
    model = "fraud-pg"
    version = new_version(registry, model)
    clock, backend = FakeClock(), HookedBackend()
    outbox = StoreEvidenceOutbox.from_url(f"sqlite:///{tmp_path / 'inference.db'}")
    evidence = HookedEvidence(registry.client, "fraud-pg-releases", retry=registry.retry, outbox=outbox)
    engine = engine_for(registry, backend, clock)
    engine.recorder = evidence
    release = engine.start_canary(model, version)
    run_id = release.release_run_id
    assert run_id

    # A tick persists its outcome; MLflow is gone before its evidence is written: the tick ends
    # normally (its action stands) and the evidence waits in the inference-log database.
    evidence.before["record_tick"] = link.cut
    clock.advance(timedelta(minutes=11))
    result = engine.tick(model)
    assert result.decision is not None
    assert result.decision.action == "step_up"
    assert len(outbox.pending(model)) == 1
    link.restore()
    assert phase_of(registry, model, version) == Phase.PROGRESSING.value
    assert registry.get_version(model, version).tag("ticks") == "1"
    assert registry.client.get_metric_history(run_id, "traffic.candidate_percent") == []

    # The promote moves the aliases; MLflow is gone again before the run's outcome is written.
    evidence.before["finish"] = link.cut
    assert engine.promote(model, "promoted by hand").phase == Phase.PROMOTED
    assert [json.loads(entry)["op"] for _, entry in outbox.pending(model)] == ["tick", "finish"]
    link.restore()
    assert registry.client.get_run(run_id).info.status == "RUNNING"

    # The release has ended, so no tick of it comes: the next monitor run writes what was kept.
    assert engine.write_pending_evidence() == {model: 2}
    assert outbox.pending(model) == []
    history = registry.client.get_metric_history(run_id, "traffic.candidate_percent")
    assert [(m.step, m.value) for m in history] == [(1, 50.0)]
    run = registry.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlcanary.phase"] == Phase.PROMOTED.value
    files = {f.path for f in registry.client.list_artifacts(run_id, "decisions")}
    assert files == {"decisions/tick-00001.json"}
    assert "outcome.json" in {f.path for f in registry.client.list_artifacts(run_id)}
