"""How much of each measurement a run takes (``--quick`` scales it down), and fixed bounds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
HOST: Final = "127.0.0.1"
SERVING_MARKERS: Final = ("<!-- bench:serving:start -->", "<!-- bench:serving:end -->")
CLIENT_MAX_S: Final = 300.0
"""Hard bound on one client worker process."""
CLIENT_MAX_REQUESTS: Final = 400_000


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to take (``--quick`` scales it down)."""

    hop_requests: int = 2000
    hop_warmup: int = 200
    flips: int = 20
    flip_gap_s: float = 0.3
    flip_jitter_s: float = 0.1
    flip_clients: int = 2
    rollbacks: int = 5
    rollback_settle_s: float = 0.5
    throughput_s: float = 10.0
    throughput_warmup_s: float = 1.0
    concurrencies: tuple[int, ...] = (8, 32)
    mirror_requests: int = 1500
    mirror_block: int = 100
    mirror_warmup: int = 100


FULL = Plan()
QUICK = Plan(
    hop_requests=300,
    hop_warmup=50,
    mirror_requests=300,
    mirror_block=50,
    flips=6,
    rollbacks=2,
    throughput_s=3.0,
    throughput_warmup_s=0.5,
    concurrencies=(32,),
)
