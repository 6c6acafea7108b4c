"""Where the collector's time goes on a batch, in-process (no HTTP)::

    python -m benchmarks.inference_log.ingest_split [--batches N] [--backends sqlite,postgresql]

For each database: ``N`` batches of 256 events (128 request/response pairs of single-instance V1
predictions, encoded as the payload logger encodes them) are validated (``parse_batch``) and written
(``write_batch``, one transaction each); prints the mean wall and CPU milliseconds of each step per
batch, and what one compilation of the store's upsert costs and whether SQLAlchemy can cache it.
CPU is this process's (on PostgreSQL the server's own CPU is not in it). Behind the prose of the
ingest goal in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime

from benchmarks.inference_log.postgres import postgres_url
from mlcanary.telemetry.batch_ingest import decode_batch, parse_batch, write_batch
from mlcanary.telemetry.events import CE_TYPE_REQUEST, CE_TYPE_RESPONSE, InferenceEvent, encode_batch
from mlcanary.telemetry.store import InferenceLogStore, inference_log

FEATURES = [round(0.1 * i, 1) for i in range(30)]
PAIRS_PER_BATCH = 128


def _batch(number: int) -> bytes:
    events: list[InferenceEvent] = []
    for i in range(number * PAIRS_PER_BATCH, (number + 1) * PAIRS_PER_BATCH):
        common = {"ce_id": f"split-{i}", "source": "http://bench/split", "model": "fraud-split"}
        common |= {"arm": "champion", "version": "1", "time": datetime.now(UTC)}
        request = json.dumps({"instances": [FEATURES]}).encode()
        events.append(InferenceEvent(ce_type=CE_TYPE_REQUEST, body=request, **common))
        response = json.dumps({"predictions": [i % 2]}).encode()
        events.append(
            InferenceEvent(ce_type=CE_TYPE_RESPONSE, body=response, latency_ms=3.0, status=200, **common)
        )
    return encode_batch([event.to_structured() for event in events])


def measure(url: str, batches: int) -> dict[str, float]:
    """Mean wall / CPU ms per batch of parsing and of writing, and one upsert compilation's ms."""
    bodies = [_batch(number) for number in range(batches)]
    totals = dict.fromkeys(("parse_wall", "parse_cpu", "write_wall", "write_cpu"), 0.0)
    with InferenceLogStore(url) as store:
        for body in bodies:
            wall, cpu = time.perf_counter(), time.process_time()
            parsed, rejected = parse_batch(decode_batch(body), received_at=datetime.now(UTC))
            assert not rejected, rejected
            middle_wall, middle_cpu = time.perf_counter(), time.process_time()
            write_batch(store, parsed)
            totals["parse_wall"] += middle_wall - wall
            totals["parse_cpu"] += middle_cpu - cpu
            totals["write_wall"] += time.perf_counter() - middle_wall
            totals["write_cpu"] += time.process_time() - middle_cpu
        upsert = store._upsert(inference_log)
        started = time.perf_counter()
        for _ in range(20):
            upsert.compile(dialect=store.engine.dialect)
        compile_ms = (time.perf_counter() - started) / 20 * 1000
        cacheable = upsert._generate_cache_key() is not None
    result = {name: value / batches * 1000 for name, value in totals.items()}
    return result | {"compile_ms": compile_ms, "upsert_cacheable": float(cacheable)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inference_log.ingest_split", description=__doc__
    )
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    columns = ["parse: wall / CPU ms per batch", "write: wall / CPU ms per batch", "upsert compile (ms)"]
    print("| database | " + " | ".join(columns) + " | upsert cached by SQLAlchemy |")
    print("| --- | ---: | ---: | ---: | --- |")
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="mlcanary-split-") as tmp:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            url = stack.enter_context(postgres_url()) if backend == "postgresql" else f"sqlite:///{tmp}/s.db"
            r = measure(url, args.batches)
            print(
                f"| {backend} | {r['parse_wall']:.1f} / {r['parse_cpu']:.1f} | {r['write_wall']:.1f} / "
                f"{r['write_cpu']:.1f} | {r['compile_ms']:.1f} | {'yes' if r['upsert_cacheable'] else 'no'} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
