"""Evidence of a release in MLflow: one run per release, metrics per tick, decisions as JSON.

The run lives in the experiment ``<mlflow.experiment>-releases`` and is named
``release-<model>-v<candidate>``. Each tick logs the side-by-side metrics at ``step = tick`` (so
the MLflow UI charts them over the window) and the decision, with every check, as
``decisions/tick-NNNNN.json``; reports (e.g. Evidently HTML) go under ``reports/``. Every call is
safe to repeat: a metric logged twice at the same step is the same point, artifacts are
overwritten.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric

from mlcanary.registry.retry import NO_RETRY, RetryPolicy, call_with_retry
from mlcanary.rollout import tags
from mlcanary.rollout.measurements import ArmMetrics, Measurements
from mlcanary.rollout.state import Decision, ReleaseState

T = TypeVar("T")
ACTION_CODES = {"hold": 0, "step_up": 1, "await_approval": 3, "promote": 2, "rollback": -1}


def _arm_metrics(prefix: str, arm: ArmMetrics) -> dict[str, float]:
    values: dict[str, float | None] = {
        "requests": arm.requests,
        "error_rate": arm.error_rate,
        "positive_rate": arm.positive_rate,
        "mean_probability": arm.mean_probability,
        "accuracy": arm.accuracy,
        "labeled": arm.labeled,
    }
    if arm.latency_ms is not None:
        values |= {
            "latency_p50_ms": arm.latency_ms.p50,
            "latency_p95_ms": arm.latency_ms.p95,
            "latency_p99_ms": arm.latency_ms.p99,
        }
    return {f"{prefix}.{k}": float(v) for k, v in values.items() if v is not None}


def tick_metrics(measurements: Measurements, decision: Decision) -> dict[str, float]:
    """The numbers charted per tick: both arms side by side, traffic and the action taken."""
    metrics = {
        **_arm_metrics("champion", measurements.champion),
        **_arm_metrics("candidate", measurements.candidate),
        "traffic.candidate_percent": float(decision.traffic),
        "decision.action": float(ACTION_CODES[decision.action]),
    }
    if measurements.agreement is not None and measurements.agreement.rate is not None:
        metrics["paired.agreement"] = measurements.agreement.rate
        if measurements.agreement.mean_abs_dp is not None:
            metrics["paired.mean_abs_dp"] = measurements.agreement.mean_abs_dp
    if measurements.prediction_drift is not None:
        metrics["drift.prediction"] = measurements.prediction_drift.value
    if measurements.input_drift is not None:
        metrics["drift.input_share"] = measurements.input_drift.value
    return metrics


class MlflowEvidence:
    """``EvidenceRecorder`` writing to an MLflow tracking server (see the module docstring)."""

    def __init__(
        self,
        client: MlflowClient,
        experiment: str,
        *,
        artifact_location: str | None = None,
        retry: RetryPolicy = NO_RETRY,
    ) -> None:
        self.client = client
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.retry = retry

    def _retried(self, what: str, call: Callable[[], T]) -> T:
        """``call`` retried like the registry's calls (every write here is safe to repeat)."""
        return call_with_retry(self.retry, f"release evidence: {what}", call, where="MLflow")

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    def begin(self, release: ReleaseState) -> str | None:
        return self._retried("begin", lambda: self._begin(release))

    def _begin(self, release: ReleaseState) -> str | None:
        run = self.client.create_run(
            self._experiment_id(),
            run_name=f"release-{release.model}-v{release.candidate_version}",
            tags=tags.release_run_tags(release),
        )
        return run.info.run_id

    def _artifact(self, run_id: str, name: str, text: str, folder: str | None) -> None:
        with tempfile.TemporaryDirectory(prefix="mlcanary-evidence-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.client.log_artifact(run_id, str(path), folder)

    def record_tick(self, release: ReleaseState, measurements: Measurements, decision: Decision) -> None:
        if release.release_run_id:
            self._retried("record_tick", lambda: self._record_tick(release, measurements, decision))

    def _record_tick(self, release: ReleaseState, measurements: Measurements, decision: Decision) -> None:
        run_id = str(release.release_run_id)
        stamp = int(decision.at.timestamp() * 1000)
        metrics = [
            Metric(k, v, stamp, release.ticks) for k, v in tick_metrics(measurements, decision).items()
        ]
        self.client.log_batch(run_id, metrics=metrics)
        self.client.set_tag(run_id, tags.tag_name(tags.RUN_PHASE), release.phase.value)
        self._artifact(run_id, f"tick-{release.ticks:05d}.json", decision.to_json(), "decisions")

    def attach_report(self, release: ReleaseState, name: str, html: str) -> None:
        """Store a report (e.g. Evidently HTML) under ``reports/`` of the release run."""
        run_id = release.release_run_id
        if run_id:
            self._retried("attach_report", lambda: self._artifact(run_id, name, html, "reports"))

    def finish(self, release: ReleaseState) -> None:
        if release.release_run_id:
            self._retried("finish", lambda: self._finish(release))

    def _finish(self, release: ReleaseState) -> None:
        run_id = str(release.release_run_id)
        self.client.set_tag(run_id, tags.tag_name(tags.RUN_PHASE), release.phase.value)
        self.client.set_tag(
            run_id, tags.tag_name(tags.RUN_OUTCOME_REASON), (release.reason or "")[: tags.MAX_TAG_VALUE]
        )
        summary = {"phase": release.phase.value, "reason": release.reason, "ticks": release.ticks}
        self._artifact(run_id, "outcome.json", json.dumps(summary), None)
        status = "FINISHED" if release.phase.value == "promoted" else "KILLED"
        self.client.set_terminated(run_id, status, end_time=int(time.time() * 1000))
