"""The kserve profile assembles the KServe backend and, with Prometheus configured, routes the
checks it feeds there and the rest to the inference log."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcanary.config import ConfigError, load_settings
from mlcanary.serving.kserve.backend import KServeBackend
from mlcanary.telemetry.metrics import StoreMetricsSource
from mlcanary.telemetry.prometheus import PrometheusMetricsSource
from mlcanary.telemetry.sources import CombinedMetricsSource
from mlcanary.testing.fakes import InMemoryRegistry
from mlcanary.wiring import metrics_source, serving_backend

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def kserve_settings(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    base = {
        "state_dir": str(tmp_path),
        "kserve.api_url": "http://127.0.0.1:1",
        "telemetry.store_url": f"sqlite:///{tmp_path / 'inference.db'}",
    }
    return load_settings("kserve", config_dir=CONFIGS, env={}, overrides=base | overrides)


def test_the_kserve_profile_builds_the_kserve_backend_and_both_sources(tmp_path: Path) -> None:
    settings = kserve_settings(tmp_path)
    backend = serving_backend(settings)
    assert isinstance(backend, KServeBackend)
    source = metrics_source(settings, InMemoryRegistry(), backend=backend)
    assert isinstance(source, CombinedMetricsSource)
    assert isinstance(source.sources["prometheus"], PrometheusMetricsSource)
    assert {c: s for c, s in source.routes.items() if s == "prometheus"} == {
        "error_rate": "prometheus",
        "error_burst": "prometheus",
        "latency": "prometheus",
        "latency_p95": "prometheus",
    }


def test_without_prometheus_the_log_feeds_everything(tmp_path: Path) -> None:
    settings = kserve_settings(tmp_path, **{"telemetry.prometheus.url": None})
    assert isinstance(
        metrics_source(settings, InMemoryRegistry(), backend=serving_backend(settings)), StoreMetricsSource
    )


def test_inconsistent_routes_are_a_configuration_error(tmp_path: Path) -> None:
    settings = kserve_settings(tmp_path, **{"telemetry.sources": {"latency_p95": "store"}})
    with pytest.raises(ConfigError, match="share the arm's requests"):
        metrics_source(settings, InMemoryRegistry(), backend=serving_backend(settings))
    with pytest.raises(ConfigError, match="unknown checks: latncy"):
        kserve_settings(tmp_path, **{"telemetry.sources": {"latncy": "store"}})


def test_on_kserve_the_release_gate_checks_signatures_only(tmp_path: Path) -> None:
    # docs/operations.md ("On Kubernetes"): no preflight through a front door before traffic there.
    from mlcanary.serving.release_gate import SignatureGate
    from mlcanary.wiring import release_gate

    settings = kserve_settings(tmp_path)
    gate = release_gate(settings, InMemoryRegistry(), serving_backend(settings))
    assert type(gate) is SignatureGate
