"""Replay the bundled transaction data through the front door at a steady rate (``mlcanary traffic``).

:func:`run_traffic` sends one KServe V1 ``:predict`` request per generated row, paced open-loop: request
``i`` is due at ``t0 + i / rps`` whatever the earlier responses are doing, so a slow arm shows up as
latency and errors rather than as a quietly lower rate. At most ``concurrency`` requests are in flight;
a request that is due while the limit is reached is *shed* (not sent, counted), never queued, so the
schedule does not slip. A send that leaves later than its due time (the event loop or the row source
fell behind) is counted as *late*.

Rows come lazily, chunk by chunk, from :func:`mlcanary.data.synthetic.generate_transactions`: chunk
``k`` holds rows ``k * CHUNK_ROWS ...`` and is ``generate_transactions(CHUNK_ROWS,
seed=chunk_seed(plan.seed, k), knobs=plan.knobs)``, so the rows sent depend only on the plan's seed
and drift knobs. Request ids are ``<run_id>-<row index>``.

After a 2xx response, the row's true label is posted to the collector's ``/feedback`` (for the share
``feedback_share`` of rows chosen by the seed) ``feedback_delay_s`` later, batched as a JSON list every
``FEEDBACK_INTERVAL_S``. A batch refused with 429/502/503/504 or lost on the wire is retried once
(the collector's upsert makes a repeat harmless). Everything that goes wrong on the wire is counted
in the report, never raised.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from rich.table import Table

from mlcanary.data.synthetic import FEATURES, TARGET, DriftKnobs, generate_transactions
from mlcanary.serving.local.envoy_config import ARM_HEADER, ARM_SERVED_HEADER, REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

#: Rows per generated chunk. Part of the determinism contract: changing it changes the rows sent.
CHUNK_ROWS: Final = 1000
#: How often due feedback labels are posted (one JSON list per tick, split into batches).
FEEDBACK_INTERVAL_S: Final = 0.5
#: Most labels in one ``/feedback`` POST.
FEEDBACK_BATCH_MAX: Final = 500
#: Most requests one plan may send (bounds memory for latencies and pending labels).
MAX_REQUESTS: Final = 2_000_000
#: How often the progress callback is called while requests flow.
PROGRESS_INTERVAL_S: Final = 0.1
#: A send leaving more than this after its due time counts as late.
LATE_TOLERANCE_S: Final = 0.010

ARMS: Final = ("champion", "candidate")
UNKNOWN_ARM: Final = "unknown"

# Extra wait for in-flight requests after the last send, beyond the per-request timeout, before
# they are cancelled: httpx's timeouts apply per phase (connect, write, read), not to the whole call.
_DRAIN_GRACE_S: Final = 2.0
# Ids from one run share a random prefix so several runs can feed the same store without clashes.
_RUN_ID_HEX: Final = 12


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The ``generate_transactions`` seed of chunk ``chunk_index`` for a plan seeded with ``seed``.

    Derived with NumPy's ``SeedSequence``, so chunks of neighbouring seeds do not overlap.
    """
    return int(np.random.SeedSequence([seed, chunk_index]).generate_state(1, dtype=np.uint64)[0])


def _feedback_mask(seed: int, chunk_index: int, share: float) -> list[bool]:
    """Which rows of a chunk get a label; its own stream so the share does not change the rows."""
    if share <= 0.0:
        return [False] * CHUNK_ROWS
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk_index, 1]))
    return (rng.random(CHUNK_ROWS) < share).tolist()


def _check_url(value: str, name: str) -> str:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"{name} is not a valid URL: {value!r} ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"{name} must be an http(s) URL with a host, e.g. http://127.0.0.1:8080; got {value!r}"
        )
    return value.rstrip("/")


class TrafficPlan(BaseModel):
    """What to send, how fast, and which labels to post back. Immutable and validated on creation.

    Give exactly one of ``duration_s`` (requests = ``round(rps * duration_s)``, at least 1) or
    ``total_requests``. ``covariate_shift``, ``fraud_rate`` and ``noise`` go to
    :class:`~mlcanary.data.synthetic.DriftKnobs` unchanged (same bounds). ``collector_url=None``
    posts no feedback. ``force_arm`` sends ``x-mlcanary-arm`` on every request. ``timeout_s`` applies
    to each request and each feedback POST. Invalid values raise ``pydantic.ValidationError`` (a
    ``ValueError``) naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    front_door_url: str = "http://127.0.0.1:8080"
    model: str = Field(default="fraud-detector", min_length=1, max_length=256)
    rps: float = Field(default=50.0, gt=0, le=5000)
    duration_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    total_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    covariate_shift: float = Field(default=0.0, ge=0.0, le=5.0)
    fraud_rate: float = Field(default=0.04, gt=0.0, lt=1.0)
    noise: float = Field(default=0.0, ge=0.0, le=0.5)
    collector_url: str | None = "http://127.0.0.1:8090"
    feedback_delay_s: float = Field(default=3.0, ge=0.0, le=600.0)
    feedback_share: float = Field(default=0.5, ge=0.0, le=1.0)
    concurrency: int = Field(default=32, ge=1, le=1024)
    timeout_s: float = Field(default=5.0, gt=0.0, le=120.0)
    force_arm: Literal["champion", "candidate"] | None = None
    protocol: Literal["v1", "v2"] = "v1"
    host_header: str | None = Field(
        default=None, description="Host header to send (an Istio ingress routes InferenceServices by host)"
    )
    data_path: str | None = Field(
        default=None, description="replay the rows of this CSV or Parquet file (in order, cycling)"
    )
    target: str | None = Field(
        default=None, description="with data_path: the label column, posted as delayed feedback"
    )

    @field_validator("front_door_url")
    @classmethod
    def _front_door(cls, value: str) -> str:
        return _check_url(value, "front_door_url")

    @field_validator("collector_url")
    @classmethod
    def _collector(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, "collector_url")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if "/" in value or value.strip() != value:
            raise ValueError(
                f"model must be a bare model name without '/' or surrounding spaces, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _size(self) -> TrafficPlan:
        if (self.duration_s is None) == (self.total_requests is None):
            raise ValueError("give exactly one of duration_s or total_requests")
        if self.duration_s is not None and self.rps * self.duration_s > MAX_REQUESTS:
            raise ValueError(
                f"rps * duration_s = {self.rps * self.duration_s:.0f} requests; the limit is {MAX_REQUESTS}"
            )
        DriftKnobs(self.covariate_shift, self.fraud_rate, self.noise)
        return self

    @property
    def knobs(self) -> DriftKnobs:
        """The drift knobs handed to the generator."""
        return DriftKnobs(self.covariate_shift, self.fraud_rate, self.noise)

    @property
    def planned_requests(self) -> int:
        """How many requests the schedule holds (sent + shed at the end of a run)."""
        if self.total_requests is not None:
            return self.total_requests
        assert self.duration_s is not None
        return max(1, round(self.rps * self.duration_s))

    @property
    def predict_url(self) -> str:
        """The KServe V1 predict (or V2 infer) endpoint at the front door."""
        if self.protocol == "v2":
            return f"{self.front_door_url}/v2/models/{quote(self.model, safe='')}/infer"
        return f"{self.front_door_url}/v1/models/{quote(self.model, safe='')}:predict"


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
class _ArmStats:
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

    def merge(self, other: _ArmStats) -> None:
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


@dataclass(frozen=True)
class _Chunk:
    rows: list[dict[str, Any]]
    labels: list[int]
    wants_label: list[bool]


@dataclass(frozen=True)
class FileRows:
    """The rows of a user's file to replay: features as JSON-ready dicts (missing values as null)
    and, with a target column, the 0/1 label of each row (None where it is not 0 or 1)."""

    rows: list[dict[str, Any]]
    labels: list[int | None]

    @classmethod
    def read(cls, path: str, target: str | None) -> FileRows:
        """Load ``path`` (``.csv``, ``.parquet``); ``ValueError`` names what is wrong."""
        import pandas as pd

        source = Path(path)
        if not source.is_file():
            raise ValueError(f"--data {path}: no such file")
        suffix = source.suffix.lower()
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(source)
        elif suffix == ".csv":
            frame = pd.read_csv(source)
        else:
            raise ValueError(f"--data {path}: expected a .csv or .parquet file")
        if len(frame) == 0:
            raise ValueError(f"--data {path}: the file has no rows")
        labels: list[int | None] = [None] * len(frame)
        if target is not None:
            if target not in frame.columns:
                raise ValueError(
                    f"--target {target!r} is not a column of {path} "
                    f"(columns: {', '.join(map(str, frame.columns))})"
                )
            labels = [
                int(v) if isinstance(v, int | float | bool) and v in (0, 1) else None
                for v in frame[target].tolist()
            ]
            frame = frame.drop(columns=[target])
        features = frame.astype(object).where(frame.notna(), None)
        rows = [
            {str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in features.to_dict(orient="records")
        ]
        return cls(rows, labels)


def _build_chunk(plan: TrafficPlan, chunk_index: int, table: FileRows | None = None) -> _Chunk:
    if table is not None:
        count = len(table.rows)
        positions = [(chunk_index * CHUNK_ROWS + i) % count for i in range(CHUNK_ROWS)]
        mask = _feedback_mask(plan.seed, chunk_index, plan.feedback_share)
        labels = [table.labels[p] for p in positions]
        return _Chunk(
            rows=[table.rows[p] for p in positions],
            labels=[-1 if label is None else label for label in labels],
            wants_label=[m and label is not None for m, label in zip(mask, labels, strict=True)],
        )
    frame = generate_transactions(CHUNK_ROWS, seed=chunk_seed(plan.seed, chunk_index), knobs=plan.knobs)
    # to_dict gives Python scalars, which json.dumps and the model server's strict types accept.
    return _Chunk(
        rows=frame[list(FEATURES)].to_dict(orient="records"),
        labels=[int(v) for v in frame[TARGET].tolist()],
        wants_label=_feedback_mask(plan.seed, chunk_index, plan.feedback_share),
    )


class _RowSource:
    """Rows in index order; the next chunk is generated in a worker thread while this one is sent."""

    def __init__(self, plan: TrafficPlan, total: int) -> None:
        self._plan = plan
        self._table = FileRows.read(plan.data_path, plan.target) if plan.data_path else None
        self._chunks = math.ceil(total / CHUNK_ROWS)
        self._index = -1
        self._current: _Chunk | None = None
        self._next: asyncio.Task[_Chunk] | None = None

    def _prefetch(self, chunk_index: int) -> None:
        self._next = (
            asyncio.create_task(asyncio.to_thread(_build_chunk, self._plan, chunk_index, self._table))
            if chunk_index < self._chunks
            else None
        )

    async def start(self) -> None:
        self._prefetch(0)

    async def get(self, row_index: int) -> tuple[dict[str, Any], int, bool]:
        chunk_index, offset = divmod(row_index, CHUNK_ROWS)
        if chunk_index != self._index:
            if chunk_index != self._index + 1 or self._next is None:
                raise RuntimeError("rows must be read in order")
            self._current = await self._next
            self._index = chunk_index
            self._prefetch(chunk_index + 1)
        assert self._current is not None
        chunk = self._current
        return chunk.rows[offset], chunk.labels[offset], chunk.wants_label[offset]

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()


def _retryable(status: int | None) -> bool:
    return status is None or status in (429, 502, 503, 504)


class _FeedbackPoster:
    """Posts labels once their due time has come, in batches, retrying a failed batch once."""

    def __init__(self, plan: TrafficPlan, client: httpx.AsyncClient) -> None:
        assert plan.collector_url is not None
        self._url = f"{plan.collector_url}/feedback"
        self._plan = plan
        self._client = client
        self._heap: list[tuple[float, int, str, int, int]] = []
        self._seq = itertools.count()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.errors: Counter[str] = Counter()

    def add(self, request_id: str, label: int, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), request_id, label, 1))

    async def run(self, requests_done: asyncio.Event) -> None:
        """Tick every ``FEEDBACK_INTERVAL_S`` until the requests are done and no label is pending.

        Once the requests are done it waits at most ``feedback_delay_s`` plus two ticks and one retry
        for the labels still pending; what is left then counts as dropped.
        """
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None
        while True:
            await self._post_due(loop.time())
            if requests_done.is_set():
                if give_up_at is None:
                    give_up_at = loop.time() + self._plan.feedback_delay_s + 3 * FEEDBACK_INTERVAL_S
                if not self._heap:
                    return
                if loop.time() >= give_up_at:
                    self.dropped += len(self._heap)
                    self._heap.clear()
                    return
            await asyncio.sleep(FEEDBACK_INTERVAL_S)

    async def _post_due(self, now: float) -> None:
        due: list[tuple[float, int, str, int, int]] = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap))
        for start in range(0, len(due), FEEDBACK_BATCH_MAX):
            await self._post(due[start : start + FEEDBACK_BATCH_MAX], now)

    async def _post(self, batch: list[tuple[float, int, str, int, int]], now: float) -> None:
        body = [{"request_id": rid, "label": label} for _, _, rid, label, _ in batch]
        status: int | None = None
        try:
            response = await self._client.post(self._url, json=body, timeout=self._plan.timeout_s)
            status = response.status_code
        except (httpx.HTTPError, OSError) as exc:
            self.errors[type(exc).__name__] += 1
        else:
            if response.is_success:
                self.sent += len(batch)
                return
            self.errors[f"HTTP {status}"] += 1
        if _retryable(status):
            retry = [item for item in batch if item[4] < 2]
            for _, seq, rid, label, attempt in retry:
                heapq.heappush(self._heap, (now + FEEDBACK_INTERVAL_S, seq, rid, label, attempt + 1))
            self.failed += len(batch) - len(retry)
        else:
            self.failed += len(batch)


class _Run:
    def __init__(
        self,
        plan: TrafficPlan,
        client: httpx.AsyncClient,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.plan = plan
        self.client = client
        self.on_progress = on_progress
        self.run_id = uuid.uuid4().hex[:_RUN_ID_HEX]
        self.total = plan.planned_requests
        self.arms: dict[str, _ArmStats] = {arm: _ArmStats() for arm in (*ARMS, UNKNOWN_ARM)}
        self.errors: Counter[str] = Counter()
        self.finished = 0
        self.sent = 0
        self.shed = 0
        self.late = 0
        self.max_lag_s = 0.0
        self.in_flight: set[asyncio.Task[None]] = set()
        self.feedback = (
            _FeedbackPoster(plan, client) if plan.collector_url and plan.feedback_share > 0 else None
        )
        self.started = time.monotonic()
        self._headers = {"content-type": "application/json"}
        if plan.force_arm:
            self._headers[ARM_HEADER] = plan.force_arm
        if plan.host_header:
            self._headers["host"] = plan.host_header

    def progress(self) -> Progress:
        return Progress(
            done=self.finished + self.shed,
            total=self.total,
            sent=self.sent,
            shed=self.shed,
            per_arm={arm: stats.requests for arm, stats in self.arms.items()},
            errors=sum(stats.errors for stats in self.arms.values()),
            feedback_sent=self.feedback.sent if self.feedback else 0,
            elapsed_s=time.monotonic() - self.started,
        )

    def report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress())

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            self.report_progress()

    async def run(self) -> TrafficReport:
        loop = asyncio.get_running_loop()
        rows = _RowSource(self.plan, self.total)
        requests_done = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        send_window = 0.0
        try:
            await rows.start()
            # The first chunk (and the generator's one-off calibration) is ready before the clock starts.
            await rows.get(0)
            if self.feedback is not None:
                background.append(asyncio.create_task(self.feedback.run(requests_done)))
            ticker = asyncio.create_task(self._progress_loop()) if self.on_progress is not None else None
            if ticker is not None:
                background.append(ticker)
            self.started = time.monotonic()
            t0 = loop.time()
            interval = 1.0 / self.plan.rps
            last_send = t0
            for index in range(self.total):
                due = t0 + index * interval
                # Always yields, so responses are handled even when the schedule is behind.
                await asyncio.sleep(max(0.0, due - loop.time()))
                _raise_if_failed(ticker)
                row, label, wants_label = await rows.get(index)
                if len(self.in_flight) >= self.plan.concurrency:
                    self.shed += 1
                    continue
                now = loop.time()
                lag = now - due
                self.max_lag_s = max(self.max_lag_s, lag)
                if lag > LATE_TOLERANCE_S:
                    self.late += 1
                self.sent += 1
                last_send = now
                task = asyncio.create_task(self._send(index, row, label, wants_label))
                self.in_flight.add(task)
                task.add_done_callback(self._on_done)
            send_window = last_send - t0 + interval
            await self._drain()
            _raise_if_failed(ticker)
            requests_done.set()
            self.report_progress()
            if self.feedback is not None:
                await background[0]
            _raise_if_failed(ticker)
        finally:
            requests_done.set()
            rows.close()
            for task in (*background, *self.in_flight):
                task.cancel()
            await asyncio.gather(*background, *self.in_flight, return_exceptions=True)
        self.report_progress()
        return self._report(send_window if self.sent else 0.0)

    async def _drain(self) -> None:
        if not self.in_flight:
            return
        _, pending = await asyncio.wait(set(self.in_flight), timeout=self.plan.timeout_s + _DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        if task.cancelled():
            self._record_transport_error("Cancelled")
            return
        exc = task.exception()
        if exc is not None:
            logger.error("traffic request failed unexpectedly", exc_info=exc)
            self._record_transport_error(f"internal:{type(exc).__name__}")

    def _record_transport_error(self, kind: str) -> None:
        stats = self.arms[UNKNOWN_ARM]
        stats.requests += 1
        stats.transport += 1
        self.errors[kind] += 1
        self.finished += 1

    async def _send(self, index: int, row: dict[str, Any], label: int, wants_label: bool) -> None:
        loop = asyncio.get_running_loop()
        request_id = f"{self.run_id}-{index}"
        payload = v2_request(row) if self.plan.protocol == "v2" else {"instances": [row]}
        body = json.dumps(payload).encode()
        headers = {**self._headers, REQUEST_ID_HEADER: request_id}
        start = loop.time()
        try:
            response = await self.client.post(
                self.plan.predict_url, content=body, headers=headers, timeout=self.plan.timeout_s
            )
        except (httpx.HTTPError, OSError) as exc:
            self._record_transport_error(type(exc).__name__)
            return
        end = loop.time()
        self._record_response(response, (end - start) * 1000.0)
        if response.is_success and wants_label and self.feedback is not None:
            self.feedback.add(request_id, label, end + self.plan.feedback_delay_s)

    def _record_response(self, response: httpx.Response, latency_ms: float) -> None:
        payload: Any = None
        if response.is_success:
            try:
                payload = response.json()
            except (ValueError, UnicodeDecodeError):
                payload = None
        arm = response.headers.get(ARM_SERVED_HEADER, "").strip().lower()
        if not arm and isinstance(payload, dict) and isinstance(payload.get("arm"), str):
            arm = payload["arm"].strip().lower()
        stats = self.arms[arm if arm in ARMS else UNKNOWN_ARM]
        stats.requests += 1
        stats.status_codes[response.status_code] += 1
        stats.latencies_ms.append(latency_ms)
        self.finished += 1
        status = response.status_code
        if 400 <= status < 500:
            stats.c4xx += 1
        elif status >= 500:
            stats.c5xx += 1
        if not response.is_success:
            return
        stats.ok += 1
        prediction = _first_number(payload, "predictions")
        if prediction is None and isinstance(payload, dict) and isinstance(payload.get("outputs"), list):
            prediction = next(
                (v for v in (_first_number(o, "data") for o in payload["outputs"]) if v is not None), None
            )
        probability = _first_number(payload, "probabilities")
        if prediction is None and probability is None:
            stats.malformed += 1
        if prediction is not None:
            stats.predictions += 1
            stats.positives += int(prediction >= 0.5)
        if probability is not None:
            stats.probabilities += 1
            stats.probability_sum += probability

    def _report(self, send_window_s: float) -> TrafficReport:
        total = _ArmStats()
        for stats in self.arms.values():
            total.merge(stats)
        arms = {arm: stats.report() for arm, stats in self.arms.items() if arm in ARMS or stats.requests}
        feedback = self.feedback
        return TrafficReport(
            run_id=self.run_id,
            plan=self.plan,
            arms=arms,
            total=total.report(),
            planned=self.total,
            sent=self.sent,
            shed=self.shed,
            late=self.late,
            max_lag_ms=self.max_lag_s * 1000.0,
            achieved_rps=self.sent / send_window_s if send_window_s > 0 else 0.0,
            duration_s=time.monotonic() - self.started,
            errors=dict(self.errors),
            feedback_sent=feedback.sent if feedback else 0,
            feedback_failed=feedback.failed if feedback else 0,
            feedback_dropped=feedback.dropped if feedback else 0,
            feedback_errors=dict(feedback.errors) if feedback else {},
        )


def _raise_if_failed(task: asyncio.Task[None] | None) -> None:
    if task is not None and task.done() and not task.cancelled():
        task.result()


_V2_TYPES = ((bool, "BOOL"), (int, "INT64"), (float, "FP64"), (str, "BYTES"))


def v2_request(row: dict[str, Any]) -> dict[str, Any]:
    """One row as an Open Inference (V2) request: a tensor per column, decoded as a DataFrame
    (``content_type: pd``) by MLServer's MLflow runtime and by the local model servers alike."""
    inputs = []
    for name, value in row.items():
        datatype = next((t for kind, t in _V2_TYPES if isinstance(value, kind)), "BYTES")
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
    return {"inputs": inputs, "parameters": {"content_type": "pd"}}


def _first_number(payload: Any, key: str) -> float | None:
    if not isinstance(payload, dict):
        return None
    values = payload.get(key)
    if not isinstance(values, list) or not values:
        return None
    value = values[0]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def make_client(plan: TrafficPlan) -> httpx.AsyncClient:
    """The client :func:`run_traffic` uses when none is given: a pool sized to the concurrency limit
    (plus room for feedback posts) and no proxy settings from the environment."""
    limits = httpx.Limits(
        max_connections=plan.concurrency + 2, max_keepalive_connections=plan.concurrency + 2
    )
    return httpx.AsyncClient(limits=limits, timeout=plan.timeout_s, trust_env=False)


async def run_traffic(
    plan: TrafficPlan,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    client: httpx.AsyncClient | None = None,
) -> TrafficReport:
    """Send the plan's requests open-loop at ``plan.rps`` and return what happened.

    Transport errors, timeouts and error statuses are counted in the report, never raised; the call
    returns after the last request finished (or was cancelled ``timeout_s`` + 2 s after the last
    send) and the pending labels were posted (waiting at most about ``feedback_delay_s`` + 1.5 s).
    ``on_progress`` is called from the event loop every ``PROGRESS_INTERVAL_S`` and at the end; an
    exception it raises stops the sending, cancels what is in flight and propagates. A given
    ``client`` is used as is (its pool limits may turn load into ``PoolTimeout`` transport errors)
    and left open; otherwise :func:`make_client` is used and closed. Cancelling the call cancels
    in-flight requests and returns nothing.
    """
    owned = client is None
    http = make_client(plan) if client is None else client
    try:
        return await _Run(plan, http, on_progress).run()
    finally:
        if owned:
            await http.aclose()


def run_traffic_sync(
    plan: TrafficPlan,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    client: httpx.AsyncClient | None = None,
) -> TrafficReport:
    """:func:`run_traffic` in a fresh event loop (for the CLI; not callable from a running loop)."""
    return asyncio.run(run_traffic(plan, on_progress=on_progress, client=client))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_summary(report: TrafficReport) -> Table:
    """A per-arm table (plus an ``unknown`` row when present and a total row) for the closing summary."""
    plan = report.plan
    title = (
        f"traffic to {plan.model} via {plan.front_door_url}: {report.sent}/{report.planned} sent "
        f"in {report.duration_s:.1f} s ({report.achieved_rps:.1f} req/s of {plan.rps:g} target)"
    )
    notes = [f"shed {report.shed}", f"late {report.late} (max lag {report.max_lag_ms:.0f} ms)"]
    if report.errors:
        notes.append("errors " + ", ".join(f"{kind} {n}" for kind, n in sorted(report.errors.items())))
    if plan.collector_url is not None:
        notes.append(
            f"feedback sent {report.feedback_sent}, failed {report.feedback_failed}, "
            f"dropped {report.feedback_dropped}"
        )
    table = Table(title=title, caption="; ".join(notes))
    for column in ("arm", "requests", "share", "ok", "4xx", "5xx", "transport"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for column in ("p50 ms", "p95 ms", "p99 ms", "positive rate", "mean p"):
        table.add_column(column, justify="right")

    def add(name: str, arm: ArmReport, share: float | None, *, end_section: bool = False) -> None:
        table.add_row(
            name,
            str(arm.requests),
            "-" if share is None else f"{share:.1%}",
            str(arm.ok),
            str(arm.client_errors_4xx),
            str(arm.server_errors_5xx),
            str(arm.transport_errors),
            _ms(arm.latency_p50_ms),
            _ms(arm.latency_p95_ms),
            _ms(arm.latency_p99_ms),
            _rate(arm.positive_rate),
            _rate(arm.mean_probability),
            end_section=end_section,
        )

    names = list(report.arms)
    for i, name in enumerate(names):
        add(
            name,
            report.arms[name],
            report.share(name) if name in ARMS else None,
            end_section=i == len(names) - 1,
        )
    add("total", report.total, None)
    return table


__all__ = [
    "ARMS",
    "CHUNK_ROWS",
    "FEEDBACK_INTERVAL_S",
    "MAX_REQUESTS",
    "UNKNOWN_ARM",
    "ArmReport",
    "Progress",
    "TrafficPlan",
    "TrafficReport",
    "chunk_seed",
    "make_client",
    "render_summary",
    "run_traffic",
    "run_traffic_sync",
]
