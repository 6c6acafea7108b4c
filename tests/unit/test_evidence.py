"""Release evidence in a real MLflow SQLite store: one run per release, metrics per tick, decisions;
what MLflow cannot take while it is away kept in the inference-log database (SQLite and a real
PostgreSQL) and written, once, when it answers again."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from mlcanary.registry.evidence import MlflowEvidence
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.registry.retry import RetryPolicy
from mlcanary.rollout.measurements import ArmMetrics, Measurements, Percentiles
from mlcanary.rollout.state import CheckResult, Decision, Phase, ReleaseState
from mlcanary.rollout.stats import MeanSummary
from mlcanary.rollout.versions import RegistryUnavailableError
from mlcanary.telemetry.evidence_outbox import StoreEvidenceOutbox

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def _measurements(candidate_errors: int) -> Measurements:
    def arm(errors: int) -> ArmMetrics:
        return ArmMetrics(
            requests=400,
            errors=errors,
            log_latency=MeanSummary(n=400, mean=math.log(20), variance=0.1, log_scale=True),
            latency_ms=Percentiles(20, 30, 40),
            predictions=400,
            positives=16,
        )

    return Measurements(start=T0, end=T0, window_start=T0, champion=arm(4), candidate=arm(candidate_errors))


def _decision(action: str, at: datetime) -> Decision:
    check = CheckResult("error_rate", "pass", True, False, False, 0.01, 0.01, "tol", "mSPRT", 400, 400)
    return Decision(action=action, reason=f"{action} because", checks=(check,), traffic=20, at=at)  # type: ignore[arg-type]


def test_release_run_holds_ticks_decisions_and_outcome(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    registry = registry_from_settings(settings)
    evidence = MlflowEvidence(registry.client, f"evidence-{settings.model.name}")
    state = ReleaseState(settings.model.name, "2", "1", Phase.PROGRESSING, 0, 20, T0, T0)

    run_id = evidence.begin(state)
    assert run_id
    state = ReleaseState(**{**state.__dict__, "release_run_id": run_id, "ticks": 1})
    evidence.record_tick(state, _measurements(4), _decision("hold", T0 + timedelta(minutes=1)))
    state = ReleaseState(**{**state.__dict__, "ticks": 2})
    evidence.record_tick(state, _measurements(40), _decision("rollback", T0 + timedelta(minutes=2)))
    final = ReleaseState(**{**state.__dict__, "phase": Phase.ROLLED_BACK, "reason": "5xx"})
    evidence.finish(final)

    client = registry.client
    history = client.get_metric_history(run_id, "candidate.error_rate")
    assert [(m.step, m.value) for m in history] == [(1, 0.01), (2, 0.1)]
    assert [m.value for m in client.get_metric_history(run_id, "decision.action")] == [0.0, -1.0]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlcanary.phase"] == "rolled_back"
    files = {f.path for f in client.list_artifacts(run_id, "decisions")}
    assert files == {"decisions/tick-00001.json", "decisions/tick-00002.json"}
    local = client.download_artifacts(run_id, "decisions/tick-00002.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["action"] == "rollback"
    evidence.attach_report(final, "input_drift_latest.html", "<html>report</html>")
    assert {f.path for f in client.list_artifacts(run_id, "reports")} == {"reports/input_drift_latest.html"}


# -- MLflow away for longer than the retries: the evidence is kept, then written ----------------


class _Unreachable:
    """The real client while ``down`` is False; while it is True every call fails the way a
    stopped server does for MLflow's client (a refused connection)."""

    def __init__(self, inner: MlflowClient) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise requests.ConnectionError(f"{name}: connection refused")
            return attribute(*args, **kwargs)

        return call


class _ForgetsToRemoveOnce:
    """The real outbox whose first ``remove`` fails: a crash between a write and its removal."""

    def __init__(self, inner: StoreEvidenceOutbox) -> None:
        self.inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def remove(self, entry_id: int) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("crashed before removing the entry")
        self.inner.remove(entry_id)


FAST = RetryPolicy(attempts=2, first_delay_s=0.0, max_delay_s=0.0)


def test_evidence_mlflow_cannot_take_is_kept_and_written_once_it_answers(
    make_settings, store_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    model = settings.model.name
    client = _Unreachable(registry_from_settings(settings).client)
    outbox = _ForgetsToRemoveOnce(StoreEvidenceOutbox.from_url(store_url))
    evidence = MlflowEvidence(client, f"evidence-{model}", retry=FAST, outbox=outbox)  # type: ignore[arg-type]
    state = ReleaseState(model, "2", "1", Phase.PROGRESSING, 0, 20, T0, T0)
    run_id = evidence.begin(state)
    state = ReleaseState(**{**state.__dict__, "release_run_id": run_id, "ticks": 1})
    evidence.record_tick(state, _measurements(4), _decision("hold", T0 + timedelta(minutes=1)))

    # MLflow goes away after the tick's outcome was persisted: nothing raises, everything is kept.
    client.down = True
    state = ReleaseState(**{**state.__dict__, "ticks": 2})
    evidence.record_tick(state, _measurements(40), _decision("rollback", T0 + timedelta(minutes=2)))
    evidence.attach_report(state, "input_drift_latest.html", "<html>report</html>")
    final = ReleaseState(**{**state.__dict__, "phase": Phase.ROLLED_BACK, "reason": "5xx"})
    evidence.finish(final)
    assert [entry for _, entry in outbox.pending(model)] != []
    assert len(outbox.pending(model)) == 3
    assert evidence.pending_models() == [model]
    with pytest.raises(RegistryUnavailableError, match="release evidence: kept tick failed 2 times"):
        evidence.flush(model)
    assert len(outbox.pending(model)) == 3

    real = client.inner
    assert [m.step for m in real.get_metric_history(run_id, "candidate.error_rate")] == [1]
    assert real.get_run(run_id).info.status == "RUNNING"

    # Back: the first write crashes before its entry is removed, so the next flush repeats it.
    client.down = False
    with pytest.raises(RuntimeError, match="crashed before removing"):
        evidence.flush(model)
    assert len(outbox.pending(model)) == 3
    assert evidence.flush(model) == 3
    assert outbox.pending(model) == []
    assert evidence.pending_models() == []
    assert evidence.flush(model) == 0

    history = real.get_metric_history(run_id, "candidate.error_rate")
    assert [(m.step, m.value) for m in history] == [(1, 0.01), (2, 0.1)]  # written once each
    assert [m.value for m in real.get_metric_history(run_id, "decision.action")] == [0.0, -1.0]
    run = real.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlcanary.phase"] == "rolled_back"
    assert json.loads(Path(real.download_artifacts(run_id, "outcome.json", str(tmp_path))).read_text()) == {
        "phase": "rolled_back",
        "reason": "5xx",
        "ticks": 2,
    }
    files = {f.path for f in real.list_artifacts(run_id, "decisions")}
    assert files == {"decisions/tick-00001.json", "decisions/tick-00002.json"}
    local = real.download_artifacts(run_id, "decisions/tick-00002.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["action"] == "rollback"
    assert {f.path for f in real.list_artifacts(run_id, "reports")} == {"reports/input_drift_latest.html"}


def test_an_unreadable_outbox_delays_no_write_and_evidence_that_cannot_be_kept_fails_the_call(
    make_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    model = settings.model.name
    client = _Unreachable(registry_from_settings(settings).client)
    outbox = StoreEvidenceOutbox.from_url(f"sqlite:///{tmp_path / 'inference.db'}")
    evidence = MlflowEvidence(client, f"evidence-{model}", retry=FAST, outbox=outbox)  # type: ignore[arg-type]
    state = ReleaseState(model, "2", "1", Phase.PROGRESSING, 0, 20, T0, T0)
    run_id = evidence.begin(state)
    state = ReleaseState(**{**state.__dict__, "release_run_id": run_id, "ticks": 1})
    (tmp_path / "inference.db").unlink()
    (tmp_path / "inference.db").mkdir()  # the inference-log database cannot be opened any more
    outbox._engine.dispose()

    evidence.record_tick(state, _measurements(4), _decision("hold", T0 + timedelta(minutes=1)))
    assert [m.step for m in client.inner.get_metric_history(run_id, "candidate.error_rate")] == [1]

    client.down = True
    state = ReleaseState(**{**state.__dict__, "ticks": 2})
    with pytest.raises(RegistryUnavailableError, match="release evidence: tick failed 2 times"):
        evidence.record_tick(state, _measurements(4), _decision("hold", T0 + timedelta(minutes=2)))
