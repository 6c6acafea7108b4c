"""Smoke runs of the model-server benchmark, so the benchmark keeps working between ``make bench`` runs.

``--micro`` (in ``make test``, seconds): our model server on a small model and both Envoys, a few
requests of each kind, every answer equal to a direct ``predict_proba``, the report rendered.
``--smoke`` (``make test-long``): the same with KServe's server beside ours (its start alone takes
tens of seconds) and every goal row of the report. The figures themselves come from ``make bench``.
"""

from __future__ import annotations

import argparse

import pytest

from benchmarks.model_server.__main__ import run
from benchmarks.model_server.plan import MICRO, SMOKE
from benchmarks.model_server.report import render

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_micro_run_checks_every_answer_of_our_server_and_both_envoys() -> None:
    results = run(argparse.Namespace(quick=True, omp_threads=None), MICRO)

    assert set(results.verdicts) == {"ours", "hop"}  # no KServe in the micro run
    for verdict in results.verdicts.values():
        assert verdict.checked > 0
        assert verdict.wrong == 0, verdict.first_problem
    assert len(results.sequential["ours"].latencies_ms) == MICRO.sequential
    assert set(results.closed) == set(MICRO.connections)
    assert set(results.hop) == set(results.hop_ready) == {"direct", "our Envoy", "minimal Envoy"}
    assert all(status == 200 for samples in results.hop_ready.values() for status in samples.statuses)
    report = render(results)
    assert "KServe's not started in this run" in report
    assert "hop within +0.1 ms of a minimal Envoy at P50" in report


@pytest.mark.long
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
