"""``mlcanary status`` reads the registry without MLflow's client, and says exactly what it said with it.

One real ``mlflow server`` on a SQLite file for the module, filled through ``MlflowClient``
(versions with training, release and decision tags, an empty tag value, a deleted version, a run,
aliases, a second model). Each reader (SQLAlchemy over the file, REST against the server) must
return what :class:`MlflowRegistry` returns on the same file, call by call, error by error;
``status`` (text and ``--json``) must print the same through each; and a fresh interpreter running
``status`` must not load MLflow, pandas, scikit-learn or Evidently. The SQL reader is compared the
same way on MLflow's store in a real PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pg_server import EmbeddedPostgres
from typer.testing import CliRunner

from mlcanary.cli.main import app
from mlcanary.config import Settings, load_settings
from mlcanary.registry import read_only
from mlcanary.registry.mlflow_registry import MlflowRegistry
from mlcanary.registry.read_only import ReadOnlyRegistry, RegistryConnectionError, reader_kind
from mlcanary.registry.rest_reader import RestRegistryReader
from mlcanary.registry.retry import RetryPolicy, call_with_retry, is_transient
from mlcanary.registry.sql_reader import SqlRegistryReader
from mlcanary.rollout import tags
from mlcanary.rollout.state import CheckResult, Decision, Phase, ReleaseState
from mlcanary.rollout.status import read_status
from mlcanary.rollout.versions import ModelNotFoundError, RegistryUnavailableError, VersionNotFoundError
from mlcanary.runtime.env import child_env
from mlcanary.runtime.processes import ManagedProcess, start_process, wait_for_http
from mlcanary.testing.ports import free_ports

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "fraud-readers"
OTHER = "other-model"
HEAVY = ("mlflow", "pandas", "sklearn", "evidently")


@dataclass(frozen=True)
class Store:
    """The module's MLflow store: its SQLite URI, a real server on it, and its state directory."""

    sqlite_uri: str
    server_url: str
    state_dir: Path


def _fill(client: MlflowClient) -> None:
    experiment = client.create_experiment("readers")
    run_id = client.create_run(experiment).info.run_id
    client.create_registered_model(MODEL)
    client.create_registered_model(OTHER)
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    release = ReleaseState(
        model=MODEL,
        candidate_version="3",
        champion_version="1",
        phase=Phase.PROGRESSING,
        step_index=1,
        traffic=20,
        started_at=started,
        step_started_at=started,
        ticks=4,
    )
    check = CheckResult(
        name="brier_score",
        verdict="inconclusive",
        critical=False,
        advisory=False,
        blocking=True,
        value=None,
        baseline=None,
        threshold="<= +0.01",
        test="none",
        n_champion=10,
        n_candidate=3,
        detail="no data: the model returns no probability",
    )
    decision = Decision(action="hold", reason="bake time", checks=(check,), traffic=20, at=started)
    versions: list[dict[str, str]] = [
        tags.tagged({tags.PRIMARY_METRIC: "roc_auc", tags.metric_key("roc_auc"): "0.91", tags.GATE: "passed"})
        | tags.tagged({tags.REFERENCE_ARTIFACT: "reference/reference.parquet"}),
        {"note": "deleted below"},
        tags.release_tags(release) | tags.decision_tag(decision) | {"empty": ""},
        tags.tagged({tags.REJECTED: "a worse roc_auc"}),
    ]
    for number, version_tags in enumerate(versions, start=1):
        client.create_model_version(
            MODEL,
            source=f"runs:/{run_id}/model" if number == 1 else f"s3://bucket/model-{number}",
            run_id=run_id if number == 1 else None,
            tags=version_tags,
        )
    client.create_model_version(OTHER, source="s3://bucket/other", tags={"x": "y"})
    client.delete_model_version(MODEL, "2")
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "candidate", "3")
    client.set_registered_model_alias(OTHER, "champion", "1")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    state_dir = tmp_path_factory.mktemp("readers")
    sqlite_uri = f"sqlite:///{state_dir / 'mlflow.db'}"
    port = free_ports(1)[0]
    process: ManagedProcess = start_process(
        "mlflow",
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            sqlite_uri,
            "--default-artifact-root",
            str(state_dir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        state_dir=state_dir,
        log_path=state_dir / "mlflow.log",
        env=child_env() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", timeout_s=120, process=process)
        # Filled through the server: the store is created (and migrated) once, by it.
        _fill(MlflowClient(tracking_uri=url, registry_uri=url))
        yield Store(sqlite_uri, url, state_dir)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def reference(store: Store) -> MlflowRegistry:
    """The registry through MLflow's own client: what every reader must return."""
    return MlflowRegistry(store.sqlite_uri)


@pytest.fixture(params=["sql", "rest"])
def reader(request: pytest.FixtureRequest, store: Store) -> Iterator[ReadOnlyRegistry]:
    made: ReadOnlyRegistry
    if request.param == "sql":
        made = SqlRegistryReader(store.sqlite_uri)
    else:
        made = RestRegistryReader(store.server_url, env={})
    with made:
        yield made


def test_each_reader_returns_what_mlflows_client_returns(
    reader: ReadOnlyRegistry, reference: MlflowRegistry
) -> None:
    for name in (MODEL, OTHER):
        assert reader.aliases(name) == reference.aliases(name)
        assert reader.list_versions(name) == reference.list_versions(name)
        assert reader.model_exists(name) is True
        for alias in ("champion", "candidate", "nothing"):
            assert reader.version_for_alias(name, alias) == reference.version_for_alias(name, alias)
    listed = reader.list_versions(MODEL)
    assert [v.version for v in listed] == ["1", "3", "4"]  # the deleted version is not listed
    assert listed[0].run_id is not None
    assert listed[1].run_id is None
    assert listed[1].tags["empty"] == ""
    for version in ("1", "3", "4"):
        assert reader.get_version(MODEL, version) == reference.get_version(MODEL, version)


def _error(call: Callable[[], object]) -> Exception:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_each_reader_fails_as_mlflows_client_does(
    reader: ReadOnlyRegistry, reference: MlflowRegistry
) -> None:
    assert reader.model_exists("no-such-model") is reference.model_exists("no-such-model") is False
    ours, theirs = (
        _error(lambda: reader.aliases("no-such-model")),
        _error(lambda: reference.aliases("no-such-model")),
    )
    assert isinstance(ours, ModelNotFoundError)
    assert isinstance(theirs, ModelNotFoundError)
    assert str(ours) == str(theirs) == "model 'no-such-model' is not registered"
    for missing in ("2", "9"):  # deleted, never created
        ours, theirs = (
            _error(lambda v=missing: reader.get_version(MODEL, v)),
            _error(lambda v=missing: reference.get_version(MODEL, v)),
        )
        assert isinstance(ours, VersionNotFoundError)
        assert isinstance(theirs, VersionNotFoundError)
        assert str(ours) == str(theirs)


def test_status_reads_the_same_through_each_reader(
    reader: ReadOnlyRegistry, reference: MlflowRegistry
) -> None:
    ours = read_status(reader, MODEL).model_dump()
    assert ours == read_status(reference, MODEL).model_dump()
    assert ours["phase"] == "progressing"
    assert ours["champion_version"] == "1"
    assert ours["candidate_version"] == "3"
    assert ours["last_decision"]["action"] == "hold"
    assert ours["no_data"] == {"brier_score": "the model returns no probability"}


def _settings_env(store: Store, uri: str) -> dict[str, str]:
    return {
        "MLCANARY_STATE_DIR": str(store.state_dir / "state"),
        "MLCANARY_MLFLOW__TRACKING_URI": uri,
        "MLCANARY_MLFLOW__RETRY__ATTEMPTS": "1",
    }


@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_the_status_command_prints_what_it_printed_with_mlflows_client(
    store: Store, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = store.sqlite_uri if where == "sqlite" else store.server_url
    for key, value in _settings_env(store, uri).items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    outputs = {}
    for kind in ("mlflow", reader_kind(uri, {})):
        with monkeypatch.context() as patch:
            patch.setattr(read_only, "reader_kind", lambda *_args, chosen=kind, **_kw: chosen)
            text = runner.invoke(app, ["status", MODEL])
            as_json = runner.invoke(app, ["status", MODEL, "--json"])
            missing = runner.invoke(app, ["status", "no-such-model"])
        assert text.exit_code == 0, text.output
        assert as_json.exit_code == 0, as_json.output
        assert missing.exit_code == 1
        outputs[kind] = (text.output, json.loads(as_json.stdout), missing.output)
    assert set(outputs) == {"mlflow", "sql" if where == "sqlite" else "rest"}
    first, second = outputs.values()
    assert first == second
    assert "champion: v1  candidate: v3  phase: progressing" in first[0]


STATUS_PROBE = """
import json, sys
from typer.testing import CliRunner
from mlcanary.cli.main import app
result = CliRunner().invoke(app, ["status", sys.argv[1], "--json"])
print(json.dumps({"exit": result.exit_code, "output": result.output, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_status_loads_neither_mlflow_nor_pandas(store: Store, reference: MlflowRegistry, where: str) -> None:
    uri = store.sqlite_uri if where == "sqlite" else store.server_url
    env = child_env() | _settings_env(store, uri)
    done = subprocess.run(
        [sys.executable, "-c", STATUS_PROBE, MODEL],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
        cwd=store.state_dir,
    )
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["exit"] == 0, run["output"]
    heavy = [m for m in run["modules"] if m.split(".")[0] in HEAVY]
    assert heavy == [], f"status imported {heavy[:10]}"
    expected = read_status(reference, MODEL).model_dump(mode="json")
    expected["drift_reference"] = "the training sample of v1 (mlcanary train)"
    assert json.loads(run["output"]) == expected


def test_a_missing_sqlite_store_is_an_empty_registry_and_stays_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "mlflow.db"
    with SqlRegistryReader(f"sqlite:///{path}") as reader:
        assert reader.model_exists(MODEL) is False
        with pytest.raises(ModelNotFoundError, match="is not registered"):
            reader.list_versions(MODEL)
    assert not path.exists()
    assert not path.parent.exists()


def test_a_server_that_does_not_answer_is_transient_then_unavailable() -> None:
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    with RestRegistryReader(url, env={}, timeout_s=2) as reader:
        with pytest.raises(RegistryConnectionError) as caught:
            reader.aliases(MODEL)
        assert is_transient(caught.value)
        retry = RetryPolicy(attempts=2, first_delay_s=0.0, max_delay_s=0.0)
        with pytest.raises(RegistryUnavailableError, match="failed 2 times"):
            call_with_retry(retry, "aliases", lambda: reader.aliases(MODEL), sleep=lambda _s: None)


def test_status_with_mlflow_unreachable_retries_then_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    for key, value in {
        "MLCANARY_STATE_DIR": str(tmp_path / "state"),
        "MLCANARY_MLFLOW__TRACKING_URI": dead,
        "MLCANARY_MLFLOW__RETRY__ATTEMPTS": "3",
        "MLCANARY_MLFLOW__RETRY__FIRST_DELAY_S": "0.05",
        "MLCANARY_MLFLOW__RETRY__MAX_DELAY_S": "0.05",
    }.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["status", MODEL])
    assert result.exit_code == 1
    assert f"MLflow at {dead} is unavailable" in result.output
    assert "failed 3 times" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("uri", "env", "kind"),
    [
        ("http://mlflow:5000", {}, "rest"),
        ("https://mlflow.example", {"MLFLOW_TRACKING_TOKEN": "t"}, "rest"),
        ("http://mlflow:5000", {"MLFLOW_TRACKING_AUTH": "my_plugin"}, "mlflow"),
        ("sqlite:///x/mlflow.db", {}, "sql"),
        ("postgresql+psycopg://u:p@db/mlflow", {}, "sql"),
        ("postgresql://db/mlflow", {"MLFLOW_ENABLE_WORKSPACES": "true"}, "mlflow"),
        ("mysql://db/mlflow", {}, "mlflow"),
        ("databricks", {}, "mlflow"),
        ("file:///tmp/mlruns", {}, "mlflow"),
    ],
)
def test_reader_kind(uri: str, env: dict[str, str], kind: str, tmp_path: Path) -> None:
    assert reader_kind(uri, env, home=tmp_path) == kind


def test_a_credentials_file_leaves_the_server_to_mlflows_client(tmp_path: Path) -> None:
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text("[mlflow]\nmlflow_tracking_username = u\n")
    assert reader_kind("http://mlflow:5000", {}, home=tmp_path) == "mlflow"


def test_settings_pick_the_reader(store: Store) -> None:
    settings: Settings = load_settings(
        "local",
        config_dir=REPO_ROOT / "configs",
        env={},
        overrides={"state_dir": str(store.state_dir / "state"), "mlflow.tracking_uri": store.server_url},
    )
    with read_only.registry_reader(settings, env={}) as registry:
        assert isinstance(registry, RestRegistryReader)
        assert registry.aliases(MODEL) == {"champion": "1", "candidate": "3"}


@pytest.fixture(scope="module")
def postgres_store(postgres: EmbeddedPostgres) -> str:
    """The same registry in MLflow's SQL store on a real PostgreSQL (filled by MlflowClient)."""
    url = postgres.create_database(f"mlflow_readers_{uuid.uuid4().hex[:8]}")
    _fill(MlflowClient(tracking_uri=url, registry_uri=url))
    return url


def test_the_sql_reader_on_postgresql_returns_what_mlflows_client_returns(postgres_store: str) -> None:
    reference = MlflowRegistry(postgres_store)
    with SqlRegistryReader(postgres_store) as reader:
        for name in (MODEL, OTHER):
            assert reader.aliases(name) == reference.aliases(name)
            assert reader.list_versions(name) == reference.list_versions(name)
        assert [v.version for v in reader.list_versions(MODEL)] == ["1", "3", "4"]
        assert read_status(reader, MODEL).model_dump() == read_status(reference, MODEL).model_dump()
        assert reader.model_exists("no-such-model") is False
        with pytest.raises(VersionNotFoundError, match="has no version '2'"):
            reader.get_version(MODEL, "2")
