"""Typed configuration: ``configs/<profile>.yaml`` + ``MLCANARY_*`` environment overrides.

Every default lives in the pydantic models of :mod:`mlcanary.config.sections` (re-exported here),
put together by :class:`Settings`, so a profile file only says what differs. A profile
may ``extends:`` another one. Environment variables override files: ``MLCANARY_TRAINING__SEED=7``
sets ``training.seed`` (sections joined by ``__``; values parsed as YAML, so lists and numbers work).
``MLCANARY_PROFILE`` picks the profile, ``MLCANARY_CONFIG`` a file, ``MLCANARY_CONFIG_DIR`` the
folder of profiles.

Anything wrong raises :class:`ConfigError` with one message naming the source (file or variable),
the field and the problem; callers show that message and never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from mlcanary.config.sections import (
    PORT_SETTINGS,
    ConfigSection,
    DataSettings,
    KServeMode,
    KServeSettings,
    LeaseSettings,
    Metric,
    MetricsSourceName,
    MlflowRetrySettings,
    MlflowSettings,
    ModelName,
    ModelSettings,
    Port,
    PrometheusSettings,
    ServingSettings,
    SyntheticDataSettings,
    TelemetrySettings,
    TrainingSettings,
    http_url,
)
from mlcanary.rollout.policy import RolloutPolicy

ENV_PREFIX = "MLCANARY_"
ENV_NESTED_DELIMITER = "__"
PROFILES: tuple[str, ...] = ("local", "demo", "kserve")
# Variables read elsewhere (not settings): profile selection, notification URLs and the webhook secret.
_RESERVED_ENV = {
    "PROFILE",
    "CONFIG",
    "CONFIG_DIR",
    "NOTIFY_URLS",
    "NOTIFY_EVENTS",
    "NOTIFY_BLOCK",
    "WEBHOOK_SECRET",
}

STORE_FILENAME = "inference.db"
"""The inference log's SQLite file in the state directory (when ``telemetry.store_url`` is unset)."""
MLFLOW_DB_FILENAME = "mlflow.db"
"""MLflow's SQLite file in the state directory (when ``mlflow.tracking_uri`` is unset)."""


class ConfigError(Exception):
    """Configuration that cannot be used; ``str(error)`` is the whole, user-facing explanation."""


class Settings(ConfigSection):
    """The whole configuration of one mlcanary installation."""

    profile: Literal["local", "demo", "kserve"] = Field("local", description="which profile this is")
    state_dir: Path = Field(Path(".mlcanary"), description="local state: MLflow SQLite, artifacts, logs")
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    kserve: KServeSettings = Field(default_factory=KServeSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    rollout: RolloutPolicy = Field(
        default_factory=RolloutPolicy,
        description="the rollout policy: configs/rollout.yaml, then a profile's `rollout:` section",
    )

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force (SQLite under the state directory by default)."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.state_dir / MLFLOW_DB_FILENAME).resolve()}"

    @property
    def registry_uri(self) -> str:
        """The MLflow registry URI in force (the tracking URI by default)."""
        return self.mlflow.registry_uri or self.tracking_uri

    @property
    def store_url(self) -> str:
        """The inference-log database in force (SQLite under the state directory by default)."""
        if self.telemetry.store_url:
            return self.telemetry.store_url
        return f"sqlite:///{(self.state_dir / STORE_FILENAME).resolve()}"

    @property
    def artifact_location(self) -> str:
        """Artifact root for a newly created experiment."""
        if self.mlflow.artifact_location:
            return self.mlflow.artifact_location
        return (self.state_dir / "mlartifacts").resolve().as_uri()


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error on one line: what is wrong and where (its own text spans several lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """Read a profile file and the files it ``extends``; returns the merged mapping and the files."""
    if path.resolve() in {p.resolve() for p in chain}:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: 'extends' forms a cycle: {cycle}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded, [path]
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a profile name or file name")
    parent_path = path.parent / (parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml")
    base, files = _read_yaml(parent_path, (*chain, path))
    return _deep_merge(base, loaded), [*files, path]


def env_overrides(env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """``MLCANARY_A__B=v`` → ``{"a.b": ("MLCANARY_A__B", parsed v)}`` (reserved names skipped)."""
    found: dict[str, tuple[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key in _RESERVED_ENV or not key:
            continue
        parts = key.split(ENV_NESTED_DELIMITER)
        # Config sections are lower-case; keys inside a free-form mapping (model.params) keep
        # their case, as estimator hyperparameters such as C are case-sensitive.
        free = next((i + 1 for i, part in enumerate(parts) if part.lower() == "params"), len(parts))
        dotted = ".".join([p.lower() for p in parts[:free]] + parts[free:])
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        found[dotted] = (name, value)
    return found


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in dotted.items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment: {path} conflicts with another override")
        node[leaf] = value
    return nested


def _describe(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; see `mlcanary config --help`)"
    elif error["type"] == "missing":
        message = "required field is missing"
    value = error.get("input")
    if error["type"] not in ("extra_forbidden", "missing") and not isinstance(value, dict | list):
        message += f" (got {value!r})"
    return message


def _format_errors(error: ValidationError, files: list[Path], env: dict[str, tuple[str, Any]]) -> str:
    source_files = ", ".join(str(f) for f in files) or "built-in defaults"
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"] if part != "__root__") or "(top level)"
        source = source_files
        for dotted, (var, _) in env.items():
            if field == dotted or field.startswith(dotted + ".") or dotted.startswith(field + "."):
                source = var if var.startswith("override ") else f"environment variable {var}"
        lines.append(f"{source}: {field}: {_describe(item)}")
    head = "invalid configuration" if len(lines) > 1 else "invalid configuration:"
    return head + ("\n  " if len(lines) > 1 else " ") + "\n  ".join(lines)


def load_settings(
    profile: str | None = None,
    *,
    config_file: Path | None = None,
    config_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load and validate the configuration.

    ``config_file`` names a file directly; otherwise ``profile`` names
    ``<config_dir>/<profile>.yaml``; with neither, ``MLCANARY_CONFIG`` (a file), then
    ``MLCANARY_PROFILE``, then ``local`` apply. A missing ``local`` profile file means the embedded
    defaults. ``MLCANARY_*`` environment overrides come next, then ``overrides`` (dotted keys such as
    ``"training.seed"``, from command-line options or flow parameters).
    Raises :class:`ConfigError` with a one-message explanation for anything invalid.
    """
    env = os.environ if env is None else env
    config_dir = config_dir or Path(env.get(f"{ENV_PREFIX}CONFIG_DIR", "configs"))
    if config_file is None and profile is None and env.get(f"{ENV_PREFIX}CONFIG"):
        config_file = Path(env[f"{ENV_PREFIX}CONFIG"])
    data: dict[str, Any] = {}
    files: list[Path] = []
    if config_file is not None:
        data, files = _read_yaml(config_file)
    else:
        profile = profile or env.get(f"{ENV_PREFIX}PROFILE") or "local"
        if profile not in PROFILES:
            raise ConfigError(
                f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)} or pass a config file"
            )
        path = config_dir / f"{profile}.yaml"
        if path.is_file():
            data, files = _read_yaml(path)
        elif profile != "local":
            raise ConfigError(f"{path}: config file for profile {profile!r} not found")
        data.setdefault("profile", profile)
    rollout_file = (config_file.parent if config_file is not None else config_dir) / "rollout.yaml"
    if rollout_file.is_file() and rollout_file not in files:
        policy, _ = _read_yaml(rollout_file)
        data = _deep_merge({"rollout": policy}, data)
        files = [rollout_file, *files]
    sources = env_overrides(env)
    sources.update({key: (f"override {key}", value) for key, value in (overrides or {}).items()})
    data = _deep_merge(data, _nest({k: v for k, (_, v) in sources.items()}))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, files, sources)) from None


__all__ = [
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "MLFLOW_DB_FILENAME",
    "PORT_SETTINGS",
    "PROFILES",
    "STORE_FILENAME",
    "ConfigError",
    "DataSettings",
    "KServeMode",
    "KServeSettings",
    "LeaseSettings",
    "Metric",
    "MetricsSourceName",
    "MlflowRetrySettings",
    "MlflowSettings",
    "ModelName",
    "ModelSettings",
    "Port",
    "PrometheusSettings",
    "ServingSettings",
    "Settings",
    "SyntheticDataSettings",
    "TelemetrySettings",
    "TrainingSettings",
    "env_overrides",
    "http_url",
    "load_settings",
]
