"""Several metrics sources behind one ``MetricsSource``: which source feeds which check.

On a cluster the inference log (KServe's payload logger → the collector) sees what the models
answered — predictions, labels, drift — but only HTTP 200 responses, and no latency; Istio's
metrics in Prometheus see every request's status and latency but no prediction. So by default
Prometheus feeds ``error_rate``, ``error_burst``, ``latency`` and ``latency_p95`` and the log the
rest (``telemetry.sources`` changes it). Each check's numbers come from exactly one source, as do
its problems; checks that share a number (``error_rate`` and ``latency_p95`` share the request
count) must share a source, which is checked when the combination is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from datetime import datetime

from mlcanary.rollout.measurements import ArmMetrics, Measurements
from mlcanary.rollout.ports import MetricsSource
from mlcanary.rollout.state import ReleaseState

#: The ArmMetrics fields each check reads (the others read Measurements-level fields, see below).
CHECK_FIELDS: dict[str, tuple[str, ...]] = {
    "error_rate": ("requests", "errors", "proxy_errors"),
    "error_burst": ("window_requests", "window_errors", "window_proxy_errors"),
    "latency": ("log_latency", "latency_ms"),
    "latency_p95": ("requests", "slow", "latency_ms"),
    "positive_rate": ("predictions", "positives", "mean_probability"),
    # The label checks read the arm's label outcomes (requests old enough for their label).
    **dict.fromkeys(
        ("accuracy", "precision", "recall", "f1", "brier", "log_loss", "expected_cost"), ("labels",)
    ),
}
#: Measurements-level fields and the checks reading them.
MEASUREMENT_FIELDS: dict[str, str] = {
    "agreement": "agreement",
    "prediction_drift": "prediction_drift",
    "input_drift": "input_drift",
}


class CombinedMetricsSource:
    """Routes each check's numbers from its source (see the module docstring)."""

    def __init__(self, sources: Mapping[str, MetricsSource], routes: Mapping[str, str], default: str) -> None:
        self.sources = dict(sources)
        self.default = default
        self.routes = {check: routes.get(check, default) for check in (*CHECK_FIELDS, *MEASUREMENT_FIELDS)}
        unknown = {name for name in self.routes.values() if name not in self.sources}
        if unknown:
            raise ValueError(f"no metrics source named {', '.join(sorted(unknown))}")
        self.field_source: dict[str, str] = {}
        for check, names in CHECK_FIELDS.items():
            for name in names:
                source = self.routes[check]
                owner = self.field_source.setdefault(name, source)
                if owner != source:
                    sharing = [c for c, f in CHECK_FIELDS.items() if name in f]
                    raise ValueError(
                        f"checks {' and '.join(sharing)} share the arm's {name}: give them the same source "
                        f"(telemetry.sources), not {owner} and {source}"
                    )

    def measure(self, release: ReleaseState, *, window_start: datetime, now: datetime) -> Measurements:
        used = set(self.routes.values())
        measured = {
            name: self.sources[name].measure(release, window_start=window_start, now=now) for name in used
        }
        base = measured[self.default] if self.default in measured else next(iter(measured.values()))

        def arm(side: str) -> ArmMetrics:
            values = {}
            for f in fields(ArmMetrics):
                source = self.field_source.get(f.name, self.default)
                values[f.name] = getattr(getattr(measured.get(source, base), side), f.name)
            return ArmMetrics(**values)

        problems: dict[str, str] = {}
        for name, result in measured.items():
            for check, reason in result.problems.items():
                if self.routes.get(check, self.default) == name:
                    problems[check] = reason
        extra = {
            attr: getattr(measured[self.routes[check]], attr) for check, attr in MEASUREMENT_FIELDS.items()
        }
        return replace(base, champion=arm("champion"), candidate=arm("candidate"), problems=problems, **extra)
