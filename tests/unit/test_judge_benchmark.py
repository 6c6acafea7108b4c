"""The judge benchmark (``benchmarks/judge``): its simulated streams follow their truth, the real
judge and the baselines behave as their rules say on scenarios with an obvious answer, and the
report renders. The numbers themselves come from ``make bench-judge``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.judge import baselines
from benchmarks.judge.ours import run
from benchmarks.judge.report import END, START, goals, markdown, plot, write_block
from benchmarks.judge.run import cadences, run_all
from benchmarks.judge.streams import LABEL_SHARE, simulate
from benchmarks.judge.truth import ModelTruth, Scenario, measure_models, scenarios


@pytest.fixture(scope="module")
def models() -> ModelTruth:
    return measure_models(test_rows=10_000)


@pytest.fixture(scope="module")
def by_name(models: ModelTruth) -> dict[str, Scenario]:
    return {s.name: s for s in scenarios(models)}


def test_the_real_models_give_the_scenarios_their_meaning(models: ModelTruth) -> None:
    assert models.flipped.positive_rate > 0.9 > 0.05 > models.champion.positive_rate
    assert models.flipped_agreement < 0.1
    assert 0.5 < models.cents_agreement < 0.9
    assert models.better_agreement > 0.95


def test_a_stream_follows_its_truth(by_name: dict[str, Scenario]) -> None:
    scenario = by_name["err_1_3"]
    cadence = cadences()["15m"]
    stream = simulate(
        scenario, total_rps=50, candidate_share=0.2, dt=60, buckets=600, horizon_s=36_000, seed=3
    )
    for arm, truth in ((stream.champion, scenario.champion), (stream.candidate, scenario.candidate)):
        n = arm.requests.sum()
        assert n == pytest.approx(600 * 60 * 50 * (0.8 if truth is scenario.champion else 0.2), rel=0.02)
        assert arm.errors.sum() / n == pytest.approx(
            truth.error_rate, abs=5 * math.sqrt(truth.error_rate / n)
        )
        mean_log = arm.log_sum.sum() / n
        assert mean_log == pytest.approx(math.log(truth.latency.median), abs=0.01)
        variance = (arm.log_sumsq.sum() - n * mean_log**2) / (n - 1)
        assert variance == pytest.approx(truth.latency.sigma**2, rel=0.05)
        ok = n - arm.errors.sum()
        assert arm.cells.sum() / ok == pytest.approx(LABEL_SHARE, abs=0.01)
        assert arm.positives.sum() / ok == pytest.approx(truth.outcomes.positive_rate, abs=0.005)
    assert stream.champion.slow.sum() / stream.champion.requests.sum() == pytest.approx(0.05, abs=0.005)
    assert cadence.buckets == 48 * 60 + 15


@pytest.mark.parametrize("name", ["flip", "cents"])
def test_ours_rolls_back_a_broken_model_within_two_looks_of_the_floor(
    by_name: dict[str, Scenario], name: str
) -> None:
    for cadence, rate in (("15m", 1.0), ("demo", 10.0)):
        for seed in range(3):
            outcome = run(by_name[name], cadences()[cadence], rate, seed)
            assert outcome.action == "rollback", outcome
            assert outcome.looks_after_floor is not None
            assert outcome.looks_after_floor <= 2
            assert "positive_rate" in outcome.reason or "agreement" in outcome.reason


def test_ours_promotes_identical_models_after_the_minimum_duration(by_name: dict[str, Scenario]) -> None:
    outcome = run(by_name["aa"], cadences()["15m"], 10.0, seed=1)
    assert outcome.action == "promote"
    assert outcome.at_s == pytest.approx(24 * 3600)


def test_baselines_follow_their_documented_rules(by_name: dict[str, Scenario]) -> None:
    cadence = cadences()["15m"]

    def stream(name: str, rate: float = 10.0):  # type: ignore[no-untyped-def]
        return simulate(
            by_name[name],
            total_rps=rate * 5,
            candidate_share=0.2,
            dt=60,
            buckets=cadence.buckets,
            horizon_s=cadence.horizon_s,
            seed=5,
            with_baseline=True,
        )

    # No model signals: a label flip serves five healthy-looking minutes and is promoted.
    flip = baselines.flagger(by_name["flip"], stream("flip"))
    assert flip.action == "promote"
    assert 300 <= flip.at_s < 600  # five passing minutes (a chance failed minute only delays it)
    slow = baselines.flagger(by_name["lat_x3"], stream("lat_x3"))
    assert (slow.action, slow.at_s) == ("rollback", 300)
    assert baselines.kayenta(by_name["lat_x3"], stream("lat_x3")).action == "rollback"
    assert baselines.kayenta(by_name["lat_x3"], stream("lat_x3")).at_s == 3600
    fixed = baselines.fixed_window(by_name["err_1_3"], stream("err_1_3"), cadence.policy, seed=0)
    assert (fixed.action, fixed.at_s) == ("rollback", 24 * 3600)
    assert "error_rate" in fixed.reason
    assert baselines.fixed_window(by_name["aa"], stream("aa"), cadence.policy, seed=0).action == "promote"


def test_power_limit_is_the_textbook_two_proportion_sample_size(by_name: dict[str, Scenario]) -> None:
    limit = baselines.power_limit(by_name["err_1_3"], 0.2)
    assert limit is not None
    assert limit.metric == "error_rate"
    z = 1.6449 + 0.8416
    expected = z * z * (0.03 * 0.97 + 0.01 * 0.99 / 4) / 0.02**2
    assert limit.canary_requests == pytest.approx(expected, rel=1e-3)
    assert baselines.power_limit(by_name["aa"], 0.2) is None


@pytest.mark.slow
def test_the_report_renders_every_scenario_and_goal(models: ModelTruth, tmp_path: Path) -> None:
    results = run_all(runs=1, good_runs=1, aa_runs=1, workers=2, models=models)
    plots = plot(results, tmp_path / "img", tmp_path)
    assert all((tmp_path / path).stat().st_size > 10_000 for path in plots.values())
    text = markdown(results, "python -m benchmarks.judge --runs 1", plots)
    assert "### Goals" in text
    for scenario in results.scenarios:
        assert scenario.title in text
    assert len(goals(results)) == 5
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"intro\n{START}\nOLD-BLOCK-CONTENT\n{END}\noutro\n")
    write_block(doc, text)
    written = doc.read_text()
    assert written.startswith("intro\n")
    assert written.endswith("outro\n")
    assert "OLD-BLOCK-CONTENT" not in written
    assert "### Goals" in written
    assert np.isfinite([c.median_hours for c in results.cells if c.promoted or c.rolled_back]).all()


def test_the_shadow_phase_rejects_a_flip_and_passes_identical_models(
    models: ModelTruth, by_name: dict[str, Scenario]
) -> None:
    from benchmarks.judge.shadow import run_shadow, shadow_policy

    policy = shadow_policy()
    flip = run_shadow(by_name["flip"], models, policy, live_rps=1.0, seed=0)
    assert flip.action == "rejected"
    assert "agreement" in flip.reason
    assert flip.at_s <= policy.shadow.duration.total_seconds()  # before the shadow's minimum duration
    same = run_shadow(by_name["aa"], models, policy, live_rps=1.0, seed=0)
    assert same.action == "passed"
    assert same.at_s >= policy.shadow.duration.total_seconds()
