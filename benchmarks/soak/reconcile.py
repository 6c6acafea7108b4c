"""Reconcile what every part of the stack counted during a soak (pure: no I/O).

Sources, from the client inwards: the client's own records (one per answered prediction, plus its
transport errors and labels), Envoy's access log and admin counters, the model servers' payload
loggers, the collector's counters and the inference log's rows. Every line of the result is one
equation that must hold when nothing was lost; :attr:`Reconciliation.lost` counts acknowledged
events (a prediction a model server answered, a label the collector acknowledged) missing from
the inference log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.soak.client import ClientRecord
from mlcanary.rollout.arms import ARMS, CANDIDATE


@dataclass(frozen=True)
class StoreRow:
    """A request's row (instance 0) in the inference log."""

    arm: str | None
    status: int | None
    request_half: bool
    response_half: bool


@dataclass(frozen=True)
class Counts:
    """Everything counted at the end of a soak."""

    run_id: str
    records: Sequence[ClientRecord]
    client: Mapping[str, Any]
    """The client's traffic report (``sent``, ``shed``, ``errors``, ``feedback_*``)."""
    access_log: Sequence[Mapping[str, Any]]
    """Every line of Envoy's access log (the run's and any other request Envoy served)."""
    envoy_stats: Mapping[str, int]
    store_rows: Mapping[str, StoreRow]
    """The run's rows by request id."""
    store_halves: tuple[int, int]
    """Request and response halves of every row in the inference log."""
    labels_stored: int
    """Labels stored for the run's requests."""
    collector: Mapping[str, Any]
    loggers: Mapping[str, Mapping[str, int] | None]
    """Payload-logger counters per arm; ``final`` True when read after the traffic drained."""


@dataclass(frozen=True)
class Line:
    """One equation: ``expected`` and ``observed`` must be equal."""

    name: str
    expected: int
    observed: int
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.expected == self.observed


@dataclass(frozen=True)
class Failures:
    """The client's requests that did not get a 2xx, by whose fault."""

    candidate: int
    """5xx answered by the candidate's own model server (its injected faults)."""
    other: int
    """Everything else: Envoy's own 5xx, the champion's 5xx, 4xx, transport errors, shed requests."""
    other_kinds: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Reconciliation:
    lines: list[Line]
    failures: Failures
    lost: int
    lost_ids: list[str]

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.lines) and self.failures.other == 0 and self.lost == 0


def classify(records: Sequence[ClientRecord], client: Mapping[str, Any]) -> Failures:
    """Failed requests by fault: the candidate's own 5xx, or anything else."""
    candidate = 0
    other: Counter[str] = Counter()
    for record in records:
        if 200 <= record.status < 300:
            continue
        if record.status >= 500 and record.server_arm == CANDIDATE:
            candidate += 1
        elif record.server_arm is None:
            other[f"HTTP {record.status} answered by Envoy ({record.arm_served or 'no arm'})"] += 1
        else:
            other[f"HTTP {record.status} from the {record.server_arm}"] += 1
    for kind, count in (client.get("errors") or {}).items():
        other[f"transport: {kind}"] += int(count)
    if client.get("shed"):
        other["shed by the client (concurrency limit)"] += int(client["shed"])
    return Failures(candidate=candidate, other=sum(other.values()), other_kinds=dict(other))


def _run_lines(counts: Counts) -> list[Mapping[str, Any]]:
    prefix = f"{counts.run_id}-"
    return [line for line in counts.access_log if str(line.get("request_id") or "").startswith(prefix)]


def _client_lines(counts: Counts) -> list[Line]:
    transport = sum(int(n) for n in (counts.client.get("errors") or {}).values())
    sent = int(counts.client["sent"])
    envoy = {str(line["request_id"]): line for line in _run_lines(counts)}
    differ = sum(
        1
        for r in counts.records
        if r.request_id not in envoy
        or str(envoy[r.request_id].get("response_code")) != str(r.status)
        or (r.arm_served or "-") != (envoy[r.request_id].get("upstream_cluster") or "-")
    )
    return [
        Line("client: sent = answered + transport errors", sent, len(counts.records) + transport),
        Line("client sent = the run's lines in Envoy's access log", sent, len(envoy)),
        Line(
            "answered requests whose status or arm differ in Envoy's access log",
            0,
            differ,
            "matched by request id",
        ),
    ]


def _envoy_lines(counts: Counts) -> list[Line]:
    stats = counts.envoy_stats
    lines = [
        Line(
            "Envoy access log lines = downstream requests completed (admin /stats)",
            len(counts.access_log),
            stats.get("http.ingress_http.downstream_rq_completed", -1),
            f"{len(counts.access_log) - len(_run_lines(counts))} not the client's (release preflight)",
        )
    ]
    for arm in ARMS:
        logged = sum(1 for line in counts.access_log if line.get("upstream_cluster") == arm)
        prefix = f"cluster.{arm}."
        completed = stats.get(prefix + "upstream_rq_completed", 0)
        retried = stats.get(prefix + "upstream_rq_retry", 0)
        lines.append(
            Line(
                f"access log lines routed to {arm} = its upstream requests completed − retries",
                logged,
                completed - retried,
                f"{retried} retried",
            )
        )
    return lines


def _lost(counts: Counts) -> tuple[list[str], int]:
    """Predictions a model server answered (so logged, and acknowledged to it) missing from the
    inference log or stored with another arm or status; and how many rows are only half there."""
    lost: list[str] = []
    half = 0
    for record in counts.records:
        if record.server_arm is None:
            continue  # Envoy answered: no model server saw it, nothing was logged
        row = counts.store_rows.get(record.request_id)
        if row is None or row.arm != record.server_arm or row.status != record.status:
            lost.append(record.request_id)
        elif not (row.request_half or 400 <= record.status < 500) or not row.response_half:
            half += 1
    return lost, half


def _logger_lines(counts: Counts) -> list[Line]:
    lines = []
    for arm, stats in counts.loggers.items():
        if stats is None:
            continue
        when = "final" if stats.get("final") else "last reading before it was retired"
        lines.append(
            Line(f"{arm} payload logger: dropped + failed ({when})", 0, stats["dropped"] + stats["failed"])
        )
        if stats.get("final"):
            lines.append(
                Line(f"{arm} payload logger: sent = enqueued ({when})", stats["enqueued"], stats["sent"])
            )
    return lines


def reconcile(counts: Counts) -> Reconciliation:
    """Every equation of the module docstring, the failures by fault and the lost events."""
    lost, half = _lost(counts)
    served = sum(1 for r in counts.records if r.server_arm is not None)
    collector = counts.collector
    requests_half, responses_half = counts.store_halves
    label_lines = [
        Line(
            "labels acknowledged to the client = labels stored",
            int(counts.client.get("feedback_sent", 0)),
            counts.labels_stored,
        ),
        Line(
            "labels refused or left unsent by the client",
            0,
            int(counts.client.get("feedback_failed", 0)) + int(counts.client.get("feedback_dropped", 0)),
        ),
    ]
    lines = [
        *_client_lines(counts),
        *_envoy_lines(counts),
        Line(
            "predictions a model server answered = their rows in the inference log",
            served,
            served - len(lost),
        ),
        Line("rows missing a half", 0, half),
        *_logger_lines(counts),
        Line(
            "collector: request events acknowledged = request halves stored",
            int(collector.get("request_events", -1)),
            requests_half,
        ),
        Line(
            "collector: response events acknowledged = response halves stored",
            int(collector.get("response_events", -1)),
            responses_half,
        ),
        Line("collector: store errors answered (503)", 0, int(collector.get("store_errors", 0))),
        *label_lines,
    ]
    labels_lost = max(0, int(counts.client.get("feedback_sent", 0)) - counts.labels_stored)
    return Reconciliation(
        lines=lines,
        failures=classify(counts.records, counts.client),
        lost=len(lost) + labels_lost,
        lost_ids=lost[:20],
    )
