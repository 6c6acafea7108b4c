"""Every service binds 127.0.0.1 unless configured otherwise; Envoy's admin API never leaves loopback
(issue 14, item 10). Read from the argv and configuration builders every service starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlcanary import platform
from mlcanary.cli.main import app
from mlcanary.config import Settings, load_settings
from mlcanary.serving.local import model_server
from mlcanary.serving.local.arm_servers import ArmServers
from mlcanary.serving.local.envoy_config import EnvoyLayout, Upstream, render_bootstrap
from mlcanary.serving.local.stack import _collector_argv
from mlcanary.telemetry import collector

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _settings(state_dir: Path, **overrides: object) -> Settings:
    return load_settings(
        "local", config_dir=CONFIGS, env={}, overrides={"state_dir": str(state_dir), **overrides}
    )


def _host(argv: list[str]) -> str:
    return argv[argv.index("--host") + 1]


def _binds(settings: Settings) -> dict[str, str]:
    """The address each service of the local stack and the platform is started on."""
    settings = platform.platform_settings(settings)
    bin_dir = Path("/venv/bin")
    bootstrap = render_bootstrap(EnvoyLayout.from_settings(settings))
    (listener,) = bootstrap["static_resources"]["listeners"]
    arms = ArmServers(settings, settings.state_dir)
    return {
        "mlflow server": _host(platform.mlflow_server_argv(settings, bin_dir)),
        "prefect server": _host(platform.prefect_server_argv(settings, bin_dir)),
        "webhook receiver": _host(platform.webhook_argv(settings, "/venv/bin/python")),
        "collector": _host(_collector_argv(settings, "/venv/bin/python")),
        "champion server": _host(arms._argv("champion", "m", "1")),
        "candidate server": _host(arms._argv("candidate", "m", "2")),
        "envoy front door": listener["address"]["socket_address"]["address"],
        "envoy admin": bootstrap["admin"]["address"]["socket_address"]["address"],
    }


def test_every_service_binds_loopback_by_default(tmp_path: Path) -> None:
    binds = _binds(_settings(tmp_path))
    assert binds == dict.fromkeys(binds, "127.0.0.1")
    assert len(binds) == 8


def test_a_configured_address_is_used_but_envoys_admin_stays_on_loopback(tmp_path: Path) -> None:
    binds = _binds(_settings(tmp_path, **{"serving.host": "0.0.0.0"}))
    admin = binds.pop("envoy admin")
    assert binds == dict.fromkeys(binds, "0.0.0.0")
    assert admin == "127.0.0.1"


@pytest.mark.parametrize("address", ["0.0.0.0", "10.1.2.3", "::", "example.com"])
def test_envoys_admin_api_is_refused_off_loopback(tmp_path: Path, address: str) -> None:
    upstream = Upstream(host="127.0.0.1", port=8081)
    with pytest.raises(ValueError, match="admin_host must be a loopback address"):
        EnvoyLayout(tmp_path, 8080, 9901, upstream, upstream, host=address, admin_host=address)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost", "127.0.0.5"])
def test_envoys_admin_api_on_any_loopback_address(tmp_path: Path, address: str) -> None:
    upstream = Upstream(host="127.0.0.1", port=8081)
    layout = EnvoyLayout(tmp_path, 8080, 9901, upstream, upstream, admin_host=address)
    assert render_bootstrap(layout)["admin"]["address"]["socket_address"]["address"] == address


def test_the_servers_own_defaults_are_loopback() -> None:
    parsed = model_server._parse_args(
        ["--name", "m", "--version", "1", "--arm", "champion", "--port", "1", "--tracking-uri", "sqlite://"]
    )
    assert parsed.host == "127.0.0.1"
    with pytest.raises(SystemExit):  # the collector has no default address: it is always told
        collector.main(["--port", "1", "--db-url", "sqlite://"])


@pytest.mark.parametrize(
    ("command", "target", "extra"),
    [
        (["webhook"], "mlcanary.triggers.server.run_webhook", {"MLCANARY_WEBHOOK_SECRET": "x" * 32}),
        (["collector"], "mlcanary.telemetry.collector.run_collector", {}),
    ],
)
def test_the_commands_bind_the_configured_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], target: str, extra: dict[str, str]
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(target, lambda host, *args, **kwargs: seen.append(host))
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLCANARY_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("MLCANARY_SERVING__HOST", "0.0.0.0")
    assert CliRunner().invoke(app, command).exit_code == 0
    assert seen == ["127.0.0.1", "0.0.0.0"]
