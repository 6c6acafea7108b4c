"""The pure parts of `mlcanary up --platform`: settings as environment, argv, private files, errors."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcanary import platform
from mlcanary.cli.main import app
from mlcanary.config import Settings, load_settings
from mlcanary.runtime.processes import find_running, start_process

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "configs"


def _settings(state_dir: Path, profile: str = "local", **overrides: object) -> Settings:
    return load_settings(
        profile, config_dir=CONFIGS, env={}, overrides={"state_dir": str(state_dir), **overrides}
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _without_profile(settings: Settings) -> dict[str, object]:
    data = settings.model_dump(mode="json")
    data.pop("profile")
    return data


# -- settings as MLCANARY_* overrides -------------------------------------------------------------


@pytest.mark.parametrize("profile", ["local", "demo"])
def test_settings_env_loads_back_to_the_same_settings_on_the_local_profile(
    tmp_path: Path, profile: str
) -> None:
    settings = platform.platform_settings(_settings(tmp_path, profile, **{"serving.mlflow_port": 5123}))
    env = platform.settings_env(settings, config_dir=CONFIGS)
    assert env["MLCANARY_STATE_DIR"] == str(tmp_path.absolute())
    assert env["MLCANARY_MLFLOW__TRACKING_URI"] == "http://127.0.0.1:5123"
    assert env["MLCANARY_SERVING__MLFLOW_PORT"] == "5123"
    assert _without_profile(load_settings("local", config_dir=CONFIGS, env=env)) == _without_profile(settings)
    if profile == "demo":
        # The demo profile's compressed policy reaches the flows, which load the local profile.
        assert env["MLCANARY_ROLLOUT__MIN_BAKE_PER_STEP"] == "20s"
        assert env["MLCANARY_ROLLOUT__STEPS"] == "[20, 50]"
        assert env["MLCANARY_ROLLOUT__CHECKS__ACCURACY__TOLERANCE"] == "0.05"
    else:
        assert "MLCANARY_ROLLOUT__STEPS" not in env


def test_settings_env_quotes_strings_yaml_would_misread_and_keeps_param_case(tmp_path: Path) -> None:
    settings = _settings(tmp_path, **{"model.name": "yes", "model.params": {"C": 0.5}, "data.target": "2024"})
    env = platform.settings_env(settings, config_dir=CONFIGS)
    assert env["MLCANARY_MODEL__NAME"] == '"yes"'
    assert env["MLCANARY_DATA__TARGET"] == '"2024"'
    assert env["MLCANARY_MODEL__PARAMS__C"] == "0.5"
    loaded = load_settings("local", config_dir=CONFIGS, env=env)
    assert loaded.model.name == "yes"
    assert loaded.data.target == "2024"
    assert loaded.model.params == {"C": 0.5}


def test_platform_settings_point_at_the_server_with_an_absolute_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = platform.platform_settings(_settings(Path("rel-state"), **{"serving.mlflow_port": 5999}))
    assert settings.state_dir == tmp_path / "rel-state"
    assert settings.tracking_uri == "http://127.0.0.1:5999"
    assert settings.registry_uri == "http://127.0.0.1:5999"
    # Run again on its own output (the env file sourced): unchanged.
    assert platform.platform_settings(settings) == settings


def test_platform_settings_refuse_kserve_and_another_tracking_server(tmp_path: Path) -> None:
    with pytest.raises(platform.PlatformError, match=r"serving\.backend='kserve'"):
        platform.platform_settings(_settings(tmp_path, "kserve"))
    with pytest.raises(platform.PlatformError, match=r"mlflow\.tracking_uri is 'http://elsewhere:5000'"):
        platform.platform_settings(_settings(tmp_path, **{"mlflow.tracking_uri": "http://elsewhere:5000"}))
    own_sqlite = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    accepted = platform.platform_settings(_settings(tmp_path, **{"mlflow.tracking_uri": own_sqlite}))
    assert accepted.tracking_uri.startswith("http://")


def test_child_env_replaces_inherited_prefect_and_mlcanary_settings(tmp_path: Path) -> None:
    settings = platform.platform_settings(_settings(tmp_path, **{"model.name": "ours"}))
    inherited = {
        "PATH": "/usr/bin",
        "PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/x",
        "PREFECT_API_KEY": "pnu_not_for_us",
        "PREFECT_PROFILE": "cloud",
        "MLCANARY_PROFILE": "demo",
        "MLCANARY_CONFIG": "/elsewhere.yaml",
        "MLCANARY_MODEL__NAME": "theirs",
        "MLCANARY_TRAINING__SEED": "7",
        "MLCANARY_NOTIFY_URLS": "json://example",
        "MLCANARY_WEBHOOK_SECRET": "only-for-the-receiver",
    }
    env = platform.child_env(settings, base=inherited, config_dir=CONFIGS)
    assert env["PATH"] == "/usr/bin"
    assert env["MLCANARY_NOTIFY_URLS"] == "json://example"
    for gone in (
        "PREFECT_API_KEY",
        "PREFECT_PROFILE",
        "MLCANARY_PROFILE",
        "MLCANARY_CONFIG",
        "MLCANARY_WEBHOOK_SECRET",
    ):
        assert gone not in env
    assert "MLCANARY_TRAINING__SEED" not in env  # not in these settings: it must not leak in
    assert env["MLCANARY_MODEL__NAME"] == "ours"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["PREFECT_HOME"] == str(tmp_path.absolute() / "prefect")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["MLFLOW_TRACKING_URI"] == env["MLCANARY_MLFLOW__TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["MLCANARY_CONFIG_DIR"] == str(CONFIGS)


# -- argv ------------------------------------------------------------------------------------------


def test_server_argv_and_environment(tmp_path: Path) -> None:
    settings = platform.platform_settings(
        _settings(tmp_path, **{"serving.mlflow_port": 5001, "serving.prefect_port": 4201})
    )
    bin_dir = Path("/venv/bin")
    mlflow = platform.mlflow_server_argv(settings, bin_dir)
    assert mlflow[:2] == ["/venv/bin/mlflow", "server"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.absolute()}/mlflow.db"
    assert (
        mlflow[mlflow.index("--default-artifact-root") + 1] == (tmp_path / "mlartifacts").resolve().as_uri()
    )
    assert mlflow[mlflow.index("--workers") + 1] == "1"
    assert mlflow[mlflow.index("--port") + 1] == "5001"
    prefect = platform.prefect_server_argv(settings, bin_dir)
    assert prefect[:3] == ["/venv/bin/prefect", "server", "start"]
    assert prefect[prefect.index("--port") + 1] == "4201"
    worker = platform.worker_argv(bin_dir, "mlcanary-local")
    assert worker[worker.index("--pool") + 1] == "mlcanary-local"
    assert worker[worker.index("--type") + 1] == "process"
    server_env = platform.mlflow_server_env(settings, "KEY", {"A": "1"})
    assert server_env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert server_env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http,https"
    assert server_env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == "KEY"
    assert server_env["A"] == "1"


def test_webhook_argv_never_carries_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCANARY_WEBHOOK_SECRET", "s3cr3t-value")
    settings = platform.platform_settings(_settings(tmp_path, **{"serving.webhook_port": 8123}))
    argv = platform.webhook_argv(settings, "/venv/bin/python")
    assert argv[:4] == ["/venv/bin/python", "-m", "mlcanary.cli", "webhook"]
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--prefect-api-url") + 1] == "http://127.0.0.1:4200/api"
    assert not any("s3cr3t" in part for part in argv)
    assert "MLCANARY_WEBHOOK_SECRET" not in platform.env_file_vars(settings, config_dir=CONFIGS)


def test_deployments_and_pools_come_from_prefect_yaml(tmp_path: Path) -> None:
    import yaml

    declared = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    assert platform.deployment_names(REPO_ROOT) == [d["name"] for d in declared]
    assert platform.work_pool_names(REPO_ROOT) == ["mlcanary-local"]  # from prefect.toml
    (tmp_path / "prefect.yaml").write_text(
        "deployments:\n- {name: a, work_pool: {name: p1}}\n- {name: b, work_pool: {name: p1}}\n"
    )
    assert platform.deployment_names(tmp_path) == ["a", "b"]
    assert platform.work_pool_names(tmp_path) == ["p1"]
    # A deployment naming no pool takes Prefect's default pool from prefect.toml.
    (tmp_path / "prefect.yaml").write_text("deployments:\n- {name: a, work_pool: {name: p1}}\n- {name: b}\n")
    assert platform.work_pool_names(tmp_path) == ["p1"]
    (tmp_path / "prefect.toml").write_text('[deployments]\ndefault_work_pool_name = "p2"\n')
    assert platform.work_pool_names(tmp_path) == ["p1", "p2"]
    (tmp_path / "prefect.toml").write_text("[deployments\n")
    with pytest.raises(platform.PlatformError, match="not valid TOML"):
        platform.work_pool_names(tmp_path)
    with pytest.raises(platform.PlatformError, match=r"prefect\.yaml not found"):
        platform.deployment_names(tmp_path / "nowhere")


# -- private files ---------------------------------------------------------------------------------


def test_secret_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "platform" / "webhook-secret"
    calls: list[int] = []

    def make() -> str:
        calls.append(1)
        return f"secret-{len(calls)}"

    assert platform.ensure_secret_file(path, make) == "secret-1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert platform.ensure_secret_file(path, make) == "secret-1"
    assert calls == [1]
    path.chmod(0o644)
    assert platform.ensure_secret_file(path, make) == "secret-1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    with pytest.raises(platform.PlatformError, match="is empty"):
        platform.ensure_secret_file(path, make)


def test_fernet_key_is_what_mlflow_can_use() -> None:
    from cryptography.fernet import Fernet

    key = platform.fernet_key()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert Fernet(key).decrypt(Fernet(key).encrypt(b"x")) == b"x"
    assert platform.fernet_key() != key


def test_env_file_sources_back_to_the_same_values(tmp_path: Path) -> None:
    env = {"MLCANARY_STATE_DIR": "/tmp/with space/it's", "MLCANARY_ROLLOUT__STEPS": "[20, 50]"}
    path = tmp_path / "platform.env"
    platform.write_env_file(path, env)
    shown = subprocess.run(
        ["bash", "-c", f"source {path} && env -0"], capture_output=True, check=True, env={}
    ).stdout.decode()
    sourced = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
    assert {k: sourced[k] for k in env} == env


# -- errors ----------------------------------------------------------------------------------------


def _fake_bin(tmp_path: Path, mlflow_script: str = "sleep 60") -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("mlflow", mlflow_script), ("prefect", "sleep 60")):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return bin_dir


def test_missing_binary_is_named_before_anything_starts(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(platform.PlatformError, match=r"mlflow not found at .*bin/mlflow"):
        platform.up(_settings(tmp_path / "state"), bin_dir=empty, root=REPO_ROOT, environ={})
    assert not (tmp_path / "state" / "run").exists()


def test_port_taken_by_a_foreign_process_is_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = _settings(
            tmp_path / "state", **{"serving.prefect_port": port, "serving.mlflow_port": _free_port()}
        )
        with pytest.raises(platform.PlatformError) as caught:
            platform.up(settings, bin_dir=_fake_bin(tmp_path), root=REPO_ROOT, environ={})
    message = str(caught.value)
    assert f"port {port} (serving.prefect_port) is taken by a process that is not ours" in message
    assert "MLCANARY_SERVING__PREFECT_PORT" in message
    assert platform.status(settings)[0].running is False


def test_a_server_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    settings = platform.platform_settings(
        _settings(tmp_path / "state", **{"serving.mlflow_port": _free_port()})
    )
    bin_dir = _fake_bin(tmp_path, mlflow_script="echo 'boom: no database' >&2; exit 3")
    with pytest.raises(platform.PlatformError) as caught:
        platform.start_mlflow_server(settings, env=dict(os.environ), bin_dir=bin_dir, timeout_s=20)
    message = str(caught.value)
    assert "MLflow server" in message
    assert "exited (status 3)" in message
    assert "boom: no database" in message
    assert str(tmp_path / "state" / "logs" / "platform-mlflow.log") in message
    key_file = tmp_path / "state" / "platform" / "mlflow-webhook-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_cli_up_platform_error_is_one_line_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("MLCANARY_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("MLCANARY_SERVING__MLFLOW_PORT", str(port))
        result = CliRunner().invoke(app, ["up", "--platform"])
    assert result.exit_code == 1
    assert f"port {port} (serving.mlflow_port)" in result.output
    assert "Traceback" not in result.output
    stopped = CliRunner().invoke(app, ["down"])
    assert stopped.exit_code == 0, stopped.output
    assert "nothing was running" in stopped.output


# -- stopping --------------------------------------------------------------------------------------

# A stand-in for the Prefect worker: ignores SIGTERM, exits on SIGINT, and has a "flow run" child in
# a session of its own (as Prefect starts them) that would outlive a process-group kill.
_WORKER = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def test_down_interrupts_the_worker_and_stops_its_flow_runs(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    state_dir = tmp_path.absolute() / "state"
    log = state_dir / "logs" / "platform-worker.log"
    worker = start_process(
        platform.WORKER, [sys.executable, "-c", _WORKER], state_dir=state_dir, log_path=log
    )
    deadline = time.monotonic() + 20
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    flow_run = int(log.read_text().split()[0])
    assert [pid for pid, _ in platform.descendants(worker.pid)] == [flow_run]
    assert os.getpgid(flow_run) != worker.record.pgid

    began = time.monotonic()
    assert platform.down(settings, grace_s=5) == [platform.WORKER]
    assert time.monotonic() - began < 5, "SIGINT should stop it without waiting for SIGKILL"
    assert worker.returncode() == 0
    assert find_running(state_dir, platform.WORKER) is None
    deadline = time.monotonic() + 5
    while Path(f"/proc/{flow_run}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = not Path(f"/proc/{flow_run}").exists() or "Z" in Path(f"/proc/{flow_run}/stat").read_text()
    assert gone, "the worker's flow run outlived down"
