"""Release gate of the local stack: a candidate is vetted before any traffic moves to it.

:class:`LocalReleaseGate` (a :class:`~mlcanary.rollout.ports.ReleaseGate`) refuses a candidate

1. without a usable signature, or whose inputs differ from the champion's
   (:func:`mlcanary.serving.release_gate.signature_refusal`), with how to fix it;
2. that its model server cannot load (the server's one-line reason);
3. that errors, returns NaN, an answer of the wrong shape, or classes the champion never returns
   when it scores reference rows sent **through the front door** exactly as users' requests are
   (V2, one input per column), forced to its arm with the arm header and marked not to be logged.

The candidate is loaded at 0 % of the traffic; a refused one is stopped again, so the champion's
serving is never touched. Pure rules are in :func:`preflight_refusal`.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd

from mlcanary.data.model_inputs import InputSchema
from mlcanary.registry.protocol import ModelRegistry
from mlcanary.rollout.model_outputs import OutputNames, OutputReading, read_outputs
from mlcanary.rollout.serving import ServingError
from mlcanary.serving.headers import ARM_HEADER, NO_LOG_HEADER
from mlcanary.serving.local.backend import LocalBackend
from mlcanary.serving.local.model_server import placeholder_request
from mlcanary.serving.release_gate import signature_refusal

logger = logging.getLogger(__name__)

RowsSource = Callable[[str, str], "tuple[pd.DataFrame | None, str]"]
"""(model, champion version) → reference rows (or None) and where they come from."""
DEFAULT_PREFLIGHT_ROWS = 32


@dataclass(frozen=True)
class ArmAnswer:
    """How one arm answered the preflight rows: HTTP status, error text, and what its answer held."""

    status: int
    error: str | None
    reading: OutputReading | None


def preflight_refusal(rows: int, candidate: ArmAnswer, champion: ArmAnswer | None) -> str | None:
    """The pure rules: why the candidate's answer to ``rows`` reference rows rules it out."""
    if candidate.status != 200 or candidate.reading is None:
        return f"it answers HTTP {candidate.status} on {rows} reference rows: {candidate.error or 'no body'}"
    reading = candidate.reading
    if reading.problem is not None:
        return f"its answer to {rows} reference rows is unusable: {reading.problem}"
    if champion is None or champion.reading is None or champion.reading.problem is not None:
        return None
    allowed = set(champion.reading.classes)
    if allowed and allowed <= {0, 1}:
        allowed |= {0, 1}
    extra = [value for value in reading.classes if value not in allowed]
    if allowed and extra and reading.labels is not None:
        shown = ", ".join(repr(value) for value in extra[:5])
        return (
            f"it returns class(es) the champion never returns: {shown} "
            f"(the champion's: {', '.join(repr(v) for v in sorted(allowed, key=repr))})"
        )
    return None


def v2_columns_request(frame: pd.DataFrame, schema: InputSchema) -> dict[str, Any]:
    """A V2 request (MLServer's pandas content type) with one input per column of ``schema``."""
    datatype = {"double": "FP64", "long": "INT64", "boolean": "BOOL", "string": "BYTES"}
    inputs = []
    for spec in schema.columns:
        values = frame[spec.name].tolist()
        if spec.dtype == "double":
            values = [
                None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v) for v in values
            ]
        elif spec.dtype == "long":
            values = [int(v) for v in values]
        elif spec.dtype == "boolean":
            values = [bool(v) for v in values]
        else:
            values = [str(v) for v in values]
        inputs.append(
            {"name": spec.name, "datatype": datatype[spec.dtype], "shape": [len(values), 1], "data": values}
        )
    return {"inputs": inputs, "parameters": {"content_type": "pd"}}


class LocalReleaseGate:
    """The :class:`~mlcanary.rollout.ports.ReleaseGate` of the local stack (module docstring)."""

    def __init__(
        self,
        backend: LocalBackend,
        registry: ModelRegistry,
        *,
        rows: RowsSource | None = None,
        outputs: OutputNames | None = None,
        threshold: float = 0.5,
        max_rows: int = DEFAULT_PREFLIGHT_ROWS,
        timeout_s: float = 30.0,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.rows = rows
        self.outputs = outputs or OutputNames()
        self.threshold = threshold
        self.max_rows = max_rows
        self.timeout_s = timeout_s

    def check(self, model: str, champion: str, candidate: str) -> str | None:
        refusal = signature_refusal(self.registry, model, champion, candidate)
        if refusal is not None:
            return refusal
        try:
            self.backend.deploy(model, champion, candidate, 0)
        except ServingError as exc:
            self._unstage(model, champion)
            return f"it cannot be served: {exc}"
        request, rows, source = self._request(model, champion, candidate)
        refusal = preflight_refusal(
            rows, self._ask(model, "candidate", request, rows), self._ask(model, "champion", request, rows)
        )
        if refusal is not None:
            self._unstage(model, champion)
            return f"{refusal} (preflight on {source})"
        logger.info("preflight of %s v%s passed on %d rows (%s)", model, candidate, rows, source)
        return None

    def _unstage(self, model: str, champion: str) -> None:
        try:
            self.backend.deploy(model, champion, None, 0)
        except ServingError as exc:
            logger.warning("could not stop the refused candidate of %s: %s", model, exc)

    def _request(self, model: str, champion: str, candidate: str) -> tuple[dict[str, Any], int, str]:
        schema: InputSchema = self.registry.input_schema(model, candidate)  # type: ignore[attr-defined]
        frame, source = (None, "")
        if self.rows is not None and schema.kind == "columns":
            try:
                frame, source = self.rows(model, champion)
            except Exception as exc:  # no reference is not a reason to refuse: fall back below
                logger.warning("no reference rows for the preflight of %s: %s", model, exc)
                frame = None
        if frame is not None and len(frame) and all(spec.name in frame.columns for spec in schema.columns):
            sample = frame.sample(n=min(self.max_rows, len(frame)), random_state=0)
            sample = sample.dropna(subset=[s.name for s in schema.columns if s.name not in schema.optional])
            if len(sample):
                return v2_columns_request(sample, schema), len(sample), source
        placeholder = placeholder_request(schema)
        return placeholder, 1, "one placeholder row (no reference rows)"

    def _ask(self, model: str, arm: str, request: dict[str, Any], rows: int) -> ArmAnswer:
        protocol = "v1" if "instances" in request else "v2"
        path = urllib.parse.quote(model, safe="")
        url = (
            f"{self.backend.front_door_url}/v1/models/{path}:predict"
            if protocol == "v1"
            else f"{self.backend.front_door_url}/v2/models/{path}/infer"
        )
        headers = {ARM_HEADER: arm, NO_LOG_HEADER: "1"}
        try:
            with httpx.Client(timeout=self.timeout_s, trust_env=False) as client:
                response = client.post(url, json=request, headers=headers)
        except httpx.HTTPError as exc:
            return ArmAnswer(0, f"{type(exc).__name__}: {exc}", None)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else response.text[:300]
            return ArmAnswer(response.status_code, str(error), None)
        if protocol == "v1":
            outputs = [("predictions", body.get("predictions", []))]
            if "probabilities" in body:
                outputs.append(("probability", body["probabilities"]))
        else:
            outputs = [
                (o["name"], np.asarray(o["data"], dtype=object).reshape(o["shape"])) for o in body["outputs"]
            ]
            outputs = [(name, _typed(values)) for name, values in outputs]
        return ArmAnswer(200, None, read_outputs(outputs, rows, self.outputs, self.threshold))


def _typed(values: np.ndarray) -> np.ndarray:
    try:
        return values.astype(float) if all(isinstance(v, int | float) for v in values.ravel()) else values
    except (TypeError, ValueError):
        return values


__all__ = [
    "ArmAnswer",
    "LocalReleaseGate",
    "preflight_refusal",
    "v2_columns_request",
]
