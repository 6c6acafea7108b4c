"""The soak's open-loop client, a separate process: ``python -m benchmarks.soak.client_worker CONFIG``.

It is the product's own traffic replayer (:func:`mlcanary.demo.traffic.run.run_traffic`, what
``mlcanary traffic`` runs: requests due at ``t0 + i / rate`` whatever the answers do, delayed labels
posted to the collector) with one addition: an httpx response hook that keeps, for every
prediction answered, the request id, the status and which arm — and whether a model server (rather
than Envoy) — answered it, so the soak can reconcile request by request.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mlcanary.demo.traffic.plan import TrafficPlan
from mlcanary.demo.traffic.report import Progress
from mlcanary.demo.traffic.run import make_client, run_traffic
from mlcanary.serving.headers import ARM_SERVED_HEADER, REQUEST_ID_HEADER, SERVER_ARM_HEADER


async def _soak(config: dict[str, Any]) -> dict[str, Any]:
    plan = TrafficPlan(
        front_door_url=config["url"],
        model=config["model"],
        rps=config["rate"],
        duration_s=config["duration_s"],
        seed=config["seed"],
        collector_url=config["collector_url"],
        feedback_delay_s=3.0,
        feedback_share=0.5,
    )
    records: list[list[Any]] = []
    ready = Path(config["ready"])

    async def on_response(response: httpx.Response) -> None:
        if response.request.url.path.endswith(":predict"):
            records.append(
                [
                    time.monotonic_ns(),
                    response.request.headers.get(REQUEST_ID_HEADER),
                    response.status_code,
                    response.headers.get(ARM_SERVED_HEADER),
                    response.headers.get(SERVER_ARM_HEADER),
                ]
            )

    def on_progress(progress: Progress) -> None:
        if progress.sent and not ready.exists():
            ready.write_text("ready")

    client = make_client(plan)
    client.event_hooks = {"request": [], "response": [on_response]}
    try:
        report = await run_traffic(plan, on_progress=on_progress, client=client)
    finally:
        await client.aclose()
    return {"report": report.to_dict(), "records": records}


def main(config_path: Path) -> int:
    config = json.loads(config_path.read_text())
    result = asyncio.run(_soak(config))
    out = Path(config["out"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.rename(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
