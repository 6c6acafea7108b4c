"""How much each run measures."""

from __future__ import annotations

from dataclasses import dataclass

MARKERS = ("<!-- bench:model-server:start -->", "<!-- bench:model-server:end -->")


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


FULL = Plan("full", 2000, 500, 1500, (8, 32), 3, 4.0, 1500, 3, True)
QUICK = Plan("quick", 2000, 500, 400, (8, 32), 2, 2.0, 400, 1, False)
SMOKE = Plan("smoke", 600, 50, 20, (8,), 1, 0.5, 20, 0, False)
