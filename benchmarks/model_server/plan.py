"""How much each run measures."""

from __future__ import annotations

from dataclasses import dataclass

MARKERS = ("<!-- bench:model-server:start -->", "<!-- bench:model-server:end -->")
CLI_MARKERS = ("<!-- bench:cli:start -->", "<!-- bench:cli:end -->")


@dataclass(frozen=True)
class Plan:
    name: str
    rows: int  # synthetic training rows
    distinct_rows: int  # distinct request rows, cycled
    sequential: int  # requests per server at 1 connection
    connections: tuple[int, ...]
    rounds: int  # alternating windows per server and level
    window_s: float
    hop: int  # requests per path (direct, our Envoy, minimal Envoy)
    cli_runs: int  # runs per timed CLI command (0: none)
    all_help: bool  # time every command's --help
    kserve: bool = True  # start KServe's server beside ours (the micro smoke does not)
    hop_ready: int = 0  # requests per path to the readiness route (0: as many as ``hop``)
    estimator: str | None = None  # None: the `local` profile's


# The readiness route answers in well under a millisecond: many more requests there cost seconds
# and are what resolves a P99 difference of a tenth of a millisecond.
FULL = Plan("full", 2000, 500, 1500, (8, 32), 3, 4.0, 1500, 3, True, hop_ready=8000)
QUICK = Plan("quick", 2000, 500, 400, (8, 32), 2, 2.0, 400, 1, False, hop_ready=2000)
SMOKE = Plan("smoke", 600, 50, 20, (8,), 1, 0.5, 20, 0, False)
MICRO = Plan("micro", 400, 20, 10, (4,), 1, 0.3, 10, 0, False, kserve=False)
"""Seconds, for ``make test``: our server and both Envoys on a small model, every answer checked;
no KServe (its start alone takes tens of seconds; the ``long`` smoke runs it)."""
CLI_ONLY = Plan("cli", 600, 0, 0, (), 0, 0.0, 0, 5, True)
"""``--only cli``: a registered version to run ``status`` against, then the CLI timed alone."""
