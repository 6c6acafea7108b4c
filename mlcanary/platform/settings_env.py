"""The platform's settings and environments: :func:`platform_settings` (the settings every component
must see), :func:`settings_env` (those settings as ``MLCANARY_*`` overrides of the ``local``
profile), :func:`child_env` (the environment of every platform process) and the ``platform.env``
file for the user to ``source`` (:func:`env_file_vars`, :func:`write_env_file`). All pure but the
file write."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlcanary.config import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings, env_overrides, load_settings
from mlcanary.platform.errors import PlatformError
from mlcanary.platform.paths import PlatformPaths, repo_root
from mlcanary.runtime.env import child_env as quiet_child_env

__all__ = ["child_env", "env_file_vars", "platform_settings", "settings_env", "write_env_file"]

# Inherited variables the platform's children must not see: another Prefect server or profile, or a
# profile / config file that would change what the ``local`` profile plus our overrides mean.
_DROP_PREFIXES = ("PREFECT_",)
# The webhook secret goes to the receiver only.
_DROP_NAMES = frozenset(
    f"{ENV_PREFIX}{name}" for name in ("PROFILE", "CONFIG", "CONFIG_DIR", "WEBHOOK_SECRET")
)


def platform_settings(settings: Settings) -> Settings:
    """``settings`` as every platform component must see them: an absolute state directory and
    the MLflow server as tracking and registry URI. Raises :class:`PlatformError` for settings the
    local platform cannot serve (a Kubernetes backend, or another MLflow tracking server)."""
    if settings.serving.backend != "local":
        raise PlatformError(
            f"`up --platform` runs the local serving stack; profile {settings.profile!r} has "
            f"serving.backend={settings.serving.backend!r}"
        )
    paths = PlatformPaths.of(settings)
    own = {None, paths.mlflow_url, f"sqlite:///{paths.mlflow_db.resolve()}"}
    for key in ("tracking_uri", "registry_uri"):
        value = getattr(settings.mlflow, key)
        if value not in own:
            raise PlatformError(
                f"mlflow.{key} is {value!r}, but the platform runs its own MLflow server on "
                f"{paths.mlflow_db}: unset it (or use `mlcanary up` without --platform)"
            )
    data = settings.model_dump(mode="json")
    data["state_dir"] = str(paths.state_dir)
    data["mlflow"] |= {"tracking_uri": paths.mlflow_url, "registry_uri": None}
    return Settings.model_validate(data)


def _env_name(parts: list[str]) -> str:
    # Inside a free-form mapping (model.params) keys keep their case; config.env_overrides agrees.
    free = next((i + 1 for i, part in enumerate(parts) if part == "params"), len(parts))
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join([p.upper() for p in parts[:free]] + parts[free:])


def _env_value(value: Any) -> str:
    """A value that ``config.env_overrides`` (YAML) parses back to ``value``."""
    if isinstance(value, str):
        try:
            plain_ok = value.strip() == value and yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain_ok = False
        return value if plain_ok and value else json.dumps(value)
    return json.dumps(value)


def _diff(base: Any, wanted: Any, path: list[str], out: dict[str, str]) -> None:
    if isinstance(base, dict) and isinstance(wanted, dict) and set(base) <= set(wanted):
        for key, value in wanted.items():
            if key not in base or base[key] != value:
                _diff(base.get(key), value, [*path, key], out)
        return
    out[_env_name(path)] = _env_value(wanted)


def settings_env(settings: Settings, *, config_dir: Path | None = None) -> dict[str, str]:
    """``MLCANARY_*`` variables that turn the ``local`` profile into ``settings``.

    The Prefect deployments load the ``local`` profile, so these variables are how a flow run on the
    worker sees the platform's settings (state directory, ports, MLflow server, rollout policy…).
    ``state_dir`` is always included (absolute). Raises :class:`PlatformError` if the result does not
    load back to ``settings`` (e.g. a mapping key the profile has and ``settings`` drops).
    """
    config_dir = config_dir or repo_root() / "configs"
    base = load_settings("local", config_dir=config_dir, env={}).model_dump(mode="json")
    wanted = settings.model_dump(mode="json")
    base.pop("profile", None)
    wanted.pop("profile", None)
    out: dict[str, str] = {}
    _diff(base, wanted, [], out)
    out[f"{ENV_PREFIX}STATE_DIR"] = str(Path(settings.state_dir).absolute())
    loaded = load_settings("local", config_dir=config_dir, env=out).model_dump(mode="json")
    loaded.pop("profile", None)
    wanted["state_dir"] = out[f"{ENV_PREFIX}STATE_DIR"]
    if loaded != wanted:
        differing = sorted(k for k in wanted if loaded.get(k) != wanted[k])
        raise PlatformError(
            "cannot express these settings as MLCANARY_* overrides of the local profile "
            f"(sections {', '.join(differing)}); put them in configs/local.yaml"
        )
    return out


def child_env(
    settings: Settings, *, base: Mapping[str, str] | None = None, config_dir: Path | None = None
) -> dict[str, str]:
    """The environment of every platform process and of the env file's ``source``.

    ``settings`` must already be :func:`platform_settings`. Inherited ``PREFECT_*`` variables,
    ``MLCANARY_*`` setting overrides (ours replace them) and the webhook secret (only the receiver
    gets it) are dropped; other reserved ``MLCANARY_*`` variables (notification URLs) pass through.
    """
    base = os.environ if base is None else base
    paths = PlatformPaths.of(settings)
    config_dir = config_dir or repo_root() / "configs"
    overridden = {name for name, _ in env_overrides(base).values()}
    env = {
        key: value
        for key, value in base.items()
        if not key.startswith(_DROP_PREFIXES) and key not in _DROP_NAMES and key not in overridden
    }
    env = quiet_child_env(env)
    env |= {
        "MLFLOW_TRACKING_URI": paths.mlflow_url,
        "PREFECT_HOME": str(paths.prefect_home),
        "PREFECT_API_URL": paths.prefect_api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        f"{ENV_PREFIX}CONFIG_DIR": str(config_dir),
    }
    env |= settings_env(settings, config_dir=config_dir)
    return env


def env_file_vars(settings: Settings, *, config_dir: Path | None = None) -> dict[str, str]:
    """What the env file exports: the settings overrides and where the servers are (no secrets)."""
    paths = PlatformPaths.of(settings)
    config_dir = config_dir or repo_root() / "configs"
    return {
        **settings_env(settings, config_dir=config_dir),
        f"{ENV_PREFIX}CONFIG_DIR": str(config_dir),
        "MLFLOW_TRACKING_URI": paths.mlflow_url,
        "PREFECT_API_URL": paths.prefect_api_url,
        "PREFECT_HOME": str(paths.prefect_home),
    }


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """``export NAME=value`` lines (shell-quoted) for ``source``; no secret is ever written here."""
    lines = [
        "# Written by `mlcanary up --platform`: `source` it to point mlcanary, prefect and mlflow at the",
        "# local platform. MLCANARY_* are the platform's settings as overrides of the local profile,",
        "# so run mlcanary without --profile while it is sourced.",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
