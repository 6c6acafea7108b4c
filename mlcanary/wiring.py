"""Assemble the rollout engine from the configuration: the one place adapters are chosen.

Everything is built on demand from ``Settings`` (nothing at import), and any seam can be replaced
by passing it in, which is how tests swap in the fakes of :mod:`mlcanary.fakes`.
"""

from __future__ import annotations

import os

from mlcanary.config import Settings
from mlcanary.evidence import MlflowEvidence
from mlcanary.notify import mlflow_run_link, notifier_from_env
from mlcanary.registry import MlflowRegistry, ModelRegistry, registry_from_settings
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.ports import Clock, EvidenceRecorder, MetricsSource, Notifier, SystemClock
from mlcanary.serving.backend import ServingBackend


def serving_backend(settings: Settings) -> ServingBackend:
    """The configured serving backend."""
    if settings.serving.backend == "local":
        from mlcanary.serving.local.backend import LocalBackend

        return LocalBackend(settings)
    raise NotImplementedError(
        "serving.backend 'kserve' is not available yet in this version (see the KServe issue); "
        "use the local backend"
    )


def metrics_source(
    settings: Settings, registry: ModelRegistry, recorder: MlflowEvidence | None = None
) -> MetricsSource:
    """Measurements from the inference log at ``telemetry.store_url``, with model signals
    (paired agreement, Evidently drift) from the logged inputs and the registered models."""
    from mlcanary.drift import EvidentlyDriftDetector
    from mlcanary.signals import ModelSignals
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
    )
    return StoreMetricsSource(store, extras=signals, label_delay=settings.rollout.labels.delay)


def evidence_recorder(settings: Settings, registry: MlflowRegistry) -> MlflowEvidence:
    """Release evidence in the experiment ``<mlflow.experiment>-releases`` of the same MLflow."""
    return MlflowEvidence(
        registry.client,
        f"{settings.mlflow.experiment}-releases",
        artifact_location=settings.artifact_location,
    )


def build_engine(
    settings: Settings,
    *,
    backend: ServingBackend | None = None,
    metrics: MetricsSource | None = None,
    clock: Clock | None = None,
    recorder: EvidenceRecorder | None = None,
    notifier: Notifier | None = None,
) -> RolloutEngine:
    """A :class:`RolloutEngine` on the configured registry, backend, metrics and evidence store."""
    registry = registry_from_settings(settings)
    evidence = MlflowEvidence(
        registry.client,
        f"{settings.mlflow.experiment}-releases",
        artifact_location=settings.artifact_location,
    )
    return RolloutEngine(
        registry=registry,
        backend=backend or serving_backend(settings),
        metrics=metrics or metrics_source(settings, registry, evidence),
        policy=settings.rollout,
        clock=clock or SystemClock(),
        recorder=recorder or evidence,
        notifier=notifier
        or notifier_from_env(
            os.environ,
            evidence_link=lambda release: mlflow_run_link(settings.tracking_uri, release.release_run_id),
        ),
    )
