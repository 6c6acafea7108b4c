"""The sections of mlcanary's configuration: one pydantic model per ``configs/<profile>.yaml`` key.

Every default lives here, so a profile file only says what differs; :class:`~mlcanary.config.Settings`
puts the sections together and :func:`~mlcanary.config.load_settings` reads them from files and the
environment. Every model is frozen and refuses unknown fields.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlcanary.rollout.output_names import OutputNames
from mlcanary.rollout.policy import Duration, MetricName

Metric = Literal["roc_auc", "average_precision", "f1", "precision", "recall", "accuracy", "log_loss"]
ModelName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="registered model name in MLflow (letters, digits, '.', '_', '-')",
    ),
]
Port = Annotated[int, Field(ge=1, le=65535)]


def http_url(host: str, port: int) -> str:
    """``http://<host>:<port>``, an IPv6 literal in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ConfigSection(BaseModel):
    """A part of the configuration: frozen, unknown fields refused, numbers accepted for strings."""

    # Environment values are parsed as YAML, so MLCANARY_MODEL__NAME=2024 arrives as an int.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class MlflowRetrySettings(ConfigSection):
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


class MlflowSettings(ConfigSection):
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


class SyntheticDataSettings(ConfigSection):
    """The bundled card-transaction generator (used when ``data.source`` is ``synthetic``)."""

    rows: int = Field(20_000, ge=200, le=20_000_000, description="number of rows to generate")
    seed: int = Field(0, ge=0, description="random seed; the same seed gives the same rows")
    covariate_shift: float = Field(
        0.0, ge=0.0, le=5.0, description="feature shift in standard deviations (0 = none)"
    )
    fraud_rate: float = Field(0.04, gt=0.0, lt=1.0, description="share of fraudulent rows")
    noise: float = Field(0.0, ge=0.0, le=0.5, description="share of labels flipped at random")


class DataSettings(ConfigSection):
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


class ModelSettings(ConfigSection):
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


class TrainingSettings(ConfigSection):
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


class ServingSettings(ConfigSection):
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


class KServeSettings(ConfigSection):
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


class PrometheusSettings(ConfigSection):
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


class TelemetrySettings(ConfigSection):
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


class LeaseSettings(ConfigSection):
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
