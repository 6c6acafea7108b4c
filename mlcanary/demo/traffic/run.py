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
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import httpx

from mlcanary.demo.traffic.feedback import FeedbackPoster
from mlcanary.demo.traffic.plan import LATE_TOLERANCE_S, PROGRESS_INTERVAL_S, TrafficPlan
from mlcanary.demo.traffic.report import UNKNOWN_ARM, ArmTally, Progress, TrafficReport
from mlcanary.demo.traffic.rows import RowSource
from mlcanary.demo.traffic.wire import prediction_of, probability_of, request_body
from mlcanary.rollout.arms import ARMS
from mlcanary.serving.headers import ARM_HEADER, ARM_SERVED_HEADER, REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

# Extra wait for in-flight requests after the last send, beyond the per-request timeout, before
# they are cancelled: httpx's timeouts apply per phase (connect, write, read), not to the whole call.
_DRAIN_GRACE_S: Final = 2.0
# Ids from one run share a random prefix so several runs can feed the same store without clashes.
_RUN_ID_HEX: Final = 12


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
        self.arms: dict[str, ArmTally] = {arm: ArmTally() for arm in (*ARMS, UNKNOWN_ARM)}
        self.errors: Counter[str] = Counter()
        self.finished = 0
        self.sent = 0
        self.shed = 0
        self.late = 0
        self.max_lag_s = 0.0
        self.in_flight: set[asyncio.Task[None]] = set()
        self.feedback = (
            FeedbackPoster(plan, client) if plan.collector_url and plan.feedback_share > 0 else None
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
        rows = RowSource(self.plan, self.total)
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
        body = json.dumps(request_body(row, self.plan.protocol)).encode()
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
        prediction = prediction_of(payload)
        probability = probability_of(payload)
        if prediction is None and probability is None:
            stats.malformed += 1
        if prediction is not None:
            stats.predictions += 1
            stats.positives += int(prediction >= 0.5)
        if probability is not None:
            stats.probabilities += 1
            stats.probability_sum += probability

    def _report(self, send_window_s: float) -> TrafficReport:
        total = ArmTally()
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
