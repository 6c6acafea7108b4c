"""The shadow phase where people look: the HTML report's plots, the Prefect artifact's line and the
live view, from a release rejected in shadow on the in-memory fakes and a real SQLite log."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from rich.console import Console

from mlcanary.demo.live import TickRecorder, release_view
from mlcanary.demo.report import write_report
from mlcanary.demo.summary import ReleaseRecord
from mlcanary.rollout.policy import RolloutPolicy, ShadowPolicy
from mlcanary.rollout.ports import NullRecorder
from mlcanary.rollout.state import Phase
from mlcanary.telemetry.store import InferenceLogStore, InferenceRow
from mlcanary.testing.fakes import FakeWorld, steady_traffic
from mlcanary.views.check_table import shadow_line
from tasks.rollout import decision_markdown

POLICY = RolloutPolicy(
    steps=[20],
    min_samples_per_arm=100,
    max_duration="2h",
    min_duration="1h",
    shadow=ShadowPolicy(enabled=True, duration="10m", min_samples=100, share=0.5),
)


def rejected_in_shadow() -> tuple[FakeWorld, ReleaseRecord, TickRecorder]:
    world = FakeWorld(POLICY)
    world.metrics = steady_traffic(0.01, shadow_share=0.5, shadow_agreement=0.1)
    ticks = TickRecorder(NullRecorder())
    engine = world.make_engine()
    engine.recorder = ticks
    state = engine.start_canary("fraud", "2")
    while not state.phase.terminal:
        world.clock.advance(timedelta(minutes=5))
        state = engine.tick("fraud").release
    return world, ReleaseRecord("v2 label flip", state, ticks.ticks), ticks


def pairs_in(store: InferenceLogStore, world: FakeWorld, n: int = 30) -> None:
    start = world.clock.now() - timedelta(minutes=4)
    rows = []
    for i in range(n):
        at = start + timedelta(seconds=i)
        p = i / n
        common = {"request_id": f"r{i}", "instance_index": 0, "model": "fraud", "received_at": at}
        rows.append(
            InferenceRow(
                **common,
                arm="champion",
                version="1",
                status_code=200,
                prediction=int(p >= 0.5),
                probability=p,
            )
        )
        rows.append(
            InferenceRow(
                **common,
                arm="candidate",
                version="2",
                status_code=200,
                prediction=int(p < 0.5),
                probability=1 - p,
                shadow=True,
            )
        )
    store.write_rows(rows)


def test_report_shows_agreement_over_time_and_the_paired_scatter(tmp_path: Path) -> None:
    world, record, _ = rejected_in_shadow()
    assert record.release.phase == Phase.ROLLED_BACK
    with InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}") as store:
        pairs_in(store, world)
        html = write_report(tmp_path / "report.html", [record], store).read_text()
    assert "Shadow phase: mirrored requests, no user served by the candidate" in html
    assert "paired agreement per tick" in html
    assert "probability of the positive class on the same mirrored requests" in html
    assert "different label (30)" in html  # every pair disagrees: the scatter shows them all


def test_artifact_and_live_view_name_the_shadow() -> None:
    _world, record, ticks = rejected_in_shadow()
    decision = record.ticks[-1][1]
    line = shadow_line(decision.checks)
    assert line is not None
    assert "no user on the candidate" in line
    assert "3,000" not in line
    assert "3000 mirrored requests answered of 6000 live" in line
    assert line in decision_markdown(record.release, decision)
    console = Console(width=100, record=True)
    console.print(release_view("v2", record.release, {"champion": 100, "candidate": 0}, ticks, mirrored=0.5))
    text = console.export_text()
    assert "candidate 0 %  ·  50% mirrored" in text
    assert "3000 mirrored requests answered" in text
    # A canary decision has no shadow line.
    assert shadow_line(()) is None
