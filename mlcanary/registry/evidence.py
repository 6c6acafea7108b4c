"""Evidence of a release in MLflow: one run per release, metrics per tick, decisions as JSON.

The run lives in the experiment ``<mlflow.experiment>-releases`` and is named
``release-<model>-v<candidate>``. Each tick logs the side-by-side metrics at ``step = tick`` (so
the MLflow UI charts them over the window) and the decision, with every check, as
``decisions/tick-NNNNN.json``; reports (e.g. Evidently HTML) go under ``reports/``. Every call is
safe to repeat: a metric logged twice at the same step is the same point, artifacts are
overwritten.

Nothing is lost while MLflow is away. Each write (a tick's evidence, a report, a release's outcome)
is one JSON entry; one that still fails after the retries is kept in an :class:`EvidenceOutbox`
(the inference-log database, :mod:`mlcanary.telemetry.evidence_outbox`) instead of failing the tick
whose outcome was already persisted, and every later call for the same model first writes what
was kept, oldest first (:meth:`MlflowEvidence.flush`). Without an outbox a write that fails raises.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric
from sqlalchemy.exc import SQLAlchemyError

from mlcanary.registry.retry import NO_RETRY, RetryPolicy, call_with_retry
from mlcanary.rollout import tags
from mlcanary.rollout.measurements import ArmMetrics, Measurements
from mlcanary.rollout.state import Decision, ReleaseState
from mlcanary.rollout.versions import RegistryUnavailableError

logger = logging.getLogger(__name__)
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


class EvidenceOutbox(Protocol):
    """Where writes MLflow could not take yet wait, per model, in the order they were added; every
    runner of the engine must see the same outbox. ``remove`` of an id already removed is a no-op."""

    def add(self, model: str, entry: str) -> None: ...

    def pending(self, model: str) -> list[tuple[int, str]]: ...

    def remove(self, entry_id: int) -> None: ...

    def models(self) -> list[str]: ...


class MlflowEvidence:
    """``EvidenceRecorder`` writing to an MLflow tracking server (see the module docstring)."""

    def __init__(
        self,
        client: MlflowClient,
        experiment: str,
        *,
        artifact_location: str | None = None,
        retry: RetryPolicy = NO_RETRY,
        outbox: EvidenceOutbox | None = None,
    ) -> None:
        self.client = client
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.retry = retry
        self.outbox = outbox

    def _retried(self, what: str, call: Callable[[], T]) -> T:
        """``call`` retried like the registry's calls (every write here is safe to repeat)."""
        return call_with_retry(self.retry, f"release evidence: {what}", call, where="MLflow")

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    def begin(self, release: ReleaseState) -> str | None:
        self._flush_quietly(release.model)
        return self._retried("begin", lambda: self._begin(release))

    def _begin(self, release: ReleaseState) -> str | None:
        run = self.client.create_run(
            self._experiment_id(),
            run_name=f"release-{release.model}-v{release.candidate_version}",
            tags=tags.release_run_tags(release),
        )
        return run.info.run_id

    def record_tick(self, release: ReleaseState, measurements: Measurements, decision: Decision) -> None:
        if not release.release_run_id:
            return
        stamp, step = int(decision.at.timestamp() * 1000), release.ticks
        entry = {
            "op": "tick",
            "run_id": release.release_run_id,
            "metrics": [[k, v, stamp, step] for k, v in tick_metrics(measurements, decision).items()],
            "phase": release.phase.value,
            "artifact": f"tick-{release.ticks:05d}.json",
            "decision": decision.to_json(),
        }
        self._deliver(release.model, entry)

    def attach_report(self, release: ReleaseState, name: str, html: str) -> None:
        """Store a report (e.g. Evidently HTML) under ``reports/`` of the release run."""
        if release.release_run_id:
            entry = {"op": "report", "run_id": release.release_run_id, "name": name, "html": html}
            self._deliver(release.model, entry)

    def finish(self, release: ReleaseState) -> None:
        if not release.release_run_id:
            return
        summary = {"phase": release.phase.value, "reason": release.reason, "ticks": release.ticks}
        entry = {
            "op": "finish",
            "run_id": release.release_run_id,
            "phase": release.phase.value,
            "reason": (release.reason or "")[: tags.MAX_TAG_VALUE],
            "outcome": json.dumps(summary),
            "status": "FINISHED" if release.phase.value == "promoted" else "KILLED",
            "end_time": int(time.time() * 1000),
        }
        self._deliver(release.model, entry)

    # -- writing, and keeping what MLflow cannot take yet -----------------------------------------

    def _deliver(self, model: str, entry: dict[str, Any]) -> None:
        """Write ``entry`` after what was kept for ``model``; keep it too if MLflow stays away."""
        if self.outbox is None:
            self._retried(entry["op"], lambda: self._write(entry))
            return
        try:
            self.flush(model)
            self._retried(entry["op"], lambda: self._write(entry))
        except RegistryUnavailableError as unavailable:
            self._keep(model, entry, unavailable)
        except SQLAlchemyError as exc:
            # The outbox cannot be read: this write must not wait for it (what it holds, if
            # anything, is written later, after this one).
            logger.warning("kept evidence of %s cannot be read (%s): writing this one now", model, exc)
            try:
                self._retried(entry["op"], lambda: self._write(entry))
            except RegistryUnavailableError as unavailable:
                self._keep(model, entry, unavailable)

    def _keep(self, model: str, entry: dict[str, Any], unavailable: RegistryUnavailableError) -> None:
        assert self.outbox is not None
        try:
            self.outbox.add(model, json.dumps(entry))
        except Exception as exc:
            logger.error("could not keep the %s evidence of %s either: %s", entry["op"], model, exc)
            raise unavailable from exc
        logger.warning(
            "%s; the %s evidence of %s (run %s) is kept and written once MLflow answers",
            unavailable,
            entry["op"],
            model,
            entry["run_id"],
        )

    def flush(self, model: str) -> int:
        """Write what was kept for ``model``, oldest first; returns how many entries were written.
        Raises ``RegistryUnavailableError`` (keeping the rest) when MLflow is still away; an entry
        MLflow refuses for good (e.g. its run was deleted) is logged and dropped."""
        if self.outbox is None:
            return 0
        written = 0
        for entry_id, text in self.outbox.pending(model):
            try:
                entry = json.loads(text)
                self._retried(f"kept {entry['op']}", partial(self._write, entry))
            except RegistryUnavailableError:
                raise
            except Exception as exc:
                logger.error("dropped kept evidence of %s that MLflow refuses: %s", model, exc)
            else:
                written += 1
            self.outbox.remove(entry_id)
        if written:
            logger.info("wrote %d kept evidence entries of %s to MLflow", written, model)
        return written

    def _flush_quietly(self, model: str) -> None:
        try:
            self.flush(model)
        except Exception as exc:  # still kept; the call that follows reports an unreachable MLflow
            logger.warning("kept evidence of %s not written yet: %s", model, exc)

    def pending_models(self) -> list[str]:
        """The models with evidence kept while MLflow was away."""
        return [] if self.outbox is None else self.outbox.models()

    def _write(self, entry: dict[str, Any]) -> None:
        _WRITERS[entry["op"]](self, entry)

    def _write_tick(self, entry: dict[str, Any]) -> None:
        run_id = entry["run_id"]
        metrics = [Metric(key, value, stamp, step) for key, value, stamp, step in entry["metrics"]]
        self.client.log_batch(run_id, metrics=metrics)
        self.client.set_tag(run_id, tags.tag_name(tags.RUN_PHASE), entry["phase"])
        self._artifact(run_id, entry["artifact"], entry["decision"], "decisions")

    def _write_report(self, entry: dict[str, Any]) -> None:
        self._artifact(entry["run_id"], entry["name"], entry["html"], "reports")

    def _write_finish(self, entry: dict[str, Any]) -> None:
        run_id = entry["run_id"]
        self.client.set_tag(run_id, tags.tag_name(tags.RUN_PHASE), entry["phase"])
        self.client.set_tag(run_id, tags.tag_name(tags.RUN_OUTCOME_REASON), entry["reason"])
        self._artifact(run_id, "outcome.json", entry["outcome"], None)
        self.client.set_terminated(run_id, entry["status"], end_time=entry["end_time"])

    def _artifact(self, run_id: str, name: str, text: str, folder: str | None) -> None:
        with tempfile.TemporaryDirectory(prefix="mlcanary-evidence-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.client.log_artifact(run_id, str(path), folder)


_WRITERS: dict[str, Callable[[MlflowEvidence, dict[str, Any]], None]] = {
    "tick": MlflowEvidence._write_tick,
    "report": MlflowEvidence._write_report,
    "finish": MlflowEvidence._write_finish,
}
