"""Assemble the rollout engine from the configuration: the one place adapters are chosen.

Everything is built on demand from ``Settings`` (nothing at import), and any seam can be replaced
by passing it in, which is how tests swap in the fakes of :mod:`mlcanary.testing.fakes`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mlcanary.config import ConfigError, Settings
from mlcanary.signals.reference_source import ReferenceConfig

if TYPE_CHECKING:
    from mlcanary.registry.evidence import MlflowEvidence
    from mlcanary.registry.mlflow_registry import MlflowRegistry
    from mlcanary.registry.protocol import ModelRegistry
    from mlcanary.rollout.engine import RolloutEngine
    from mlcanary.rollout.lease import ReleaseLease
    from mlcanary.rollout.ports import Clock, EvidenceRecorder, MetricsSource, Notifier, ReleaseGate
    from mlcanary.rollout.serving import ServingBackend

# The adapters are imported where they are built: `mlcanary status` needs only `serving_backend`
# and `reference_config`, and must not pay for MLflow, pandas or the engine.


def reference_config(settings: Settings) -> ReferenceConfig:
    """Where drift references come from (``telemetry.reference_*``, ``data.target``)."""
    dataset = settings.telemetry.reference_dataset
    return ReferenceConfig(
        dataset=None if dataset is None else dataset.expanduser().resolve(),
        window=settings.telemetry.reference_window,
        target=settings.data.target,
        max_rows=settings.telemetry.drift_max_rows,
    )


def serving_backend(settings: Settings) -> ServingBackend:
    """The configured serving backend: the local stack, or KServe on the cluster of ``kserve.*``."""
    if settings.serving.backend == "local":
        from mlcanary.serving.local.backend import LocalBackend

        return LocalBackend(settings)
    from mlcanary.serving.kserve.backend import KServeBackend

    return KServeBackend.from_settings(settings)


def metrics_source(
    settings: Settings,
    registry: ModelRegistry,
    recorder: MlflowEvidence | None = None,
    backend: ServingBackend | None = None,
) -> MetricsSource:
    """Measurements from the inference log at ``telemetry.store_url``, with model signals
    (paired agreement, Evidently drift) from the logged inputs and the registered models; with
    ``telemetry.prometheus.url`` set, the checks routed to Prometheus (``telemetry.sources``) take
    their numbers from Istio's metrics of the arms' workloads, which ``backend`` names."""
    from mlcanary.signals.drift import EvidentlyDriftDetector
    from mlcanary.signals.model_signals import ModelSignals
    from mlcanary.signals.reference import reference_rows
    from mlcanary.telemetry.metrics import StoreMetricsSource
    from mlcanary.telemetry.store import InferenceLogStore

    store = InferenceLogStore(settings.store_url)
    signals = ModelSignals(
        registry=registry,
        store=store,
        detector=EvidentlyDriftDetector(max_rows=settings.telemetry.drift_max_rows),
        policy=settings.rollout,
        max_rows=settings.telemetry.drift_max_rows,
        reports=recorder.attach_report if recorder is not None and settings.telemetry.drift_reports else None,
        outputs=settings.model.outputs,
        threshold=settings.training.decision_threshold,
        reference=lambda release: reference_rows(
            reference_config(settings),
            registry,
            store,
            release.model,
            release.champion_version,
            release.started_at,
        ),
    )
    proxy_errors = None
    if settings.serving.backend == "local":
        from mlcanary.serving.local.proxy_errors import EnvoyProxyErrors

        proxy_errors = EnvoyProxyErrors.from_settings(settings)
    logged = StoreMetricsSource(
        store, extras=signals, label_delay=settings.rollout.labels.delay, proxy_errors=proxy_errors
    )
    routes = {check: settings.telemetry.source_for(check) for check in settings.rollout.checks}
    if "prometheus" not in routes.values():
        return logged
    from mlcanary.telemetry.prometheus import PrometheusMetricsSource
    from mlcanary.telemetry.sources import CombinedMetricsSource

    workloads = getattr(backend, "workloads", None)
    if workloads is None or not settings.telemetry.prometheus.url:
        raise ConfigError(
            "telemetry.sources routes checks to Prometheus, which needs telemetry.prometheus.url and "
            "serving.backend 'kserve' (it names the arms' workloads)"
        )
    prometheus = PrometheusMetricsSource(
        settings.telemetry.prometheus,
        namespace=settings.kserve.namespace,
        workloads=backend,  # type: ignore[arg-type]
    )
    try:
        return CombinedMetricsSource({"store": logged, "prometheus": prometheus}, routes, default="store")
    except ValueError as exc:
        raise ConfigError(f"telemetry.sources: {exc}") from None


def release_gate(settings: Settings, registry: ModelRegistry, backend: ServingBackend) -> ReleaseGate:
    """What vets a candidate before a release moves traffic: on the local stack, signatures and a
    preflight through the front door on reference rows; elsewhere, signatures."""
    from mlcanary.serving.local.backend import LocalBackend
    from mlcanary.serving.local.preflight import LocalReleaseGate
    from mlcanary.serving.release_gate import SignatureGate

    if not isinstance(backend, LocalBackend):
        return SignatureGate(registry)
    from mlcanary.rollout.ports import SystemClock
    from mlcanary.signals.reference import reference_rows
    from mlcanary.telemetry.store import InferenceLogStore

    store = InferenceLogStore(settings.store_url)
    clock = SystemClock()

    def rows(model: str, champion: str):  # type: ignore[no-untyped-def]
        return reference_rows(reference_config(settings), registry, store, model, champion, clock.now())

    return LocalReleaseGate(
        backend,
        registry,
        rows=rows,
        outputs=settings.model.outputs,
        threshold=settings.training.decision_threshold,
    )


def evidence_recorder(settings: Settings, registry: MlflowRegistry) -> MlflowEvidence:
    """Release evidence in the experiment ``<mlflow.experiment>-releases`` of the same MLflow;
    what MLflow cannot take yet waits in the inference-log database (``telemetry.store_url``)."""
    from mlcanary.registry.evidence import MlflowEvidence
    from mlcanary.telemetry.evidence_outbox import StoreEvidenceOutbox

    return MlflowEvidence(
        registry.client,
        f"{settings.mlflow.experiment}-releases",
        artifact_location=settings.artifact_location,
        retry=registry.retry,
        outbox=StoreEvidenceOutbox.from_url(settings.store_url),
    )


def release_lease(settings: Settings, label: str = "mlcanary") -> ReleaseLease:
    """The per-model lease in the inference-log database (``lease.ttl``, ``lease.max_hold``);
    ``label`` says who holds it (shown to a run that yields)."""
    from mlcanary.telemetry.lease import StoreLease

    return StoreLease.from_url(
        settings.store_url, label=label, ttl=settings.lease.ttl, max_hold=settings.lease.max_hold
    )


def build_engine(
    settings: Settings,
    *,
    backend: ServingBackend | None = None,
    metrics: MetricsSource | None = None,
    clock: Clock | None = None,
    recorder: EvidenceRecorder | None = None,
    notifier: Notifier | None = None,
    gate: ReleaseGate | None = None,
    lease: ReleaseLease | None = None,
    runner: str = "mlcanary",
) -> RolloutEngine:
    """A :class:`RolloutEngine` on the configured registry, backend, metrics and evidence store,
    under the lease of :func:`release_lease` (``runner`` names this run to one that yields)."""
    from mlcanary.notify.apprise import notifier_from_env
    from mlcanary.notify.message import mlflow_run_link
    from mlcanary.registry.mlflow_registry import registry_from_settings
    from mlcanary.rollout.engine import RolloutEngine
    from mlcanary.rollout.ports import SystemClock

    registry = registry_from_settings(settings)
    backend = backend or serving_backend(settings)
    evidence = evidence_recorder(settings, registry)
    return RolloutEngine(
        registry=registry,
        backend=backend,
        metrics=metrics or metrics_source(settings, registry, evidence, backend),
        policy=settings.rollout,
        clock=clock or SystemClock(),
        gate=gate or release_gate(settings, registry, backend),
        lease=lease or release_lease(settings, runner),
        recorder=recorder or evidence,
        notifier=notifier
        or notifier_from_env(
            os.environ,
            evidence_link=lambda release: mlflow_run_link(settings.tracking_uri, release.release_run_id),
        ),
    )
