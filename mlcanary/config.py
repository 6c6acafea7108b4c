"""Typed configuration: ``configs/<profile>.yaml`` + ``MLCANARY_*`` environment overrides.

Every default lives in the pydantic models below, so a profile file only says what differs. A profile
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
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlcanary.rollout.output_names import OutputNames
from mlcanary.rollout.policy import Duration, MetricName, RolloutPolicy

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

Metric = Literal["roc_auc", "average_precision", "f1", "precision", "recall", "accuracy", "log_loss"]
ModelName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="registered model name in MLflow (letters, digits, '.', '_', '-')",
    ),
]
Port = Annotated[int, Field(ge=1, le=65535)]
STORE_FILENAME = "inference.db"
"""The inference log's SQLite file in the state directory (when ``telemetry.store_url`` is unset)."""
MLFLOW_DB_FILENAME = "mlflow.db"
"""MLflow's SQLite file in the state directory (when ``mlflow.tracking_uri`` is unset)."""


def http_url(host: str, port: int) -> str:
    """``http://<host>:<port>``, an IPv6 literal in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ConfigError(Exception):
    """Configuration that cannot be used; ``str(error)`` is the whole, user-facing explanation."""


class _Section(BaseModel):
    # Environment values are parsed as YAML, so MLCANARY_MODEL__NAME=2024 arrives as an int.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class MlflowRetrySettings(_Section):
    """How registry calls ride out an MLflow that is down or failing (HTTP 5xx, 429, no connection):
    ``attempts`` tries, waits doubling from ``first_delay_s`` up to ``max_delay_s``, then a clear
    error (the release keeps its recorded phase and the next tick resumes it)."""

    attempts: int = Field(5, ge=1, le=20, description="tries of one registry call in all (1: no retry)")
    first_delay_s: float = Field(1.0, ge=0.0, le=60.0, description="wait before the first retry, seconds")
    max_delay_s: float = Field(8.0, ge=0.0, le=600.0, description="longest wait between two tries, seconds")
    request_timeout_s: int = Field(
        30, ge=1, le=600, description="timeout of one HTTP request to an MLflow server, seconds"
    )

    @model_validator(mode="after")
    def _ordered(self) -> MlflowRetrySettings:
        if self.max_delay_s < self.first_delay_s:
            raise ValueError("mlflow.retry.max_delay_s must be at least first_delay_s")
        return self


class MlflowSettings(_Section):
    """Where the MLflow tracking server and model registry live."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; default: SQLite file mlflow.db in the state directory",
    )
    registry_uri: str | None = Field(None, description="MLflow registry URI; default: the tracking URI")
    experiment: str = Field("mlcanary", min_length=1, description="experiment that holds training runs")
    artifact_location: str | None = Field(
        None,
        description="artifact root for a new experiment; default: mlartifacts/ in the state directory",
    )
    serialization: Literal["skops", "pickle"] = Field(
        "skops",
        description="how sklearn models are saved: 'skops' (safe to load) or 'pickle' (model.pkl, which "
        "KServe's sklearn server and a stock MLServer can load)",
    )
    retry: MlflowRetrySettings = Field(default_factory=MlflowRetrySettings)


class SyntheticDataSettings(_Section):
    """The bundled card-transaction generator (used when ``data.source`` is ``synthetic``)."""

    rows: int = Field(20_000, ge=200, le=20_000_000, description="number of rows to generate")
    seed: int = Field(0, ge=0, description="random seed; the same seed gives the same rows")
    covariate_shift: float = Field(
        0.0, ge=0.0, le=5.0, description="feature shift in standard deviations (0 = none)"
    )
    fraud_rate: float = Field(0.04, gt=0.0, lt=1.0, description="share of fraudulent rows")
    noise: float = Field(0.0, ge=0.0, le=0.5, description="share of labels flipped at random")


class DataSettings(_Section):
    """The training data: the bundled generator or the user's own CSV / Parquet file."""

    source: Literal["synthetic", "file"] = Field(
        "synthetic", description="'synthetic' for the bundled generator, 'file' for your own data"
    )
    path: Path | None = Field(None, description="CSV or Parquet file (required when source is 'file')")
    target: str = Field("is_fraud", min_length=1, description="name of the binary label column (0/1)")
    features: list[str] | None = Field(
        None, description="feature columns to use; default: every column except the target"
    )
    synthetic: SyntheticDataSettings = Field(default_factory=SyntheticDataSettings)

    @model_validator(mode="after")
    def _path_for_files(self) -> DataSettings:
        if self.source == "file" and self.path is None:
            raise ValueError("data.path is required when data.source is 'file'")
        return self


class ModelSettings(_Section):
    """What is trained and under which name it is registered."""

    name: ModelName = "fraud-detector"
    factory: str = Field(
        "models.pipeline:build_pipeline",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:function' that builds the scikit-learn pipeline",
    )
    estimator: Literal["logistic_regression", "random_forest", "hist_gradient_boosting"] = Field(
        "hist_gradient_boosting", description="estimator at the end of the pipeline"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="hyperparameters passed to the estimator"
    )
    outputs: OutputNames = Field(
        default_factory=OutputNames,
        description="which of the model's outputs hold the class label and P(positive class)",
    )


class TrainingSettings(_Section):
    """Split, evaluation and the offline gate against the current champion."""

    test_size: float = Field(0.25, gt=0.0, lt=1.0, description="holdout share")
    seed: int = Field(42, ge=0, description="seed for the split and the estimator")
    primary_metric: Metric = Field(
        "roc_auc", description="metric that decides the offline gate (log_loss: lower is better)"
    )
    gate_tolerance: float = Field(
        0.005,
        ge=0.0,
        le=1.0,
        description="how much worse than the champion (absolute) the candidate may be and still pass",
    )
    decision_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="probability above which a row is labelled positive"
    )
    reference_rows: int = Field(
        5_000, ge=100, le=1_000_000, description="training rows stored as the drift reference"
    )
    replace_candidate: bool = Field(
        False,
        description="let a version that passes the gate take @candidate from one already under canary",
    )


class ServingSettings(_Section):
    """Where models are served: every port of the local stack and the platform, and their URLs."""

    backend: Literal["local", "kserve"] = Field(
        "local", description="'local' (Envoy + model servers) or 'kserve' (Kubernetes)"
    )
    host: str = Field("127.0.0.1", description="address the local stack binds to")
    front_door_port: Port = Field(8080, description="Envoy listener: the one URL clients call")
    envoy_admin_port: Port = Field(9901, description="Envoy admin endpoint (weights, stats)")
    champion_port: Port = Field(8081, description="local champion model server")
    candidate_port: Port = Field(8082, description="local candidate model server")
    collector_port: Port = Field(8090, description="inference-log collector")
    webhook_port: Port = Field(8095, description="MLflow webhook receiver")
    mlflow_port: Port = Field(5000, description="MLflow server of `mlcanary up --platform` (tracking UI)")
    prefect_port: Port = Field(4200, description="Prefect server of `mlcanary up --platform` (API and UI)")

    def url(self, port: int) -> str:
        """``http://<host>:<port>`` of a service of the local stack or platform."""
        return http_url(self.host, port)

    @property
    def front_door_url(self) -> str:
        """Envoy's listener: the one URL clients call."""
        return self.url(self.front_door_port)

    @property
    def envoy_admin_url(self) -> str:
        return self.url(self.envoy_admin_port)

    @property
    def collector_url(self) -> str:
        """The inference-log collector (CloudEvents on ``/events``, labels on ``/feedback``)."""
        return self.url(self.collector_port)

    @property
    def webhook_url(self) -> str:
        """Where MLflow delivers registry events to the webhook receiver."""
        return self.url(self.webhook_port) + "/webhook"

    @property
    def mlflow_url(self) -> str:
        return self.url(self.mlflow_port)

    @property
    def prefect_api_url(self) -> str:
        return self.url(self.prefect_port) + "/api"

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServingSettings:
        ports = {
            name: value
            for name, value in self.__dict__.items()
            if name.endswith("_port") and isinstance(value, int)
        }
        seen: dict[int, str] = {}
        for name, value in ports.items():
            if value in seen:
                raise ValueError(f"serving.{name} and serving.{seen[value]} are both {value}")
            seen[value] = name
        return self


PORT_SETTINGS: tuple[str, ...] = tuple(
    f"serving.{name}" for name in ServingSettings.model_fields if name.endswith("_port")
)
"""The dotted settings of every port the local stack and the platform listen on."""


KServeMode = Literal["Knative", "Serverless", "Standard", "RawDeployment"]


class KServeSettings(_Section):
    """The cluster side of ``serving.backend: kserve`` (see ``mlcanary/serving/kserve/``)."""

    namespace: str = Field(
        "mlcanary", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="namespace of the models"
    )
    context: str | None = Field(
        None, description="kubeconfig context; default: in-cluster credentials in a pod, else the current one"
    )
    api_url: str | None = Field(
        None, description="Kubernetes API URL without credentials (tests, `kubectl proxy`); overrides context"
    )
    deployment_mode: KServeMode = Field(
        "Knative",
        description="mode of InferenceServices mlcanary creates (Serverless / RawDeployment are the old "
        "names); an existing InferenceService keeps the mode its annotation or status says",
    )
    runtime: Literal["mlflow", "sklearn"] = Field(
        "mlflow",
        description="'mlflow': the MLflow model on MLServer (V2 protocol); 'sklearn': KServe's sklearn "
        "server (V1), which needs a pickled model file in the version's artifacts",
    )
    service_account: str | None = Field(
        "mlcanary-models", description="service account of the model pods (storage credentials)"
    )
    logger_url: str | None = Field(
        "http://mlcanary-collector.mlcanary.svc.cluster.local/events",
        description="payload-logger sink (the collector in the cluster); null: no logger",
    )
    logger_mode: Literal["all", "request", "response"] = Field("all", description="what the logger sends")
    min_replicas: int = Field(1, ge=0, le=100, description="predictor minReplicas (0 allows scale to zero)")
    max_replicas: int = Field(3, ge=1, le=1000, description="predictor maxReplicas")
    resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        description="resources of the model container",
    )
    candidate_suffix: str = Field(
        "-canary",
        pattern=r"^-[a-z0-9-]{1,20}$",
        description="Standard mode: the candidate's InferenceService is <model><suffix>",
    )
    gateway: str = Field(
        "istio-system/mlcanary-gateway",
        description="Standard mode: the Istio Gateway our VirtualService binds to (namespace/name)",
    )
    domain: str = Field("example.com", description="ingress domain: hosts are <isvc>.<namespace>.<domain>")
    arm_header: str = Field("x-mlcanary-arm", description="request header that forces an arm")
    arm_cache_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="how long the collector trusts its lookup of a pod's arm and of the shadow phase; "
        "leaving the shadow phase (Standard mode) pauses this long with the mirror off and no "
        "candidate weight, so no copy is filed as live nor a live answer as a copy",
    )
    proxied_artifacts_root: str | None = Field(
        None,
        description="the MLflow server's --artifacts-destination (e.g. s3://mlflow): lets proxied "
        "mlflow-artifacts:/ URIs be resolved to a storage URI KServe can read",
    )
    ready_timeout_s: float = Field(900.0, gt=0, description="longest wait for a revision to be ready")
    request_timeout_s: float = Field(15.0, gt=0, description="timeout of one Kubernetes API request")
    retries: int = Field(5, ge=0, le=20, description="retries of an API call on 5xx, 429 and timeouts")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay (doubles each time, capped at 8 s)")
    ingress_url: str | None = Field(
        None, description="Istio ingress gateway URL for `mlcanary traffic` (e.g. a port-forward)"
    )
    collector_url: str | None = Field(
        None, description="collector URL reachable from where `mlcanary traffic` runs (feedback labels)"
    )


class PrometheusSettings(_Section):
    """Per-arm request counts, latency and 5xx from Istio's standard metrics.

    Queries are ``string.Template`` texts run once per arm: ``$namespace``, ``$workloads`` (a regex
    of that arm's workloads, e.g. ``fraud-predictor-00002-deployment``), ``$range`` (e.g. ``3600s``)
    ``$services`` (a regex of that arm's Kubernetes Services, e.g. ``fraud-canary-predictor``) and
    ``$quantile`` are filled in. ``requests_query`` returns one series per ``code_label`` value,
    ``buckets_query`` one per ``le``, ``quantile_query`` and ``proxy_errors_query`` one series.
    Knative renamed its own metrics across versions; Istio's are stable, but keep the queries here,
    not in code.
    """

    url: str | None = Field(None, description="Prometheus base URL, e.g. http://prometheus.istio-system:9090")
    timeout_s: float = Field(10.0, gt=0, description="timeout of one query")
    min_requests: int = Field(
        20, ge=2, description="requests an arm needs before its latency is used (else: no data)"
    )
    code_label: str = Field("response_code", description="label holding the HTTP status code")
    requests_query: str = Field(
        'sum by (response_code) (increase(istio_requests_total{reporter="destination", '
        'destination_workload_namespace="$namespace", destination_workload=~"$workloads"}[$range]))',
        description="requests of one arm per status code over $range",
    )
    buckets_query: str = Field(
        "sum by (le) (increase(istio_request_duration_milliseconds_bucket{"
        'reporter="destination", destination_workload_namespace="$namespace", '
        'destination_workload=~"$workloads"}[$range]))',
        description="latency histogram buckets (milliseconds) of one arm over $range",
    )
    quantile_query: str = Field(
        "histogram_quantile($quantile, sum by (le) (increase("
        'istio_request_duration_milliseconds_bucket{reporter="destination", '
        'destination_workload_namespace="$namespace", destination_workload=~"$workloads"}[$range])))',
        description="a latency quantile (milliseconds) of one arm over $range",
    )
    proxy_errors_query: str = Field(
        'sum(increase(istio_requests_total{reporter="source", destination_service_namespace="$namespace", '
        'destination_service_name=~"$services", response_code=~"5..", '
        'response_flags=~"UH|UF|UC|UT|URX"}[$range]))',
        description="5xx a proxy answered itself for one arm over $range (no healthy pod, connection "
        "refused or reset, timeout): seen by the sender's proxy only, so reporter=source; $services is "
        "a regex of the arm's Kubernetes Services",
    )


MetricsSourceName = Literal["store", "prometheus"]
#: Checks Prometheus feeds on a cluster by default; the inference log feeds the rest.
PROMETHEUS_CHECKS: tuple[str, ...] = ("error_rate", "error_burst", "latency", "latency_p95")


class TelemetrySettings(_Section):
    """Where inference logs and feedback labels are stored."""

    store_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the inference log; default: inference.db in the state directory",
    )
    drift_max_rows: int = Field(
        2_000,
        ge=100,
        le=200_000,
        description="logged rows per arm used for drift and paired agreement each tick (cost bound)",
    )
    drift_reports: bool = Field(
        True, description="keep the latest Evidently HTML reports in the release's MLflow run"
    )
    reference_dataset: Path | None = Field(
        None,
        description="CSV or Parquet file used as the drift reference (and preflight rows) of every "
        "version; default: the champion's training sample, else its logged inputs",
    )
    reference_window: Duration = Field(
        timedelta(hours=24),
        description="for a champion not trained by mlcanary: its logged inputs received in this "
        "window before the release are the drift reference",
    )
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    sources: dict[str, MetricsSourceName] = Field(
        default_factory=dict,
        description="which source measures each check's numbers ('store' or 'prometheus'); unlisted "
        "checks use the inference log. With prometheus.url set and this empty, Prometheus feeds "
        + ", ".join(PROMETHEUS_CHECKS),
    )

    @model_validator(mode="after")
    def _known_checks(self) -> TelemetrySettings:
        unknown = sorted(set(self.sources) - set(get_args(MetricName)))
        if unknown:
            raise ValueError(f"telemetry.sources names unknown checks: {', '.join(unknown)}")
        return self

    def source_for(self, check: str) -> MetricsSourceName:
        """Where ``check``'s numbers come from (see ``sources``)."""
        if check in self.sources:
            return self.sources[check]
        return "prometheus" if self.prometheus.url and check in PROMETHEUS_CHECKS else "store"


class LeaseSettings(_Section):
    """The per-model lease every action on a release takes (docs/operations.md, "Two runs at once")."""

    ttl: Duration = Field(
        timedelta(minutes=2),
        description="a lease expires this long after it was last renewed: a crashed run blocks its "
        "model at most this long (a live run renews every third of it)",
    )
    max_hold: Duration = Field(
        timedelta(hours=1),
        description="a live run stops renewing after this long (then the lease lapses ttl later)",
    )

    @model_validator(mode="after")
    def _bounded(self) -> LeaseSettings:
        if self.ttl < timedelta(seconds=1) or self.max_hold < self.ttl:
            raise ValueError("lease.ttl must be at least 1s and lease.max_hold at least lease.ttl")
        return self


class Settings(_Section):
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
