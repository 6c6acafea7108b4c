"""Model-level signals for a tick: paired agreement, prediction drift and input drift.

They need the models and the logged inputs, so they sit beside the SQL metrics source as its
``extras`` step (:class:`mlcanary.telemetry.metrics.StoreMetricsSource`). Cost is bounded: at most
``max_rows`` recent logged rows per arm are read, models are loaded once per process and version,
and Evidently samples its inputs (see :mod:`mlcanary.signals.drift`). Signals are measurements; the
checks of :mod:`mlcanary.rollout.checks` judge them against the policy. A signal that cannot be measured is
recorded in ``Measurements.problems`` (its check then reports ``error``), never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import pandas as pd

from mlcanary.registry.protocol import LoadedModel, ModelRegistry
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.model_outputs import OutputNames
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import ReleaseState
from mlcanary.signals.drift import DriftDetector
from mlcanary.signals.paired import NoLabelsError, ScoredModel, agreement_from_logs
from mlcanary.telemetry.store import InferenceLogStore

logger = logging.getLogger(__name__)

ReportSink = Callable[[ReleaseState, str, str], None]
"""Receives (release, file name, HTML) for reports worth keeping (e.g. the MLflow evidence)."""


class NoReferenceError(ValueError):
    """There are no reference rows for input drift (e.g. no logged champion traffic yet)."""


class ModelSignals:
    """The ``extras`` step of the metrics source (see the module docstring)."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        store: InferenceLogStore,
        detector: DriftDetector,
        policy: RolloutPolicy,
        max_rows: int = 2_000,
        reports: ReportSink | None = None,
        outputs: OutputNames | None = None,
        threshold: float = 0.5,
        reference: Callable[[ReleaseState], tuple[pd.DataFrame, str]] | None = None,
    ) -> None:
        self.reference = reference
        self.outputs = outputs or OutputNames()
        self.threshold = threshold
        self.registry = registry
        self.store = store
        self.detector = detector
        self.policy = policy
        self.max_rows = max_rows
        self.reports = reports
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._references: dict[tuple[str, str, str], tuple[pd.DataFrame, str]] = {}

    def _model(self, name: str, version: str) -> LoadedModel:
        key = (name, version)
        if key not in self._models:
            self._models[key] = self.registry.load_model(name, version)
        return self._models[key]

    def _scored(self, name: str, version: str) -> Any:
        """The version as paired agreement scores it: its scorer, else a ``predict_proba`` model."""
        loaded = self._model(name, version)
        if loaded.scorer is None:
            return loaded.model
        return ScoredModel(loaded.scorer, self.outputs, self.threshold)

    def _reference(self, release: ReleaseState) -> tuple[pd.DataFrame, str]:
        key = (release.model, release.champion_version, release.started_at.isoformat())
        if key not in self._references:
            if self.reference is not None:
                self._references[key] = self.reference(release)
            else:
                frame = self.registry.load_reference(release.model, release.champion_version)
                self._references[key] = (frame, f"the training sample of v{release.champion_version}")
        return self._references[key]

    def _logged(self, release: ReleaseState, arm: str, version: str, now: datetime) -> pd.DataFrame:
        frame = self.store.fetch(release.model, arm, since=release.started_at, until=now, limit=self.max_rows)
        frame = frame[frame["version"] == version] if len(frame) else frame
        return frame[frame["prediction"].notna()] if len(frame) else frame

    def _enabled(self, name: str) -> bool:
        check = self.policy.checks.get(name)  # type: ignore[call-overload]
        return bool(check and check.enabled)

    def _threshold(self, name: str) -> float:
        """The policy's threshold of a drift check (Evidently uses it for its per-column tests and
        the HTML report; the verdict is the check's)."""
        threshold = self.policy.checks[name].threshold  # type: ignore[index]
        if threshold is None:
            raise ValueError(f"rollout.checks.{name}.threshold is not set")
        return threshold

    def _report(self, release: ReleaseState, name: str, html: str | None) -> None:
        if html and self.reports is not None:
            try:
                self.reports(release, name, html)
            except Exception as exc:  # keeping a report must never fail the tick
                logger.warning("could not keep %s: %s", name, exc)

    def __call__(
        self, release: ReleaseState, window_start: datetime, now: datetime, m: Measurements
    ) -> Measurements:
        problems = dict(m.problems)
        try:
            champion_rows = self._logged(release, "champion", release.champion_version, now)
            candidate_rows = self._logged(release, "candidate", release.candidate_version, now)
        except Exception as exc:
            reason = f"logged inputs unreadable: {exc}"[:300]
            for name in ("agreement", "prediction_drift", "input_drift"):
                if self._enabled(name):
                    problems[name] = reason
            return replace(m, problems=problems)
        agreement = prediction = inputs = None
        unmeasured = dict(m.unmeasured)
        if min(len(champion_rows), len(candidate_rows)) == 0:
            return m
        if self._enabled("agreement") and "agreement" not in unmeasured:
            try:
                champion = self._scored(release.model, release.champion_version)
                candidate = self._scored(release.model, release.candidate_version)
                kinds = {
                    getattr(getattr(scored, "scorer", None), "inputs", None)
                    for scored in (champion, candidate)
                }
                if any(schema is not None and schema.kind == "tensor" for schema in kinds):
                    unmeasured["agreement"] = "a model takes a tensor: logged inputs are not re-scored"
                else:
                    agreement = agreement_from_logs(
                        champion,
                        candidate,
                        champion_rows,
                        candidate_rows,
                        max_rows=self.max_rows,
                        threshold=self.threshold,
                    )
            except NoLabelsError as exc:
                unmeasured["agreement"] = str(exc)
            except Exception as exc:
                problems["agreement"] = f"{type(exc).__name__}: {exc}"[:300]
        if self._enabled("prediction_drift") and "prediction_drift" not in unmeasured:
            try:
                result = self.detector.prediction_drift(
                    champion_rows["probability"].to_numpy(dtype=float),
                    candidate_rows["probability"].to_numpy(dtype=float),
                    threshold=self._threshold("prediction_drift"),
                    with_html=self.reports is not None,
                )
                prediction = result.score
                self._report(release, "prediction_drift_latest.html", result.html)
            except Exception as exc:
                problems["prediction_drift"] = f"{type(exc).__name__}: {exc}"[:300]
        if self._enabled("input_drift"):
            try:
                features = self._model(release.model, release.candidate_version).features
                reference, source = self._reference(release)
                current = pd.concat([champion_rows, candidate_rows], ignore_index=True)
                result = self.detector.input_drift(
                    reference,
                    current,
                    threshold=self._threshold("input_drift"),
                    features=features or None,
                    with_html=self.reports is not None,
                )
                inputs = replace(result.score, detail=f"{result.score.detail or ''} against {source}".strip())
                self._report(release, "input_drift_latest.html", result.html)
            except NoReferenceError as exc:
                unmeasured["input_drift"] = f"no drift reference: {exc}"
            except Exception as exc:
                problems["input_drift"] = f"{type(exc).__name__}: {exc}"[:300]
        return replace(
            m,
            agreement=agreement,
            prediction_drift=prediction,
            input_drift=inputs,
            problems=problems,
            unmeasured=unmeasured,
        )
