"""Smoke run of the model-server benchmark (``python -m benchmarks.model_server --smoke``).

A few requests of each kind, so ``make test`` keeps the benchmark working: both model servers load
the same trained version, every answer equals a direct ``predict_proba``, both Envoys forward, and
the report has every goal row. The figures themselves come from ``make bench``.
"""

from __future__ import annotations

import argparse

import pytest

from benchmarks.model_server.__main__ import run
from benchmarks.model_server.plan import SMOKE
from benchmarks.model_server.report import render

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]


def test_the_smoke_run_checks_every_answer_and_reports_every_goal() -> None:
    results = run(argparse.Namespace(quick=True, omp_threads=None), SMOKE)

    for name in ("ours", "kserve", "hop"):
        verdict = results.verdicts[name]
        assert verdict.checked > 0
        assert verdict.wrong == 0, verdict.first_problem
    assert len(results.sequential["ours"].latencies_ms) == SMOKE.sequential
    assert set(results.closed) == set(SMOKE.connections)
    assert set(results.hop) == set(results.hop_ready) == {"direct", "our Envoy", "minimal Envoy"}
    assert all(status == 200 for samples in results.hop_ready.values() for status in samples.statuses)
    report = render(results)
    for goal in (
        "P50 at 1 connection no worse than KServe's",
        "throughput at 8 connections ≥ 1.5× KServe's",
        "every answer identical to a direct `predict_proba`",
        "hop within +0.1 ms of a minimal Envoy at P99",
    ):
        assert goal in report
