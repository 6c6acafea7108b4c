"""What a traffic run reports: per-arm counts and latencies (:class:`ArmReport`), the whole run
(:class:`TrafficReport`), snapshots for a progress display (:class:`Progress`), and the tally they
are built from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np

from mlcanary.demo.traffic.plan import TrafficPlan
from mlcanary.rollout.arms import ARMS

UNKNOWN_ARM: Final = "unknown"
"""The bucket of requests no arm answered for (transport errors, responses without the arm header)."""


@dataclass(frozen=True)
class ArmReport:
    """Client-side results for one arm (``champion``, ``candidate``, ``unknown``) or for all requests.

    ``requests`` counts every attempt in the bucket: ``ok`` (2xx) + ``client_errors_4xx`` +
    ``server_errors_5xx`` + ``transport_errors`` + any other status (see ``status_codes``).
    Latencies are over requests that got an HTTP response of any status; ``None`` when there were
    none. ``positive_rate`` and ``mean_probability`` are over the 2xx responses whose body carried a
    prediction / probability; ``malformed_responses`` counts 2xx bodies that did not.
    """

    requests: int = 0
    ok: int = 0
    client_errors_4xx: int = 0
    server_errors_5xx: int = 0
    transport_errors: int = 0
    malformed_responses: int = 0
    status_codes: Mapping[int, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    positive_rate: float | None = None
    mean_probability: float | None = None


@dataclass(frozen=True)
class TrafficReport:
    """What one run did.

    ``arms`` always has ``champion`` and ``candidate`` and has ``unknown`` only when some request
    could not be attributed to an arm (transport errors, responses without the arm header).
    ``planned == sent + shed``. ``duration_s`` is the whole run, from the first due time to the end
    of the feedback wait. ``achieved_rps`` is ``sent`` over the send window (first due time to
    the last send, plus one interval). ``errors`` counts transport errors by exception name.
    Feedback: ``feedback_sent`` labels were acknowledged by the collector, ``feedback_failed`` were
    refused or undeliverable after a retry, ``feedback_dropped`` were still waiting when the bounded
    end-of-run wait ran out.
    """

    run_id: str
    plan: TrafficPlan
    arms: Mapping[str, ArmReport]
    total: ArmReport
    planned: int
    sent: int
    shed: int
    late: int
    max_lag_ms: float
    achieved_rps: float
    duration_s: float
    errors: Mapping[str, int]
    feedback_sent: int
    feedback_failed: int
    feedback_dropped: int
    feedback_errors: Mapping[str, int]

    def share(self, arm: str) -> float | None:
        """The arm's share of the requests attributed to champion or candidate (``None`` if none)."""
        known = sum(self.arms[a].requests for a in ARMS)
        return self.arms[arm].requests / known if known and arm in self.arms else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the plan as its field values)."""
        out = asdict(self)
        out["plan"] = self.plan.model_dump()
        return out


@dataclass(frozen=True)
class Progress:
    """A snapshot for a progress display. ``done`` (= finished + shed requests) never decreases.

    ``per_arm`` counts finished requests by arm, always with the keys ``champion``, ``candidate``
    and ``unknown``; ``errors`` is 4xx + 5xx + transport errors so far.
    """

    done: int
    total: int
    sent: int
    shed: int
    per_arm: Mapping[str, int]
    errors: int
    feedback_sent: int
    elapsed_s: float


@dataclass
class ArmTally:
    """Running counts of one arm (or of every request) while a run sends; :meth:`report` freezes them."""

    requests: int = 0
    ok: int = 0
    c4xx: int = 0
    c5xx: int = 0
    transport: int = 0
    malformed: int = 0
    status_codes: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    predictions: int = 0
    positives: int = 0
    probabilities: int = 0
    probability_sum: float = 0.0

    @property
    def errors(self) -> int:
        return self.c4xx + self.c5xx + self.transport

    def merge(self, other: ArmTally) -> None:
        self.requests += other.requests
        self.ok += other.ok
        self.c4xx += other.c4xx
        self.c5xx += other.c5xx
        self.transport += other.transport
        self.malformed += other.malformed
        self.status_codes.update(other.status_codes)
        self.latencies_ms.extend(other.latencies_ms)
        self.predictions += other.predictions
        self.positives += other.positives
        self.probabilities += other.probabilities
        self.probability_sum += other.probability_sum

    def report(self) -> ArmReport:
        p50 = p95 = p99 = None
        if self.latencies_ms:
            p50, p95, p99 = (float(v) for v in np.percentile(self.latencies_ms, [50, 95, 99]))
        return ArmReport(
            requests=self.requests,
            ok=self.ok,
            client_errors_4xx=self.c4xx,
            server_errors_5xx=self.c5xx,
            transport_errors=self.transport,
            malformed_responses=self.malformed,
            status_codes=dict(sorted(self.status_codes.items())),
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
            positive_rate=self.positives / self.predictions if self.predictions else None,
            mean_probability=self.probability_sum / self.probabilities if self.probabilities else None,
        )
