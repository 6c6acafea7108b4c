"""Reading every counter the soak reconciles: Envoy's admin stats and access log, the model
servers' payload loggers, the collector's ``/stats`` and the inference log's rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from benchmarks.soak.reconcile import StoreRow
from mlcanary.telemetry.store import InferenceLogStore, feedback, inference_log

_STATS_FILTER = r"^(cluster\.(champion|candidate)\.upstream_rq|http\.ingress_http\.downstream_rq)"


def _get_json(url: str) -> Any:
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        response = client.get(url)
        response.raise_for_status()
        return response.json()


def envoy_stats(admin_url: str) -> dict[str, int]:
    """Envoy's request counters of the listener and of both clusters (admin ``/stats``)."""
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        response = client.get(f"{admin_url}/stats", params={"filter": _STATS_FILTER})
        response.raise_for_status()
    counters: dict[str, int] = {}
    for line in response.text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            counters[name.strip()] = int(value)
    return counters


def access_log(path: Path) -> list[dict[str, Any]]:
    """Every line of Envoy's JSON access log."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def payload_logger(server_url: str) -> dict[str, int] | None:
    """A model server's payload-logger counters, None when the server does not answer."""
    try:
        stats = _get_json(f"{server_url}/metrics/payload-logger")
    except (httpx.HTTPError, ValueError):
        return None
    return stats if isinstance(stats, dict) and "sent" in stats else None


def collector_stats(collector_url: str) -> dict[str, Any]:
    return dict(_get_json(f"{collector_url}/stats"))


def store_counts(store_url: str, run_id: str) -> tuple[dict[str, StoreRow], tuple[int, int], int]:
    """The run's rows by request id, the request and response halves of every row, and the
    labels stored for the run's requests."""
    t, prefix = inference_log, f"{run_id}-%"
    with InferenceLogStore(store_url) as store, store.engine.connect() as connection:
        rows = connection.execute(
            select(
                t.c.request_id,
                t.c.arm,
                t.c.status_code,
                t.c.request_received_at.is_not(None),
                t.c.response_received_at.is_not(None),
            ).where(t.c.request_id.like(prefix), t.c.instance_index == 0)
        ).all()
        halves = connection.execute(
            select(func.count(t.c.request_received_at), func.count(t.c.response_received_at))
        ).one()
        labels = connection.execute(
            select(func.count()).select_from(feedback).where(feedback.c.request_id.like(prefix))
        ).scalar_one()
    by_id = {str(r[0]): StoreRow(r[1], r[2], bool(r[3]), bool(r[4])) for r in rows}
    return by_id, (int(halves[0]), int(halves[1])), int(labels)


def log_warnings(log_path: Path, needles: Mapping[str, str]) -> dict[str, int]:
    """How many lines of a process's log contain each needle (e.g. the payload logger's drop and
    delivery-failure warnings)."""
    if not log_path.exists():
        return dict.fromkeys(needles, 0)
    text = log_path.read_text(errors="replace").splitlines()
    return {name: sum(1 for line in text if needle in line) for name, needle in needles.items()}
