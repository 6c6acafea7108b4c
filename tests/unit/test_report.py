"""The demo's HTML report: self-contained, escaped, and its summary matches the inputs."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlcanary.demo.report import (
    SUMMARY_COLUMNS,
    ReleaseRecord,
    format_summary_value,
    summary_rows,
    write_report,
)
from mlcanary.rollout.measurements import ArmMetrics, Measurements, Percentiles
from mlcanary.rollout.state import Action, CheckResult, Decision, Phase, ReleaseState
from mlcanary.telemetry.store import InferenceLogStore, InferenceRow

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=10)
ROLLBACK_REASON = "critical check failed: <b>error_burst</b> 0.3 vs 0 (any 5xx & rollback)"


def _check(
    name: str, verdict: str, value: float, baseline: float | None, *, critical: bool = False
) -> CheckResult:
    return CheckResult(
        name=name,
        verdict=verdict,  # type: ignore[arg-type]
        critical=critical,
        advisory=False,
        blocking=verdict != "pass",
        value=value,
        baseline=baseline,
        threshold="≤ champion + 1 pp",
        test="mSPRT α=0.05",
        n_champion=400,
        n_candidate=100,
        ci_low=value - 0.01,
        ci_high=value + 0.01,
        detail="detail <i>here</i>",
    )


def _arm(version: str, requests: int, errors: int, p95: float) -> ArmMetrics:
    return ArmMetrics(
        version=version,
        requests=requests,
        errors=errors,
        latency_ms=Percentiles(p50=p95 / 2, p95=p95, p99=p95 * 1.5),
        predictions=requests - errors,
        positives=(requests - errors) // 4,
        mean_probability=0.3,
    )


def _tick(
    start: datetime, seconds: float, champion: ArmMetrics, candidate: ArmMetrics
) -> tuple[datetime, Measurements]:
    end = start + timedelta(seconds=seconds)
    return end, Measurements(
        start=start, end=end, window_start=end - timedelta(seconds=30), champion=champion, candidate=candidate
    )


def _decision(
    at: datetime, action: Action, reason: str, traffic: int, checks: tuple[CheckResult, ...]
) -> Decision:
    return Decision(action=action, reason=reason, checks=checks, traffic=traffic, at=at)


def _promoted() -> ReleaseRecord:
    checks = (
        _check("error_rate", "pass", 0.001, 0.002, critical=True),
        _check("latency_p95", "pass", 41.0, 40.0),
        _check("positive_rate", "inconclusive", 0.25, 0.24),
    )
    ticks = []
    for i, (action, traffic) in enumerate([("hold", 20), ("hold", 20), ("promote", 100)]):
        end, m = _tick(T0, 60 * (i + 1), _arm("1", 400 * (i + 1), i, 40.0), _arm("2", 100 * (i + 1), 0, 41.0))
        ticks.append((m, _decision(end, action, f"tick {i}: {action}", traffic, checks)))  # type: ignore[arg-type]
    release = ReleaseState(
        model="fraud",
        candidate_version="2",
        champion_version="1",
        phase=Phase.PROMOTED,
        step_index=0,
        traffic=100,
        started_at=T0,
        step_started_at=T0,
        ticks=3,
        reason="all checks passed",
    )
    return ReleaseRecord(title="v2 logistic regression: promoted", release=release, ticks=ticks)


def _rolled_back() -> ReleaseRecord:
    checks = (
        _check("error_burst", "fail", 0.3, 0.0, critical=True),
        _check("latency_p95", "error", 90.0, 40.0),
    )
    end1, m1 = _tick(T1, 20, _arm("2", 300, 0, 40.0), _arm("3", 80, 20, 90.0))
    end2, m2 = _tick(T1, 40, _arm("2", 600, 1, 40.0), _arm("3", 160, 48, 95.0))
    ticks = [
        (m1, _decision(end1, "hold", "baking step 1 of 1 at 20 %", 20, checks)),
        (m2, _decision(end2, "rollback", ROLLBACK_REASON, 0, checks)),
    ]
    release = ReleaseState(
        model="fraud",
        candidate_version="3",
        champion_version="2",
        phase=Phase.ROLLED_BACK,
        step_index=0,
        traffic=0,
        started_at=T1,
        step_started_at=T1,
        ticks=2,
        reason=None,
    )
    return ReleaseRecord(title="v3 broken preprocessing: rolled back", release=release, ticks=ticks)


def _rows(
    start: datetime, seconds: int, versions: dict[str, str], prefix: str, bad: bool
) -> list[InferenceRow]:
    rng = random.Random(len(prefix))
    rows = []
    for i in range(300):
        arm = "candidate" if i % 5 == 0 else "champion"
        failed = bad and arm == "candidate" and i % 3 == 0
        rows.append(
            InferenceRow(
                request_id=f"{prefix}-{i}",
                instance_index=0,
                model="fraud",
                received_at=start + timedelta(seconds=seconds * i / 300),
                arm=arm,
                version=versions[arm],
                status_code=500 if failed else 200,
                latency_ms=rng.uniform(20, 60) * (2 if bad and arm == "candidate" else 1),
                prediction=None if failed else int(i % 4 == 0),
                probability=None if failed else rng.random(),
            )
        )
    return rows


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InferenceLogStore]:
    with InferenceLogStore(f"sqlite:///{tmp_path / 'inference.db'}") as opened:
        opened.write_rows(_rows(T0, 180, {"champion": "1", "candidate": "2"}, "good", bad=False))
        opened.write_rows(_rows(T1, 40, {"champion": "2", "candidate": "3"}, "bad", bad=True))
        # Another model and an unknown arm: never plotted.
        opened.write_rows([InferenceRow("other", 0, "other", T0 + timedelta(seconds=5), arm="champion")])
        yield opened


def _plotly_marker() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()[:80]


def _assert_common(html: str, records: list[ReleaseRecord]) -> None:
    assert html.count(_plotly_marker()) == 1
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert "http://" not in re.sub(r"<script.*?</script>", "", html, flags=re.S).replace(
        "http://www.w3.org", ""
    )
    for record in records:
        assert record.title in html
        for _, decision in record.ticks:
            for check in decision.checks:
                assert f">{check.name}<" in html
    assert "&lt;b&gt;error_burst&lt;/b&gt;" in html
    assert "<b>error_burst</b>" not in html
    assert "detail &lt;i&gt;here&lt;/i&gt;" in html
    assert html.count('class="figure"') == 3 * len(records)


def test_report_with_store_is_self_contained(tmp_path: Path, store: InferenceLogStore) -> None:
    records = [_promoted(), _rolled_back()]

    path = write_report(tmp_path / "out" / "report.html", records, store, title="demo <report>")

    assert path == tmp_path / "out" / "report.html"
    assert path.is_file()
    html = path.read_text(encoding="utf-8")
    _assert_common(html, records)
    assert "<title>demo &lt;report&gt;</title>" in html
    assert "per time bucket" in html  # latency drawn from the inference log
    assert "share of predictions" in html  # probability histograms
    assert path.stat().st_size < 5_000_000
    assert not list(path.parent.glob("*.tmp"))


def test_report_without_store_uses_measurements(tmp_path: Path) -> None:
    records = [_promoted(), _rolled_back()]

    html = write_report(tmp_path / "report.html", records, None).read_text(encoding="utf-8")

    _assert_common(html, records)
    assert "<title>mlcanary demo</title>" in html
    assert "per tick (cumulative since the release started)" in html
    assert "no inference log given" in html


def test_scatter_points_are_downsampled(tmp_path: Path, store: InferenceLogStore) -> None:
    full = write_report(tmp_path / "full.html", [_promoted()], store).stat().st_size
    small = write_report(tmp_path / "small.html", [_promoted()], store, max_points_per_arm=10).stat().st_size

    assert small < full


def test_summary_rows_match_inputs() -> None:
    rows = summary_rows([_promoted(), _rolled_back()])

    assert [set(row) >= {key for key, _ in SUMMARY_COLUMNS} for row in rows] == [True, True]
    promoted, rolled_back = rows
    assert promoted["release"] == "v2 logistic regression: promoted"
    assert promoted["outcome"] == "promoted"
    assert promoted["duration_s"] == 180.0
    assert promoted["ticks"] == 3
    assert promoted["traffic"] == 100
    assert (promoted["champion_requests"], promoted["candidate_requests"]) == (1200, 300)
    assert promoted["champion_error_rate"] == pytest.approx(2 / 1200)
    assert promoted["candidate_error_rate"] == 0.0
    assert (promoted["champion_p95_ms"], promoted["candidate_p95_ms"]) == (40.0, 41.0)
    assert promoted["reason"] == "all checks passed"

    assert rolled_back["outcome"] == "rolled_back"
    assert rolled_back["duration_s"] == 40.0
    assert rolled_back["ticks"] == 2
    assert (rolled_back["champion_requests"], rolled_back["candidate_requests"]) == (600, 160)
    assert rolled_back["candidate_error_rate"] == pytest.approx(48 / 160)
    assert rolled_back["candidate_p95_ms"] == 95.0
    assert rolled_back["reason"] == ROLLBACK_REASON  # the last decision's when the release has none
    assert (rolled_back["champion_version"], rolled_back["candidate_version"]) == ("2", "3")


def test_summary_of_a_release_without_ticks(tmp_path: Path) -> None:
    record = _promoted()
    record.ticks = []

    (row,) = summary_rows([record])

    assert (row["duration_s"], row["ticks"], row["champion_requests"], row["candidate_error_rate"]) == (
        None,
        0,
        0,
        None,
    )
    html = write_report(tmp_path / "r.html", [record], None).read_text(encoding="utf-8")
    assert "No checks were evaluated." in html


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("duration_s", 42.0, "42 s"),
        ("duration_s", 600.0, "10.0 min"),
        ("duration_s", 90_000.0, "25.0 h"),
        ("candidate_error_rate", 0.3, "30.00 %"),
        ("champion_p95_ms", 41.04, "41.0 ms"),
        ("champion_requests", 1200, "1,200"),
        ("traffic", 20, "20 %"),
        ("reason", None, "—"),
    ],
)
def test_format_summary_value(key: str, value: object, text: str) -> None:
    assert format_summary_value(key, value) == text
