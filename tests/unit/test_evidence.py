"""Release evidence in a real MLflow SQLite store: one run per release, metrics per tick, decisions."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlcanary.registry.evidence import MlflowEvidence
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.rollout.measurements import ArmMetrics, Measurements, Percentiles
from mlcanary.rollout.state import CheckResult, Decision, Phase, ReleaseState
from mlcanary.rollout.stats import MeanSummary

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
