"""The collector's sustained ingest over HTTP, fed by the model servers' real payload logger.

The collector runs as the local stack runs it (``python -m mlcanary.telemetry.collector``, its own
process) on a fresh database. Two :class:`~mlcanary.serving.local.payload_logger.PayloadLogger`\\ s —
one per arm, as the two model servers have — are fed the request and response events of
single-instance V1 predictions as fast as they deliver them (a producer tops each queue up, so
nothing is dropped for a full queue) for ``seconds``; then the loggers drain and close. The loggers
run with their defaults: CloudEvents batches, one collector transaction per batch. The rate is
acknowledged events per second (two per request). Then the count is reconciled: every acknowledged
request and response event must be a half of a row in the database.

Last, what a model server pays to log: the CPU time of one payload logger delivering 2,000 queued
events to the same collector, per event, in batches (the default) and one event per POST (binary
mode, ``max_batch=1``, as before batching and as KServe's agent sends). Only the logger's thread
works meanwhile (the events are built beforehand, the main thread waits in ``close``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from mlcanary.serving.local.payload_logger import DEFAULT_MAX_BATCH, PayloadLogger
from mlcanary.telemetry.events import CE_TYPE_REQUEST, CE_TYPE_RESPONSE, InferenceEvent
from mlcanary.telemetry.store import InferenceLogStore, inference_log
from mlcanary.testing.collector_process import collector_process
from mlcanary.testing.ports import free_ports

FEATURES = [round(0.1 * i, 1) for i in range(30)]
MODEL = "fraud-ingest"
CPU_MODEL = "fraud-logger-cpu"
CPU_EVENTS = 2_000
#: Events kept queued per logger: enough to never idle it, few enough to drain at once at the end.
_MAX_PENDING = 4 * DEFAULT_MAX_BATCH


@dataclass(frozen=True)
class IngestResult:
    """One database's ingest run."""

    backend: str
    seconds: float
    events_acked: int
    requests_acked: int
    events_per_s: float
    requests_per_s: float
    rows_with_request: int
    rows_with_response: int
    failed: int
    dropped: int
    posts: int
    sender_cpu_us_batched: float
    sender_cpu_us_single: float

    @property
    def lost(self) -> int:
        """Acknowledged halves missing from the database."""
        return self.events_acked - self.rows_with_request - self.rows_with_response


def _events(arm: str, version: str, i: int, model: str = MODEL) -> list[InferenceEvent]:
    common = {"ce_id": f"{model}-{arm}-{i}", "source": f"http://bench/{arm}", "model": model, "arm": arm}
    now = datetime.now(UTC)
    request = InferenceEvent(
        ce_type=CE_TYPE_REQUEST,
        time=now,
        body=json.dumps({"instances": [FEATURES]}).encode(),
        version=version,
        **common,
    )
    response = InferenceEvent(
        ce_type=CE_TYPE_RESPONSE,
        time=now,
        body=json.dumps({"predictions": [i % 2]}).encode(),
        version=version,
        latency_ms=3.0,
        status=200,
        **common,
    )
    return [request, response]


def _feed(sink: PayloadLogger, arm: str, version: str, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        if sink.stats()["pending"] > _MAX_PENDING:
            time.sleep(0.001)
            continue
        for event in _events(arm, version, i):
            sink.submit(event)
        i += 1


def _sender_cpu_us(url: str, max_batch: int, tag: str, count: int) -> float:
    """CPU microseconds per event of one logger delivering ``count`` queued events."""
    events = [e for i in range(count // 2) for e in _events("champion", "1", i, f"{CPU_MODEL}-{tag}")]
    sink = PayloadLogger(url, max_batch=max_batch, max_queue=len(events), linger_s=0.0)
    started = time.process_time()
    for event in events:
        sink.submit(event)
    sink.close(timeout=300)
    spent = time.process_time() - started
    if sink.stats()["sent"] != len(events):
        raise RuntimeError(f"the CPU probe lost events: {sink.stats()}")
    return spent / len(events) * 1e6


def run_ingest(
    backend: str, db_url: str, seconds: float, progress, cpu_events: int = CPU_EVENTS
) -> IngestResult:
    """Measure the collector on ``db_url`` for ``seconds``, and the logger's CPU per event over
    ``cpu_events`` events in each mode (see the module docstring)."""
    InferenceLogStore(db_url).close()  # tables exist before the clock starts
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    with collector_process(port, db_url, deadline_s=60.0):
        loggers = {arm: PayloadLogger(f"{url}/events") for arm in ("champion", "candidate")}
        stop = threading.Event()
        feeders = [
            threading.Thread(target=_feed, args=(sink, arm, v, stop), daemon=True)
            for (arm, sink), v in zip(loggers.items(), ("1", "2"), strict=True)
        ]
        started = time.perf_counter()
        for feeder in feeders:
            feeder.start()
        time.sleep(seconds)
        stop.set()
        for feeder in feeders:
            feeder.join()
        for sink in loggers.values():
            sink.close(timeout=120)
        elapsed = time.perf_counter() - started
        stats = [sink.stats() for sink in loggers.values()]
        batched_cpu = _sender_cpu_us(f"{url}/events", DEFAULT_MAX_BATCH, "batched", cpu_events)
        single_cpu = _sender_cpu_us(f"{url}/events", 1, "single", cpu_events)
    sent = sum(s["sent"] for s in stats)
    with InferenceLogStore(db_url) as store, store.engine.connect() as connection:
        t = inference_log
        with_request, with_response = connection.execute(
            select(func.count(t.c.request_received_at), func.count(t.c.response_received_at)).where(
                t.c.model == MODEL
            )
        ).one()
    result = IngestResult(
        backend=backend,
        seconds=elapsed,
        events_acked=sent,
        requests_acked=sent // 2,
        events_per_s=sent / elapsed,
        requests_per_s=sent / 2 / elapsed,
        rows_with_request=int(with_request),
        rows_with_response=int(with_response),
        failed=sum(s["failed"] for s in stats),
        dropped=sum(s["dropped"] for s in stats),
        posts=sum(s["posts"] for s in stats),
        sender_cpu_us_batched=batched_cpu,
        sender_cpu_us_single=single_cpu,
    )
    progress(
        f"ingest {backend}: {result.events_per_s:,.0f} events/s, lost {result.lost}; logger CPU per event "
        f"{batched_cpu:.0f} µs batched, {single_cpu:.0f} µs one per POST"
    )
    return result
