"""The soak's reconciliation and memory verdict (benchmarks/soak): a loss anywhere is reported."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.soak.client import ClientRecord
from benchmarks.soak.memory import FLAT_MIB_PER_MIN, MIB, memory_trend
from benchmarks.soak.reconcile import Counts, StoreRow, classify, reconcile

RUN = "abc123"


def _record(
    i: int, status: int = 200, arm: str = "champion", server: str | None = "champion"
) -> ClientRecord:
    return ClientRecord(t_ns=i, request_id=f"{RUN}-{i}", status=status, arm_served=arm, server_arm=server)


def _counts(records: list[ClientRecord], *, labels: int = 2) -> Counts:
    """What every part of a stack that lost nothing would have counted for ``records``."""
    served = [r for r in records if r.server_arm is not None]
    access = [
        {"request_id": r.request_id, "response_code": str(r.status), "upstream_cluster": r.arm_served}
        for r in records
    ]
    access.append({"request_id": "preflight", "response_code": "200", "upstream_cluster": "candidate"})
    per_arm = {
        arm: sum(1 for line in access if line["upstream_cluster"] == arm) for arm in ("champion", "candidate")
    }
    return Counts(
        run_id=RUN,
        records=records,
        client={"sent": len(records), "shed": 0, "errors": {}, "feedback_sent": labels},
        access_log=access,
        envoy_stats={
            "http.ingress_http.downstream_rq_completed": len(access),
            **{f"cluster.{arm}.upstream_rq_completed": n for arm, n in per_arm.items()},
        },
        store_rows={r.request_id: StoreRow(r.server_arm, r.status, True, True) for r in served},
        store_halves=(len(served), len(served)),
        labels_stored=labels,
        collector={"request_events": len(served), "response_events": len(served), "store_errors": 0},
        loggers={
            "champion": {"enqueued": 10, "sent": 10, "dropped": 0, "failed": 0, "pending": 0, "final": 1},
            "candidate": {"enqueued": 4, "sent": 4, "dropped": 0, "failed": 0, "pending": 0},
        },
    )


RECORDS = [
    _record(0),
    _record(1),
    _record(2, arm="candidate", server="candidate"),
    _record(3, status=500, arm="candidate", server="candidate"),  # the candidate's own fault
]


def test_nothing_lost_reconciles() -> None:
    result = reconcile(_counts(RECORDS))
    assert [line.name for line in result.lines if not line.ok] == []
    assert result.lost == 0
    assert result.failures.candidate == 1
    assert result.failures.other == 0
    assert result.ok


def test_a_missing_row_is_a_lost_event() -> None:
    counts = _counts(RECORDS)
    rows = dict(counts.store_rows)
    del rows[f"{RUN}-2"]
    result = reconcile(replace(counts, store_rows=rows))
    assert result.lost == 1
    assert result.lost_ids == [f"{RUN}-2"]
    assert not result.ok


def test_a_row_stored_under_another_arm_or_status_counts_as_lost() -> None:
    counts = _counts(RECORDS)
    rows = {**counts.store_rows, f"{RUN}-3": StoreRow("candidate", 200, True, True)}
    assert reconcile(replace(counts, store_rows=rows)).lost_ids == [f"{RUN}-3"]


def test_a_row_missing_its_request_half_does_not_reconcile() -> None:
    counts = _counts(RECORDS)
    rows = {**counts.store_rows, f"{RUN}-3": StoreRow("candidate", 500, False, True)}
    result = reconcile(replace(counts, store_rows=rows, store_halves=(3, 4)))
    failing = {line.name for line in result.lines if not line.ok}
    assert "rows missing a half" in failing
    assert "collector: request events acknowledged = request halves stored" in failing
    assert not result.ok


def test_an_acknowledged_label_missing_is_lost() -> None:
    result = reconcile(replace(_counts(RECORDS, labels=2), labels_stored=1))
    assert result.lost == 1
    assert not result.ok


def test_logger_failures_and_envoy_disagreeing_are_reported() -> None:
    counts = _counts(RECORDS)
    loggers = {**counts.loggers, "candidate": {**counts.loggers["candidate"], "failed": 2}}
    stats = {**counts.envoy_stats, "cluster.candidate.upstream_rq_completed": 7}
    result = reconcile(replace(counts, loggers=loggers, envoy_stats=stats))
    failing = {line.name for line in result.lines if not line.ok}
    assert any(name.startswith("candidate payload logger: dropped + failed") for name in failing)
    assert any("routed to candidate" in name for name in failing)


def test_failures_are_classified_by_fault() -> None:
    records = [
        _record(0, status=500, arm="candidate", server="candidate"),
        _record(1, status=503, arm="candidate", server=None),  # Envoy answered: the server was gone
        _record(2, status=500, arm="champion", server="champion"),
    ]
    failures = classify(records, {"errors": {"ReadTimeout": 2}, "shed": 1})
    assert failures.candidate == 1
    assert failures.other == 5
    assert failures.other_kinds["transport: ReadTimeout"] == 2
    assert failures.other_kinds["shed by the client (concurrency limit)"] == 1


def test_memory_slope_and_flat_verdict() -> None:
    minutes = [i / 6 for i in range(60)]  # every 10 s for 10 min
    growing = [(m * 60, int((300 + 2.0 * m) * MIB)) for m in minutes]
    trend = memory_trend("leaky", growing, warmup_s=60)
    assert trend.slope_mib_per_min == pytest.approx(2.0, rel=1e-3)
    assert trend.flat is False
    # A warm-up ramp (the first minute) is left out of the slope.
    settling = [(m * 60, int((300 if m >= 1 else 100 + 200 * m) * MIB)) for m in minutes]
    flat = memory_trend("settled", settling, warmup_s=60)
    assert abs(flat.slope_mib_per_min or 0.0) <= FLAT_MIB_PER_MIN
    assert flat.flat is True
    assert (flat.start_mib, flat.max_mib) == (pytest.approx(100.0), pytest.approx(300.0))
    # A process ready late (a model server loading its model) is judged from its readiness.
    late = memory_trend("late", settling, warmup_s=10, ready_s=60)
    assert late.flat is True
    assert memory_trend("short", growing[:3], warmup_s=0).flat is None
