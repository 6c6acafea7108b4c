"""Training against a real MLflow SQLite registry: aliases, gate, lineage tags, reference sample."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlcanary.data.loader import DataError, prepare
from mlcanary.data.synthetic import FEATURES, TARGET, generate_transactions
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.status import read_status
from mlcanary.rollout.versions import ModelNotFoundError, VersionNotFoundError
from mlcanary.training import (
    ChampionScore,
    GateResult,
    TrainingError,
    offline_gate,
    split_dataset,
    train,
)

# -- the offline gate is pure: a table ---------------------------------------------------------

GATE_CASES = [
    # metric, candidate, champion (None = no champion), tolerance, expected outcome
    ("roc_auc", 0.80, None, 0.005, "first_version"),
    ("roc_auc", 0.80, 0.80, 0.0, "passed"),
    ("roc_auc", 0.796, 0.80, 0.005, "passed"),
    ("roc_auc", 0.794, 0.80, 0.005, "failed"),
    ("roc_auc", 0.90, 0.80, 0.0, "passed"),
    ("log_loss", 0.20, 0.18, 0.01, "failed"),
    ("log_loss", 0.185, 0.18, 0.01, "passed"),
    ("log_loss", 0.10, 0.18, 0.0, "passed"),
    ("f1", 0.40, 0.50, 0.2, "passed"),
]


@pytest.mark.parametrize(("metric", "candidate", "champion", "tolerance", "expected"), GATE_CASES)
def test_offline_gate_table(
    metric: str, candidate: float, champion: float | None, tolerance: float, expected: str
) -> None:
    score = None if champion is None else ChampionScore("3", {metric: champion})
    gate = offline_gate(metric, {metric: candidate}, score, tolerance)  # type: ignore[arg-type]
    assert gate.outcome == expected
    assert gate.candidate_value == candidate
    assert gate.champion_value == champion
    assert metric in gate.reason
    if champion is not None:
        assert "v3" in gate.reason


def test_offline_gate_fails_when_the_champion_cannot_be_scored() -> None:
    score = ChampionScore("2", error="its features are missing from this data: amount")
    gate = offline_gate("roc_auc", {"roc_auc": 0.99}, score, 0.005)
    assert gate.outcome == "failed"
    assert not gate.passed
    assert "amount" in gate.reason


# -- the whole run on a real registry -----------------------------------------------------------


def test_first_version_becomes_champion_with_lineage(make_settings) -> None:
    settings = make_settings()
    registry = registry_from_settings(settings)
    outcome = train(settings, registry)

    assert outcome.version == "1"
    assert outcome.alias == CHAMPION
    assert outcome.gate.outcome == "first_version"
    assert registry.aliases(settings.model.name) == {CHAMPION: "1"}
    info = registry.get_version(settings.model.name, "1")
    assert info.tag("data_fingerprint") == outcome.data_fingerprint
    assert info.tag("git_commit") == outcome.git_commit
    assert info.tag("gate") == "first_version"
    assert float(info.tag("metric.roc_auc")) == pytest.approx(outcome.metrics["roc_auc"], rel=1e-5)
    assert info.tag("rejected") is None


def test_registered_model_round_trips_with_signature_and_reference(make_settings) -> None:
    settings = make_settings()
    registry = registry_from_settings(settings)
    train(settings, registry)

    loaded = registry.load_model(settings.model.name, "1")
    assert [f.name for f in loaded.features] == list(FEATURES)
    kinds = {f.name: f.kind for f in loaded.features}
    assert kinds["merchant_category"] == "categorical"
    assert kinds["amount"] == "numeric"
    rows = generate_transactions(50, seed=99)[list(FEATURES)]
    proba = loaded.model.predict_proba(rows)
    assert proba.shape == (50, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)

    reference = registry.load_reference(settings.model.name, "1")
    assert list(reference.columns) == list(FEATURES)
    assert len(reference) == settings.training.reference_rows
    assert TARGET not in reference.columns


def test_better_version_becomes_candidate_and_worse_is_rejected(make_settings) -> None:
    baseline = make_settings(
        **{"model.estimator": "random_forest", "model.params": {"max_depth": 1, "n_estimators": 3}}
    )
    registry = registry_from_settings(baseline)
    assert train(baseline, registry).alias == CHAMPION

    better = train(make_settings(**{"model.estimator": "logistic_regression"}), registry)
    assert better.alias == CANDIDATE
    assert better.gate.outcome == "passed"
    assert better.champion_version == "1"
    assert better.metrics["roc_auc"] > better.champion_metrics["roc_auc"]

    overfit = make_settings(
        **{
            "model.estimator": "hist_gradient_boosting",
            "model.params": {"learning_rate": 0.9, "max_iter": 200, "early_stopping": False},
        }
    )
    worse = train(overfit, registry)
    assert worse.alias is None
    assert worse.gate.outcome == "failed"
    info = registry.get_version(baseline.model.name, worse.version)
    assert info.tag("rejected") == worse.gate.reason
    assert "worse than the champion" in worse.reason
    assert registry.aliases(baseline.model.name) == {CHAMPION: "1", CANDIDATE: better.version}


def test_existing_candidate_is_not_replaced_unless_asked(make_settings) -> None:
    settings = make_settings()
    registry = registry_from_settings(settings)
    train(settings, registry)
    assert train(settings, registry).alias == CANDIDATE  # same data and model: passes at Δ = 0

    third = train(settings, registry)
    assert third.alias is None
    assert "already @candidate" in third.reason
    assert registry.aliases(settings.model.name)[CANDIDATE] == "2"

    forced = train(make_settings(**{"training.replace_candidate": True}), registry)
    assert forced.alias == CANDIDATE
    assert registry.aliases(settings.model.name)[CANDIDATE] == forced.version


def test_champion_with_other_features_fails_the_gate(make_settings, tmp_path) -> None:
    settings = make_settings()
    registry = registry_from_settings(settings)
    train(settings, registry)

    frame = generate_transactions(3000, seed=5).drop(columns=["amount"])
    csv = tmp_path / "no_amount.csv"
    frame.to_csv(csv, index=False)
    outcome = train(make_settings(**{"data.source": "file", "data.path": str(csv)}), registry)
    assert outcome.alias is None
    assert outcome.gate.outcome == "failed"
    assert "amount" in outcome.reason


def test_training_on_a_users_file(make_settings, tmp_path) -> None:
    frame = generate_transactions(2500, seed=11).rename(columns={TARGET: "label"})
    path = tmp_path / "transactions.parquet"
    frame.to_parquet(path)
    settings = make_settings(**{"data.source": "file", "data.path": str(path), "data.target": "label"})
    outcome = train(settings, registry_from_settings(settings))
    assert outcome.alias == CHAMPION
    assert outcome.data_source == str(path)


def test_unknown_factory_is_a_clear_error(make_settings) -> None:
    settings = make_settings(**{"model.factory": "models.nowhere:build"})
    with pytest.raises(TrainingError, match=r"models\.nowhere"):
        train(settings, registry_from_settings(settings))


def test_bad_hyperparameter_is_a_clear_error(make_settings) -> None:
    settings = make_settings(**{"model.params": {"not_a_param": 1}})
    with pytest.raises(TrainingError, match="not_a_param"):
        train(settings, registry_from_settings(settings))


def test_single_class_data_cannot_be_split() -> None:
    frame = generate_transactions(300, seed=1)
    frame[TARGET] = 0
    dataset = prepare(frame, TARGET, source="memory")
    with pytest.raises(DataError, match="single class"):
        split_dataset(dataset, test_size=0.25, seed=0)


def test_split_is_stratified_and_deterministic() -> None:
    dataset = prepare(generate_transactions(4000, seed=2), TARGET, source="memory")
    first = split_dataset(dataset, test_size=0.25, seed=7)
    second = split_dataset(dataset, test_size=0.25, seed=7)
    pd.testing.assert_frame_equal(first.holdout, second.holdout)
    assert len(first.holdout) == 1000
    assert first.holdout[TARGET].mean() == pytest.approx(dataset.y.mean(), abs=0.005)


# -- registry errors and status -----------------------------------------------------------------


def test_registry_errors_for_unknown_model_and_version(make_settings) -> None:
    settings = make_settings()
    registry = registry_from_settings(settings)
    with pytest.raises(ModelNotFoundError):
        registry.aliases("no-such-model")
    train(settings, registry)
    with pytest.raises(VersionNotFoundError):
        registry.get_version(settings.model.name, "42")
    with pytest.raises(VersionNotFoundError):
        registry.set_alias(settings.model.name, CANDIDATE, "42")
    registry.delete_alias(settings.model.name, CANDIDATE)  # absent: a no-op, not an error
    assert registry.aliases(settings.model.name) == {CHAMPION: "1"}


def test_status_reports_aliases_and_leaves_unknowns_null(make_settings) -> None:
    settings = make_settings()
    registry = registry_from_settings(settings)
    train(settings, registry)
    train(settings, registry)
    status = read_status(registry, settings.model.name)
    data = json.loads(status.model_dump_json())
    assert data["champion_version"] == "1"
    assert data["candidate_version"] == "2"
    assert data["phase"] is None
    assert data["traffic"] is None
    assert data["last_decision"] is None
    assert [v["version"] for v in data["versions"]] == ["1", "2"]
    assert data["versions"][0]["aliases"] == [CHAMPION]


def test_status_reads_phase_and_last_decision_tags(make_settings) -> None:
    settings = make_settings()
    registry = registry_from_settings(settings)
    train(settings, registry)
    train(settings, registry)
    decision = {"action": "hold", "reason": "bake time not reached", "checks": [{"name": "5xx"}]}
    registry.set_tags(
        settings.model.name,
        "2",
        {
            "mlcanary.phase": "progressing",
            "mlcanary.started_at": "2026-03-01T00:00:00+00:00",
            "mlcanary.last_decision": json.dumps(decision),
        },
    )
    status = read_status(registry, settings.model.name)
    assert status.phase == "progressing"
    assert status.last_decision is not None
    assert status.last_decision.action == "hold"
    assert status.last_decision.checks == [{"name": "5xx"}]


def test_gate_result_passed_property() -> None:
    assert GateResult("passed", "roc_auc", 0.8, 0.8, 0.0, "").passed
    assert GateResult("first_version", "roc_auc", 0.8, None, 0.0, "").passed
    assert not GateResult("failed", "roc_auc", 0.7, 0.8, 0.0, "").passed
