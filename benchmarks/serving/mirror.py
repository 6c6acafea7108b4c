"""6. What mirroring (the shadow phase) costs the user's path: the same requests through Envoy with no
mirror, with 10 % and with 100 % of them mirrored to the candidate, in interleaved blocks."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from benchmarks.block_bootstrap import Interval, percentile_difference
from benchmarks.serving.cpu import core_busy_seconds, tree_cpu, tree_waited, waited_between
from benchmarks.serving.measure import fmt, pct, say, signed
from benchmarks.serving.plan import Plan
from mlcanary.serving.headers import ARM_SERVED_HEADER, NO_LOG_HEADER, SERVER_LATENCY_HEADER
from mlcanary.serving.local.backend import LocalBackend

MIRROR_MARKERS = ("<!-- bench:mirror:start -->", "<!-- bench:mirror:end -->")
SHARES: tuple[float, ...] = (0.0, 0.1, 1.0)
"""Mirrored shares compared (0 = the plain canary route with nothing mirrored)."""


@dataclass
class MirrorArm:
    """One share's requests: client-side and champion server-side latencies, and what the
    candidate's Envoy cluster counted meanwhile (the mirrored copies)."""

    share: float
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    mirrored: int = 0
    failed: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds each process used during this share's blocks (``client`` is this process)."""
    waited_s: dict[str, float] = field(default_factory=dict)
    """Seconds each stack process was ready to run but waited for a CPU during those blocks."""
    path_busy_s: float = 0.0
    """CPU seconds the CPUs this process may run on (the user's path, when pinned) were busy."""
    block_sizes: list[int] = field(default_factory=list)
    """How many of ``client_ms`` each of this share's blocks gave, in order."""

    def client_blocks(self) -> list[list[float]]:
        """``client_ms`` split into this share's blocks."""
        blocks, start = [], 0
        for size in self.block_sizes:
            blocks.append(self.client_ms[start : start + size])
            start += size
        return blocks


def bench_mirror(
    backend: LocalBackend,
    model: str,
    front_door: str,
    path: str,
    bodies: Sequence[bytes],
    plan: Plan,
    pids: Mapping[str, int] | None = None,
    log: bool = True,
    shares: Sequence[float] = SHARES,
) -> list[MirrorArm]:
    """Sequential keep-alive requests through the weighted route (every answer from the champion),
    in blocks of ``plan.mirror_block`` per share, the shares rotating so that each sees the same
    machine state; the share is switched with the backend's own calls between blocks. With ``pids``
    (pidfile name → pid), the CPU each of those processes used during each share's blocks is kept.
    ``log=False`` marks every request not to be logged (a diagnostic: the payload log's share).
    ``shares`` are the shares compared (the first one the baseline)."""
    processes = dict(pids or {})
    arms = {share: MirrorArm(share) for share in shares}
    headers = {"content-type": "application/json"}
    if not log:
        headers[NO_LOG_HEADER] = "1"
    blocks = plan.mirror_requests // plan.mirror_block
    path_cpus = os.sched_getaffinity(0)
    deadline = time.monotonic() + 300.0
    with httpx.Client(base_url=front_door, timeout=10.0, trust_env=False) as client:
        for _ in range(plan.mirror_warmup):
            client.post(path, content=bodies[0], headers=headers)
        for block in range(blocks * len(shares)):
            if time.monotonic() > deadline:
                say("mirroring: time bound reached, reporting what was measured")
                break
            share = shares[(block + block // len(shares)) % len(shares)]
            if share:
                backend.set_shadow(model, share)
            else:
                backend.set_traffic(model, 0)
            arm = arms[share]
            before = backend.envoy.stats().candidate.rq_total
            cpu_before, waited_before = _cpu(processes), _waited(processes)
            busy_before = core_busy_seconds(path_cpus)
            measured_before = len(arm.client_ms)
            for i in range(plan.mirror_block):
                body = bodies[(block * plan.mirror_block + i) % len(bodies)]
                t0 = time.perf_counter_ns()
                try:
                    response = client.post(path, content=body, headers=headers)
                except httpx.HTTPError:
                    arm.failed += 1
                    continue
                elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
                if response.status_code != 200 or response.headers.get(ARM_SERVED_HEADER) != "champion":
                    arm.failed += 1
                    continue
                arm.client_ms.append(elapsed_ms)
                with contextlib.suppress(TypeError, ValueError):
                    arm.server_ms.append(float(response.headers.get(SERVER_LATENCY_HEADER)))
            arm.block_sizes.append(len(arm.client_ms) - measured_before)
            time.sleep(0.2)  # let the last mirrored copies land before counting them
            arm.mirrored += backend.envoy.stats().candidate.rq_total - before
            for name, used in _cpu(processes).items():
                arm.cpu_s[name] = arm.cpu_s.get(name, 0.0) + used - cpu_before.get(name, 0.0)
            arm.path_busy_s += core_busy_seconds(path_cpus) - busy_before
            for name, waited in _waited(processes).items():
                since = waited_between(waited_before.get(name, {}), waited)
                arm.waited_s[name] = arm.waited_s.get(name, 0.0) + since
    backend.set_traffic(model, 0)
    return [arms[share] for share in shares]


def _cpu(processes: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process (and its descendants), and of this one as ``client``."""
    used = {name: tree_cpu(pid) for name, pid in processes.items()}
    used["client"] = time.process_time()
    return used


def _waited(processes: Mapping[str, int]) -> dict[str, dict[int, float]]:
    """Per thread, seconds so far each process (and its descendants) waited for a CPU while ready."""
    return {name: tree_waited(pid) for name, pid in processes.items()}


_PROCESSES = ("client", "envoy", "model-champion", "model-candidate", "sink", "collector")


def _per_request_rows(arms: Sequence[MirrorArm], what: str, intro: str, target: str) -> list[str]:
    names = [n for n in _PROCESSES if n in getattr(arms[0], what)]
    if len(names) < 2:  # without the stack's processes there is nothing to compare
        return []
    rows = [
        intro,
        "",
        f"| mirrored to the {target} | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for arm in arms:
        n = max(len(arm.client_ms), 1)
        label = "none" if not arm.share else f"{arm.share:.0%}"
        values = getattr(arm, what)
        cells = " | ".join(f"{values.get(x, 0.0) * 1000 / n:.2f}" for x in names)
        rows.append(f"| {label} | {cells} |")
    return [*rows, ""]


def _displaced(arms: Sequence[MirrorArm], pinned: bool) -> list[str]:
    """Other processes' CPU on the user's core(s), per user request: the cores' busy time minus
    what the user's path (client, Envoy, champion; pinned there) used."""
    path = ("client", "envoy", "model-champion")
    if not pinned or not all(name in arms[0].cpu_s for name in path):
        return []
    cells = []
    for arm in arms:
        n = max(len(arm.client_ms), 1)
        others = max(0.0, arm.path_busy_s - sum(arm.cpu_s[name] for name in path))
        label = "nothing mirrored" if not arm.share else f"{arm.share:.0%}"
        cells.append(f"{label} {others * 1000 / n:.2f} ms")
    return [
        "CPU of other processes on the user's core, per user request (the core's busy time from "
        "`/proc/stat` minus what the client, Envoy and the champion used there): " + " · ".join(cells) + ".",
        "",
    ]


def _cpu_rows(arms: Sequence[MirrorArm], target: str = "candidate") -> list[str]:
    return [
        *_per_request_rows(
            arms,
            "cpu_s",
            "CPU used per user request during each share's blocks (ms of CPU, from `/proc`; the "
            f"{target}'s and the collector's include the copies' work):",
            target,
        ),
        *_per_request_rows(
            arms,
            "waited_s",
            "Time each process was ready to run but waited for a CPU, per user request (ms, the "
            "run-queue delay of `/proc/<pid>/task/*/schedstat`): what the champion waits here is "
            "added to the user's latency without showing as its CPU.",
            target,
        ),
    ]


def _latency_rows(arms: Sequence[MirrorArm], target: str) -> list[str]:
    rows = [
        f"| mirrored to the {target} | requests | {target} got | P50 ms | P95 ms | P99 ms | "
        "champion server-side P50 / P99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = arms[0]
    for arm in arms:
        label = "none (canary route, 100/0)" if not arm.share else f"{arm.share:.0%}"
        rows.append(
            f"| {label} | {len(arm.client_ms):,} | {arm.mirrored:,} | {fmt(pct(arm.client_ms, 50))} | "
            f"{fmt(pct(arm.client_ms, 95))} | {fmt(pct(arm.client_ms, 99))} | "
            f"{fmt(pct(arm.server_ms, 50))} / {fmt(pct(arm.server_ms, 99))} |"
        )
    for arm in arms[1:]:
        delta = [pct(arm.client_ms, q) - pct(base.client_ms, q) for q in (50, 95, 99)]
        added = " | ".join(f"**{signed(d)}**" for d in delta)
        rows.append(f"| **added by mirroring {arm.share:.0%}** | | | {added} | |")
        intervals = _intervals(base, arm)
        if intervals:
            rows.append(f"| 95 % interval of that, rotations resampled | | | {intervals} | |")
    return [*rows, ""]


def _differences(base: MirrorArm, arm: MirrorArm, quantiles: Sequence[float]) -> list[Interval] | None:
    """The ``quantiles``' differences ``arm − base`` with their bootstrap intervals
    (``benchmarks/block_bootstrap``), over the rotations both shares completed; None with fewer
    than two."""
    pairs = [(b, o) for b, o in zip(base.client_blocks(), arm.client_blocks(), strict=False) if b and o]
    if len(pairs) < 2:
        return None
    base_blocks, other_blocks = [b for b, _ in pairs], [o for _, o in pairs]
    return [percentile_difference(base_blocks, other_blocks, q) for q in quantiles]


def _intervals(base: MirrorArm, arm: MirrorArm) -> str | None:
    """The bootstrap intervals of the P50, P95 and P99 differences as table cells."""
    found = _differences(base, arm, (50, 95, 99))
    return None if found is None else " | ".join(f"[{i.low:+.2f}, {i.high:+.2f}]" for i in found)


def pooled(runs: Sequence[Sequence[MirrorArm]]) -> list[MirrorArm]:
    """Several runs of the same rotation as one: per share, the samples, blocks, counts and CPU
    added up in run order. Each run is first cut to the rotations every share completed (a run
    stopped by the time bound may end mid-rotation), so block ``i`` of every share stays one
    rotation and the pooled intervals still resample whole rotations."""
    if not runs:
        raise ValueError("nothing to pool")
    shares = [arm.share for arm in runs[0]]
    merged = [MirrorArm(share) for share in shares]
    for arms in runs:
        if [arm.share for arm in arms] != shares:
            raise ValueError("every run must compare the same shares in the same order")
        complete = min(len(arm.block_sizes) for arm in arms)
        for into, arm in zip(merged, arms, strict=True):
            kept = sum(arm.block_sizes[:complete])
            into.client_ms += arm.client_ms[:kept]
            into.server_ms += arm.server_ms[:kept]
            into.block_sizes += arm.block_sizes[:complete]
            into.mirrored += arm.mirrored
            into.failed += arm.failed
            into.path_busy_s += arm.path_busy_s
            for total, part in ((into.cpu_s, arm.cpu_s), (into.waited_s, arm.waited_s)):
                for name, seconds in part.items():
                    total[name] = total.get(name, 0.0) + seconds
    return merged


def report_repeats(runs: Sequence[Sequence[MirrorArm]], target: str = "candidate") -> list[str]:
    """Each run's added P50 and P99 with their intervals, then all runs pooled (the tables above);
    nothing for a single run."""
    if len(runs) < 2:
        return []
    shares = [arm.share for arm in runs[0][1:]]
    head = " | ".join(f"{share:.0%}: added P50 ms | {share:.0%}: added P99 ms" for share in shares)
    rows = [
        f"#### Each run apart ({len(runs)} runs in the same stack, one after the other)",
        "",
        "Mirrored to the " + target + ": the difference from nothing mirrored in each run, with its 95 % "
        "interval from that run's rotations; the tables above pool every run's rotations.",
        "",
        f"| run | {head} |",
        "| --- | " + " | ".join("---:" for _ in range(2 * len(shares))) + " |",
    ]
    for label, arms in [*((str(i + 1), arms) for i, arms in enumerate(runs)), ("all, pooled", pooled(runs))]:
        cells = []
        for arm in arms[1:]:
            found = _differences(arms[0], arm, (50, 99))
            cells += [i.text() for i in found] if found else ["–", "–"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*rows, ""]


def report_sink(arms: Sequence[MirrorArm], pinned: bool = True) -> list[str]:
    """The part of the report measured with the candidate replaced by the sink (``--sink``)."""
    return [
        "#### The copy itself: mirroring to a server that answers at once",
        "",
        "The same rotation (nothing mirrored, 100 % mirrored) after the candidate's model server is "
        "replaced, on its port and core, by `benchmarks/serving/sink.py`, which answers each copy at "
        "once without a model. What mirroring still adds here is what the user's path pays for the "
        "copy itself (Envoy copying the request, sending it and reading the discarded answer), as "
        "on a cluster where the candidate computes in its own pods.",
        "",
        *_latency_rows(arms, "sink"),
        *_cpu_rows(arms, "sink"),
        *_displaced(arms, pinned),
        f"Non-200 (or not-champion) replies: {sum(arm.failed for arm in arms)}.",
        "",
    ]


def report_mirror(arms: Sequence[MirrorArm], cores: int, pinned: str | None = None) -> list[str]:
    failed = sum(arm.failed for arm in arms)
    return [
        "### 6. Latency mirroring adds to the user's path (the shadow phase)",
        "",
        "Single-instance V1 `:predict` through Envoy's weighted route (every answer from the champion), "
        "one request at a time over a keep-alive connection, measured at the client; blocks of requests "
        "with nothing mirrored, 10 % and 100 % mirrored to the candidate (`LocalBackend.set_shadow`) "
        "rotate, so every share sees the same machine state. *candidate got* is what Envoy's candidate "
        "cluster counted during those blocks: the mirrored copies, whose answers Envoy discards.",
        "",
        *_latency_rows(arms, "candidate"),
        *_cpu_rows(arms),
        *_displaced(arms, pinned is not None),
        f"Non-200 (or not-champion) replies: {failed}. Envoy sends the copy without waiting for it, so "
        "what mirroring adds to the user's path is the machine's. "
        + (
            f"Here the cores were split as in a cluster ({pinned}): what is left is Envoy's own "
            "cost of copying, plus what the candidate's work displaces onto the user's core (other "
            "processes on a shared machine; the run-queue table)."
            if pinned
            else f"Here both model servers, Envoy, the collector and the client share {cores} cores, and "
            "the candidate computing each copy at the same moment as the champion computes the "
            "original slows the champion (its server-side column). On a cluster the copy runs in the "
            "candidate's own pods (`--pin-candidate` measures that layout)."
        ),
        "",
    ]
