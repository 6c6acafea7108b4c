"""Model signals per tick: paired agreement and drift from logged inputs (fake detector, real store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcanary.data.synthetic import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    generate_transactions,
)
from mlcanary.rollout.measurements import ArmMetrics, Measurements
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.signals.model_signals import ModelSignals
from mlcanary.telemetry.store import InferenceLogStore, InferenceRow
from mlcanary.testing.drift import ThresholdDriftDetector
from mlcanary.testing.fakes import InMemoryRegistry
from models.pipeline import build_pipeline

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _fit(frame: pd.DataFrame, *, flip: bool = False):  # type: ignore[no-untyped-def]
    labels = 1 - frame[TARGET] if flip else frame[TARGET]
    pipeline = build_pipeline(
        "logistic_regression", {}, numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES
    )
    return pipeline.fit(frame[list(FEATURES)], labels)


class Registry(InMemoryRegistry):
    def __init__(self, reference: pd.DataFrame) -> None:
        super().__init__()
        self.reference = reference

    def load_reference(self, name: str, version: str) -> pd.DataFrame:
        return self.reference


def _log(
    store: InferenceLogStore, model, arm: str, version: str, rows: pd.DataFrame, prefix: str = ""
) -> None:  # type: ignore[no-untyped-def]
    proba = model.predict_proba(rows[list(FEATURES)])[:, 1]
    store.write_rows(
        InferenceRow(
            request_id=f"{prefix}{arm}-{i}",
            instance_index=0,
            model="fraud",
            received_at=T0 + timedelta(seconds=i),
            arm=arm,
            version=version,
            status_code=200,
            latency_ms=10.0,
            features={k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
            prediction=int(p >= 0.5),
            probability=float(p),
        )
        for i, ((_, row), p) in enumerate(zip(rows[list(FEATURES)].iterrows(), proba, strict=True))
    )


def _release() -> ReleaseState:
    return ReleaseState("fraud", "2", "1", Phase.PROGRESSING, 0, 20, T0, T0)


def _empty() -> Measurements:
    return Measurements(start=T0, end=T0, window_start=T0, champion=ArmMetrics(), candidate=ArmMetrics())


@pytest.mark.parametrize(
    ("flip", "shift", "agree_high", "input_drifted"), [(False, 0.0, True, False), (True, 2.0, False, True)]
)
def test_signals_from_logged_inputs(
    tmp_path: Path, flip: bool, shift: float, agree_high: bool, input_drifted: bool
) -> None:
    from mlcanary.data.synthetic import DriftKnobs

    train = generate_transactions(3000, seed=1)
    champion = _fit(train)
    candidate = _fit(train, flip=flip)
    registry = Registry(train[list(FEATURES)])
    registry.add_version("fraud", champion)
    registry.add_version("fraud", candidate)
    store = InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}")
    traffic = generate_transactions(600, seed=2, knobs=DriftKnobs(covariate_shift=shift))
    _log(store, champion, "champion", "1", traffic.iloc[:400])
    _log(store, candidate, "candidate", "2", traffic.iloc[400:])
    # A row of another version on the candidate arm must be ignored.
    _log(store, champion, "candidate", "9", traffic.iloc[:5], prefix="other-")

    reports: list[str] = []
    signals = ModelSignals(
        registry=registry,
        store=store,
        detector=ThresholdDriftDetector(max_rows=1000),
        policy=RolloutPolicy(),
        max_rows=1000,
        reports=lambda release, name, html: reports.append(name),
    )
    m = signals(_release(), T0, T0 + timedelta(hours=1), _empty())

    assert m.problems == {}
    assert m.agreement is not None
    assert m.agreement.n == 600
    rate = m.agreement.rate
    assert rate is not None
    assert rate > 0.9 if agree_high else rate < 0.5
    assert m.input_drift is not None
    limit = RolloutPolicy().checks["input_drift"].threshold
    assert limit is not None
    assert (m.input_drift.value >= limit) is input_drifted
    assert m.prediction_drift is not None
    assert {"input_drift_latest.html", "prediction_drift_latest.html"} <= set(reports)


def test_a_failing_model_load_becomes_a_problem_not_a_crash(tmp_path: Path) -> None:
    train = generate_transactions(500, seed=1)
    registry = Registry(train[list(FEATURES)])
    registry.add_version("fraud", _fit(train))
    registry.add_version("fraud", None)  # a candidate whose model cannot predict
    store = InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}")
    _log(store, _fit(train), "champion", "1", train.iloc[:50])
    _log(store, _fit(train), "candidate", "2", train.iloc[50:100])
    signals = ModelSignals(
        registry=registry, store=store, detector=ThresholdDriftDetector(), policy=RolloutPolicy()
    )
    m = signals(_release(), T0, T0 + timedelta(hours=1), _empty())
    assert "agreement" in m.problems
    assert m.agreement is None
    assert np.isfinite(m.prediction_drift.value if m.prediction_drift else 0.0)
