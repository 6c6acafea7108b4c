"""The soak tool (benchmarks/soak) on the real stack, briefly: everything it counts reconciles, and
the same counts with one inference-log row taken away report that event as lost.

A smoke run of the tool, not the soak itself (``make bench-soak`` runs 10 minutes and publishes its
numbers in docs/benchmarks.md): 20 s at a low rate, too short for the release's timeline, so the
soak rolls the canary back by hand at its end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.soak.plan import SoakPlan
from benchmarks.soak.reconcile import reconcile
from benchmarks.soak.report import render
from benchmarks.soak.run import CLIENT, DRIVER, run_soak, soak_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(600)]


def test_a_short_soak_reconciles_and_a_missing_row_is_reported_lost(tmp_path: Path) -> None:
    plan = SoakPlan(rate=5, minutes=1 / 3, sample_s=1.0, start_at=0.0)
    result = run_soak(
        plan, soak_settings(plan, tmp_path, rows=600, estimator="logistic_regression"), tmp_path
    )

    rec = result.reconciliation
    assert [line for line in rec.lines if not line.ok] == []
    assert rec.lost == 0
    assert rec.failures.other == 0, rec.failures.other_kinds
    sent = int(result.client.report["sent"])
    assert sent == pytest.approx(plan.rate * plan.duration_s, abs=1)
    assert len(result.counts.store_rows) == sent  # every request answered by a server, and stored
    assert result.release.rolled_back_by_hand
    assert {"collector", "envoy", "model-champion", "model-candidate", CLIENT, DRIVER} <= set(result.memory)
    assert "### Reconciliation" in render(result, 1.0)

    # The same counts with one answered prediction's row gone: the soak reports it as lost.
    rows = dict(result.counts.store_rows)
    gone = next(iter(rows))
    del rows[gone]
    lossy = reconcile(replace(result.counts, store_rows=rows))
    assert lossy.lost == 1
    assert lossy.lost_ids == [gone]
    assert not lossy.ok
