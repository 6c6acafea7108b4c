"""What one soak does and when: the rate, the duration, the release's timeline and the policy that
makes the real rollout engine follow it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

SOAK_MARKERS: Final = ("<!-- bench:soak:start -->", "<!-- bench:soak:end -->")
STEPS: Final = (5, 25, 50)
"""The release's traffic steps (candidate %): the engine steps up through them, then the candidate
turns bad at the last one and the engine rolls it back."""
FAILURE_SHARE: Final = 0.3
"""Share of the candidate's model calls that fail once it has turned bad (its own faults)."""


@dataclass(frozen=True)
class SoakPlan:
    """A soak of ``minutes`` at ``rate`` requests/s, and the release it drives meanwhile.

    Timeline as fractions of the duration D: the canary starts at ``start_at`` (at 5 % of the
    traffic), each step bakes ``bake`` before the engine may step up (25 %, then 50 %), the
    candidate turns bad about
    ``bad_after`` into its last step (``healthy_calls`` model calls after it started), and the engine
    must have rolled it back by ``rollback_deadline``; if it has not, the soak rolls back by hand
    (and says so). The rest of the soak runs on the champion alone.
    """

    rate: float
    minutes: float
    tick_s: int = 0
    """Seconds between the engine's ticks; 0: D / 40, within [1, 5]."""
    sample_s: float = 2.0
    start_at: float = 0.05
    bake: float = 0.2
    bad_after: float = 0.1
    rollback_deadline: float = 0.85
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 500:
            raise ValueError(f"rate must be within (0, 500] requests/s, got {self.rate}")
        if not 0.25 <= self.minutes <= 24 * 60:
            raise ValueError(f"minutes must be within [0.25, 1440], got {self.minutes}")

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0

    @property
    def tick_interval_s(self) -> int:
        return self.tick_s or min(5, max(1, round(self.duration_s / 40)))

    @property
    def bake_s(self) -> float:
        return self.bake * self.duration_s

    @property
    def warmup_s(self) -> float:
        """Memory samples before this are the processes' warm-up, left out of the slope."""
        return min(60.0, 0.25 * self.duration_s)

    @property
    def min_samples_per_arm(self) -> int:
        """Half the candidate's requests in its first bake: the floor is met when the bake ends."""
        return max(5, int(0.5 * self.rate * STEPS[0] / 100 * self.bake_s))

    @property
    def healthy_calls(self) -> int:
        """Model calls before the candidate turns bad: its expected calls through both earlier steps
        and ``bad_after`` of the last one (plus its warm-up and the release preflight's few)."""
        earlier = sum(STEPS[:-1]) / 100 * self.rate * self.bake_s
        last = STEPS[-1] / 100 * self.rate * self.bad_after * self.duration_s
        return int(earlier + last) + 10

    def overrides(self) -> dict[str, Any]:
        """Dotted settings of the policy: the shipped one with the soak's times, and the checks
        trimmed to the serving checks (drift reports, paired agreement and label metrics re-score
        logged traffic in the engine's process: not what a soak of the serving path measures)."""
        never = f"{int(self.duration_s * 10)}s"
        return {
            "rollout.steps": list(STEPS),
            "rollout.min_bake_per_step": f"{int(self.bake_s)}s",
            "rollout.min_duration": never,
            "rollout.max_duration": never,
            "rollout.tick_interval": f"{self.tick_interval_s}s",
            "rollout.min_samples_per_arm": self.min_samples_per_arm,
            "rollout.checks": {
                "error_rate": {"tolerance": 0.05},
                "latency": {"tolerance": 1.0},
                "latency_p95": {"enabled": False},
                "positive_rate": {"enabled": False},
                "agreement": {"enabled": False},
                "prediction_drift": {"enabled": False},
                "input_drift": {"enabled": False},
                "accuracy": {"enabled": False},
            },
            "telemetry.drift_reports": False,
        }
