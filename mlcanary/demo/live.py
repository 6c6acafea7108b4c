"""The demo's moving parts: background traffic through the front door, the tick recorder, and one
release run tick by tick with its view (live in a terminal, printed once when captured).

Every view fits :data:`mlcanary.views.console.CAPTURED_WIDTH` columns.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from mlcanary.config import Settings
from mlcanary.demo.traffic.plan import TrafficPlan
from mlcanary.demo.traffic.run import run_traffic
from mlcanary.rollout.engine import RolloutEngine
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.ports import EvidenceRecorder
from mlcanary.rollout.state import Decision, ReleaseState
from mlcanary.views.check_table import shadow_line, terminal_table

ACTION_STYLES = {
    "promote": "bold green",
    "rollback": "bold red",
    "step_up": "bold cyan",
    "hold": "yellow",
    "await_approval": "bold magenta",
}


class TickRecorder:
    """Wraps the release's evidence recorder and keeps each tick for the view and the report."""

    def __init__(self, inner: EvidenceRecorder) -> None:
        self.inner = inner
        self.ticks: list[tuple[Measurements, Decision]] = []

    def begin(self, release: ReleaseState) -> str | None:
        return self.inner.begin(release)

    def record_tick(self, release: ReleaseState, measurements: Measurements, decision: Decision) -> None:
        self.ticks.append((measurements, decision))
        self.inner.record_tick(release, measurements, decision)

    def finish(self, release: ReleaseState) -> None:
        self.inner.finish(release)

    def flush(self, model: str) -> int:
        return self.inner.flush(model)

    def pending_models(self) -> list[str]:
        return self.inner.pending_models()

    def attach_report(self, release: ReleaseState, name: str, html: str) -> None:
        attach = getattr(self.inner, "attach_report", None)
        if attach is not None:
            attach(release, name, html)


class BackgroundTraffic:
    """Traffic through the front door, in a thread of its own, for as long as the demo runs.

    :meth:`stop` cancels the run and waits until it has wound down (in-flight requests cancelled,
    the HTTP client closed) before the thread's event loop ends, so nothing is left pending.
    """

    def __init__(self, plan: TrafficPlan) -> None:
        self.plan = plan
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name="demo-traffic", daemon=True
        )
        self._thread.start()
        self._ready.wait(timeout=10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._ready.set()
        sending = asyncio.create_task(run_traffic(self.plan))
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sending, stopping):
            task.cancel()
        # A failure of the traffic itself is not the demo's story: the judge sees its effect.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(sending, stopping)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=timeout_s)


def release_view(
    title: str,
    release: ReleaseState,
    traffic: dict[str, int] | None,
    ticks: TickRecorder,
    mirrored: float | None = None,
) -> Panel:
    """One release: phase, the split Envoy serves (and the share it mirrors to the candidate in the
    shadow phase), requests per arm, the decision and every check."""
    measured, decision = ticks.ticks[-1] if ticks.ticks else (None, None)
    served = traffic or {"champion": 100 - release.traffic, "candidate": release.traffic}
    lines = Table.grid(padding=(0, 2))
    lines.add_row("phase", f"[bold]{release.phase.value}[/bold]", "tick", str(release.ticks))
    mirror = f"  ·  {mirrored:.0%} mirrored" if mirrored else ""
    lines.add_row(
        "traffic (Envoy)",
        f"champion {served['champion']} %  ·  candidate {served['candidate']} %{mirror}",
        "requests",
        f"{measured.champion.requests} / {measured.candidate.requests}" if measured else "—",
    )
    parts: list[Table] = [lines]
    if decision is not None:
        style = ACTION_STYLES.get(decision.action, "white")
        lines.add_row("decision", f"[{style}]{decision.action}[/{style}]", "", "")
        why = Table.grid(padding=(0, 2))
        shadow = shadow_line(decision.checks)
        if shadow is not None:
            why.add_row("shadow", shadow.removeprefix("shadow: "))
        why.add_row("why", decision.reason)
        parts += [why, terminal_table(decision.checks, compact=True)]
    return Panel(Group(*parts), title=title, title_align="left")


def run_release(
    console: Console,
    engine: RolloutEngine,
    ticks: TickRecorder,
    settings: Settings,
    title: str,
    version: str,
    *,
    deadline_s: float,
) -> ReleaseState:
    """Canary ``version`` and tick until the release ends (or ``deadline_s``); in a terminal the view
    refreshes live, otherwise its final state is printed once."""
    model = settings.model.name
    state = engine.start_canary(model, version)
    interval = settings.rollout.tick_interval.total_seconds()
    started = time.monotonic()
    observed: dict[str, int] | None = None
    mirrored: float | None = None
    live = Live(release_view(title, state, None, ticks), console=console, refresh_per_second=4)
    with live if console.is_terminal else contextlib.nullcontext():
        while not state.phase.terminal and time.monotonic() - started < deadline_s:
            time.sleep(interval)
            state = engine.tick(model).release
            serving = engine.backend.status(model)
            observed, mirrored = serving.traffic, serving.shadow
            if console.is_terminal:
                live.update(release_view(title, state, observed, ticks, mirrored))
    if not console.is_terminal:
        console.print(release_view(title, state, observed, ticks, mirrored))
    return state
