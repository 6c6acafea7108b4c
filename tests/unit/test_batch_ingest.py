"""Batches of CloudEvents from the real PayloadLogger through the real collector (uvicorn, HTTP) into a
real SQLite inference log: pairing, rejections named per event, one transaction per batch, retries
after a 503 that lose and duplicate nothing, and KServe's binary events beside the batches.

One collector and one store serve the whole module; each test uses its own request ids. Faults are
injected at the store's ``write_rows`` (the database underneath is real): a refusal of some values,
and a database error before or after the batch's transaction commits. The same paths against real
database faults (locked, full, stopped) are in ``tests/integration/test_inference_log_outage.py``.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from collector_thread import collector_in_thread
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from mlcanary.serving.local.payload_logger import PayloadLogger
from mlcanary.telemetry.aggregate import aggregate
from mlcanary.telemetry.batch_ingest import combine_halves, decode_batch, parse_batch
from mlcanary.telemetry.cloudevents_ingest import rows_from_event
from mlcanary.telemetry.events import (
    BATCH_CONTENT_TYPE,
    CE_TYPE_REQUEST,
    CE_TYPE_RESPONSE,
    InferenceEvent,
    encode_batch,
    local_source,
)
from mlcanary.telemetry.incremental import incremental_aggregate
from mlcanary.telemetry.rollup_tables import rollup_dirty
from mlcanary.telemetry.store import InferenceLogStore, InferenceRow, WriteResult, inference_log, shadow_log

MODEL = "fraud"
WAIT = 10.0  # generous bound for a thread to reach a point; never asserted on


class FaultyStore(InferenceLogStore):
    """A real SQLite store whose ``write_rows`` can fail on cue: ``refuse`` (a request-id prefix the
    database refuses, as for a value it cannot hold) and ``faults`` ("before": unavailable, nothing
    written; "after": the transaction committed, then the reply is lost), one per call."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.refuse: str | None = None
        self.faults: list[str] = []
        self.calls: list[int] = []  # rows per write_rows call

    def write_rows(self, rows: Iterable[InferenceRow]) -> WriteResult:
        rows = list(rows)
        self.calls.append(len(rows))
        if self.refuse and any(row.request_id.startswith(self.refuse) for row in rows):
            raise IntegrityError("INSERT", {}, sqlite3.IntegrityError("CHECK constraint failed"))
        fault = self.faults.pop(0) if self.faults else None
        if fault == "before":
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        result = super().write_rows(rows)
        if fault == "after":
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError("disk I/O error"))
        return result


@dataclass
class Collector:
    url: str
    store: FaultyStore

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/stats", timeout=WAIT).json()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    db = tmp_path_factory.mktemp("batch") / "inference.db"
    store = FaultyStore(f"sqlite:///{db}")
    try:
        with collector_in_thread(store) as url:
            yield Collector(url, store)
    finally:
        store.close()


@pytest.fixture(autouse=True)
def _no_faults_left(collector: Collector) -> Iterator[None]:
    yield
    collector.store.refuse = None
    collector.store.faults.clear()


def event(
    rid: str, *, response: bool, instances: int = 1, body: bytes | None = None, model: str = MODEL
) -> InferenceEvent:
    if body is None:
        body = (
            b'{"predictions": [%s]}' % b", ".join([b"[0.25, 0.75]"] * instances)
            if response
            else b'{"instances": [%s]}' % b", ".join([b'{"amount": 12.5}'] * instances)
        )
    return InferenceEvent(
        ce_id=rid,
        ce_type=CE_TYPE_RESPONSE if response else CE_TYPE_REQUEST,
        source=local_source(model, "candidate", "2"),
        time=datetime.now(UTC),
        model=model,
        arm="candidate",
        version="2",
        body=body,
        latency_ms=4.0 if response else None,
        status=200 if response else None,
    )


def pairs(prefix: str, n: int, instances: int = 1, model: str = MODEL) -> list[InferenceEvent]:
    return [
        event(f"{prefix}-{i:03d}", response=response, instances=instances, model=model)
        for i in range(n)
        for response in (False, True)
    ]


def send(collector: Collector, events: list[InferenceEvent], **options: float) -> dict[str, int]:
    """Deliver ``events`` with a real PayloadLogger in one batch (it closes when full); its stats."""
    sender = PayloadLogger(
        f"{collector.url}/events", max_batch=len(events), linger_s=WAIT, retry_backoff=0.01, **options
    )
    for item in events:
        assert sender.submit(item)
    sender.close(timeout=WAIT * 3)
    return sender.stats()


def stored(store: InferenceLogStore, prefix: str) -> list[tuple[str, int, int | None, float | None, bool]]:
    """(request id, instance, status, probability, paired) of the rows under ``prefix``, in key order."""
    t = inference_log
    query = (
        select(
            t.c.request_id,
            t.c.instance_index,
            t.c.status_code,
            t.c.probability,
            t.c.request_received_at.is_not(None) & t.c.response_received_at.is_not(None),
        )
        .where(t.c.request_id.startswith(prefix))
        .order_by(t.c.request_id, t.c.instance_index)
    )
    with store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def post_batch(collector: Collector, events: list[bytes]) -> httpx.Response:
    return httpx.post(
        f"{collector.url}/events",
        content=encode_batch(events),
        headers={"content-type": BATCH_CONTENT_TYPE},
        timeout=WAIT,
    )


def test_a_batch_is_stored_paired_in_one_transaction_with_its_rollup_marks(collector: Collector) -> None:
    before = collector.stats()
    with collector.store.engine.connect() as connection:
        marks_before = connection.execute(select(func.count()).select_from(rollup_dirty)).scalar_one()
    calls_before = len(collector.store.calls)

    stats = send(collector, pairs("trip", 20, instances=2))

    assert (stats["sent"], stats["failed"], stats["posts"]) == (40, 0, 1)
    # One write_rows (one transaction) for the batch; each instance's two halves folded into one row.
    assert collector.store.calls[calls_before:] == [40]
    rows = stored(collector.store, "trip-")
    assert rows == [(f"trip-{i:03d}", k, 200, 0.75, True) for i in range(20) for k in range(2)]
    after = collector.stats()
    assert after["batches"] - before["batches"] == 1
    assert after["events_accepted"] - before["events_accepted"] == 40
    assert after["request_events"] - before["request_events"] == 20
    assert after["paired_rows_written"] - before["paired_rows_written"] == 40
    with collector.store.engine.connect() as connection:
        marks = connection.execute(select(func.count()).select_from(rollup_dirty)).scalar_one()
    assert marks > marks_before, "the running sums learn of the new rows in the same transaction"


def test_a_bad_event_is_named_and_the_rest_of_its_batch_stored(collector: Collector) -> None:
    good_request, good_response = (event("bad-000", response=r) for r in (False, True))
    unreadable = event("bad-001", response=True, body=b"<html>oops</html>")
    no_id = event("bad-002", response=False).to_structured().replace(b'"id":"bad-002",', b"")
    before = collector.stats()

    reply = post_batch(
        collector,
        [good_request.to_structured(), unreadable.to_structured(), no_id, good_response.to_structured()],
    )

    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert {key: answer[key] for key in ("events", "stored", "rows", "paired")} == {
        "events": 4,
        "stored": 2,
        "rows": 1,
        "paired": 1,
    }
    assert [(r["index"], r["id"]) for r in answer["rejected"]] == [(1, "bad-001"), (2, None)]
    assert "response body is not valid JSON" in answer["rejected"][0]["error"]
    assert "ce-id" in answer["rejected"][1]["error"]
    assert stored(collector.store, "bad-") == [("bad-000", 0, 200, 0.75, True)]
    assert collector.stats()["malformed"] - before["malformed"] == 2


def test_a_batch_the_database_refuses_is_written_event_by_event(collector: Collector) -> None:
    collector.store.refuse = "refused-"
    events = [*pairs("kept", 2), event("refused-0", response=False), *pairs("kept-late", 1)]
    reply = post_batch(collector, [item.to_structured() for item in events])
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["stored"] == 6
    assert answer["rejected"] == [
        {"index": 4, "id": "refused-0", "error": "event rejected by the store: IntegrityError"}
    ]
    assert [row[0] for row in stored(collector.store, "kept")] == ["kept-000", "kept-001", "kept-late-000"]
    assert stored(collector.store, "refused-") == []


@pytest.mark.parametrize("fault", ["before", "after"])
def test_a_503_mid_batch_is_retried_and_loses_or_duplicates_nothing(collector: Collector, fault: str) -> None:
    """ "before": the transaction failed, nothing of the batch committed; "after": it committed but
    the sender heard 503 — the re-sent batch merges into the same rows."""
    prefix = model = f"retry-{fault}"
    collector.store.faults = [fault]
    before = collector.stats()
    start = datetime.now(UTC) - timedelta(seconds=1)

    stats = send(collector, pairs(prefix, 15, model=model))

    assert (stats["sent"], stats["failed"], stats["enqueued"]) == (30, 0, 30)
    assert collector.stats()["store_errors"] - before["store_errors"] == 1
    assert stored(collector.store, prefix) == [(f"{prefix}-{i:03d}", 0, 200, 0.75, True) for i in range(15)]
    # The judge's running sums count each request once, although "after" wrote the batch twice.
    until = datetime.now(UTC) + timedelta(seconds=1)
    arms = incremental_aggregate(collector.store, model, start, until, versions={"candidate": "2"})
    counts = ("requests", "responses", "instances", "answered", "probabilities")
    by_sums = {name: getattr(arms["candidate"], name) for name in counts}
    full = aggregate(collector.store, model, start, until)["candidate"]
    assert by_sums == {name: getattr(full, name) for name in counts} == dict.fromkeys(counts, 15)


def test_kserve_binary_events_pair_with_halves_sent_in_a_batch(collector: Collector) -> None:
    kserve_request = {
        "ce-specversion": "1.0",
        "ce-id": "kserve-000",
        "ce-type": CE_TYPE_REQUEST,
        "ce-source": "http://localhost:9081/",
        "ce-inferenceservicename": MODEL,
        "ce-namespace": "default",
        "content-type": "application/json",
    }
    reply = httpx.post(
        f"{collector.url}/events",
        content=b'{"instances": [[1.0, 2.0]]}',
        headers=kserve_request,
        timeout=WAIT,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"id": "kserve-000", "rows": 1, "paired": 0}
    reply = post_batch(collector, [event("kserve-000", response=True).to_structured()])
    assert reply.json()["paired"] == 1
    assert stored(collector.store, "kserve-") == [("kserve-000", 0, 200, 0.75, True)]


def test_an_empty_batch_is_answered_and_a_non_array_refused(collector: Collector) -> None:
    assert post_batch(collector, []).json() == {
        "events": 0,
        "stored": 0,
        "rows": 0,
        "paired": 0,
        "rejected": [],
    }
    reply = httpx.post(
        f"{collector.url}/events", content=b"{}", headers={"content-type": BATCH_CONTENT_TYPE}, timeout=WAIT
    )
    assert reply.status_code == 400
    assert "JSON array" in reply.json()["error"]


def test_parse_batch_reads_structured_data_and_base64_alike() -> None:
    base = event("p-000", response=False)
    member = b'"data_base64":"%s"' % base64.b64encode(base.body)
    as_data = base.to_structured().replace(member, b'"data":{"instances":[{"amount":12.5}]}')
    assert as_data != base.to_structured()
    batch = encode_batch([base.to_structured(), as_data])
    parsed, rejected = parse_batch(decode_batch(batch), received_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert rejected == []
    assert parsed[0].event == base, "data_base64 gives the payload back byte for byte"
    assert [item.rows[0].features for item in parsed] == [{"amount": 12.5}, {"amount": 12.5}]


# -- folding a request and its response into one row ------------------------------------------------

T1, T2 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC), datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC)
_rows = st.builds(
    InferenceRow,
    request_id=st.sampled_from(["a", "b"]),
    instance_index=st.sampled_from([0, 1]),
    model=st.sampled_from(["m", "n"]),
    received_at=st.sampled_from([T1, T1, T2]),
    half=st.sampled_from(["request", "response", "both"]),
    shadow=st.booleans(),
    event_time=st.none() | st.sampled_from([T1, T2, T1 - timedelta(seconds=3)]),
    arm=st.none() | st.sampled_from(["champion", "candidate"]),
    version=st.none() | st.sampled_from(["1", "2"]),
    source=st.none() | st.sampled_from(["s1", "s2"]),
    protocol=st.none() | st.sampled_from(["v1", "v2"]),
    status_code=st.none() | st.sampled_from([200, 503]),
    latency_ms=st.none() | st.sampled_from([1.5, 9.0]),
    features=st.none() | st.sampled_from([{"x": 1}, [2.0, 3.0]]),
    prediction=st.none() | st.sampled_from([0, 1]),
    probability=st.none() | st.sampled_from([0.25, 0.75]),
)


def _tables(store: InferenceLogStore) -> list[tuple[object, ...]]:
    found: list[tuple[object, ...]] = []
    with store.engine.connect() as connection:
        for table in (inference_log, shadow_log):
            query = select(table).order_by(table.c.request_id, table.c.instance_index)
            found += [(table.name, *row) for row in connection.execute(query)]
    return found


@pytest.fixture(scope="module")
def two_logs() -> Iterator[tuple[InferenceLogStore, InferenceLogStore]]:
    with InferenceLogStore("sqlite://") as in_order, InferenceLogStore("sqlite://") as folded:
        yield in_order, folded


@settings(max_examples=60, deadline=None)
@given(stored=st.lists(_rows, max_size=3), batch=st.lists(_rows, min_size=1, max_size=6))
def test_folded_halves_leave_the_log_as_writing_them_in_order_would(
    two_logs: tuple[InferenceLogStore, InferenceLogStore],
    stored: list[InferenceRow],
    batch: list[InferenceRow],
) -> None:
    in_order, folded = two_logs
    for store in (in_order, folded):
        with store.engine.begin() as connection:
            for table in (inference_log, shadow_log):
                connection.execute(table.delete())
        store.write_rows(stored)
    expected = in_order.write_rows(batch)
    result = folded.write_rows(combine_halves(batch))
    assert _tables(folded) == _tables(in_order)
    assert result.paired == expected.paired
    assert result.rows <= expected.rows


def test_a_batch_with_both_halves_writes_each_row_once() -> None:
    request, response = (event("f-000", response=r, instances=3) for r in (False, True))
    rows = [row for item in (request, response) for row in rows_from_event(item, received_at=T1)]
    folded = combine_halves(rows)
    assert [(row.instance_index, row.half) for row in folded] == [(0, "both"), (1, "both"), (2, "both")]
    assert folded[2].features == {"amount": 12.5}
    assert (folded[2].probability, folded[2].status_code) == (0.75, 200)
    assert folded[0].event_time == request.time, "the request's time is the moment of inference"
