"""The benchmark's model: settings on free ports, a champion and a candidate, request bodies."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.serving.plan import HOST, REPO_ROOT

if TYPE_CHECKING:
    from mlcanary.config import Settings


def bench_settings(
    state_dir: Path, rows: int, estimator: str | None, extra: Mapping[str, Any] | None = None
) -> Settings:
    """Settings of a benchmark's stack in ``state_dir`` on free ports (``extra``: more dotted keys)."""
    from mlcanary.config import load_settings
    from mlcanary.testing.ports import free_port_overrides

    overrides: dict[str, Any] = {
        "state_dir": str(state_dir),
        "model.name": "bench-model",
        "data.synthetic.rows": rows,
        "training.reference_rows": min(500, rows // 4),
        "serving.host": HOST,
        **free_port_overrides(HOST),
    }
    if estimator:
        overrides["model.estimator"] = estimator
    overrides.update(extra or {})
    return load_settings("local", config_dir=REPO_ROOT / "configs", env={}, overrides=overrides)


def train_versions(settings: Settings) -> tuple[str, str]:
    from mlcanary.registry.mlflow_registry import registry_from_settings
    from mlcanary.training import train

    registry = registry_from_settings(settings)
    first = train(settings, registry)
    if first.alias != "champion":
        raise RuntimeError(f"the first training run should become @champion: {first}")
    second = train(settings, registry)
    if second.alias != "candidate":
        raise RuntimeError(f"the second training run should become @candidate: {second.gate}")
    return first.version, second.version


def instances(settings: Settings, n: int = 500) -> list[dict[str, Any]]:
    from mlcanary.data.loader import load_dataset

    frame = load_dataset(settings.data).x.head(n)
    # Round-trip through JSON so the values are plain Python (no numpy scalars).
    rows = json.loads(frame.to_json(orient="records"))
    assert isinstance(rows, list)
    return rows


def predict_bodies(rows: Sequence[dict[str, Any]]) -> list[bytes]:
    return [json.dumps({"instances": [row]}).encode() for row in rows]
