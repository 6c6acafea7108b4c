"""Turn KServe payload-logger CloudEvents into inference-log rows (pure: no I/O, no clock).

One event is one half of an inference: the request (features) or the response (status, latency,
predictions). :func:`parse_event` validates the CloudEvent, :func:`rows_from_event` turns it into
partial :class:`~mlcanary.telemetry.store.InferenceRow` objects, one per instance, that the store
merges with the other half by ``(ce-id, instance index)`` — so pairing needs no memory here and
either half may come first.

Payloads understood:

* request V1 ``{"instances": [{feature: value}, ...]}`` or ``{"instances": [[v, ...], ...]}``; V2
  ``{"inputs": [{"name", "shape", "datatype", "data"}, ...]}`` with one tensor per feature column
  (shape ``[n]`` or ``[n, 1]``, stored as objects by tensor name) or a single 2-D tensor
  ``[n, k]`` (stored as lists: feature names unknown). The first dimension is always the batch.
* response V1 ``{"predictions": [...], "probabilities": [...]?}`` where a prediction is a class
  label or a list of class probabilities (KServe's sklearn server with ``predict_proba``); V2
  ``{"outputs": [...]}`` with a label tensor (``predict``) and/or a probability tensor
  (``predict_proba``). Probabilities are of the positive class (index 1).
* a response whose status is 4xx/5xx may have any body (it yields one row with no prediction).

Anything else raises :class:`MalformedEvent` (a ``ValueError``) with a message fit for the sender.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from mlcanary.rollout.arms import ARMS as ROLLOUT_ARMS
from mlcanary.rollout.model_outputs import OutputNames, read_outputs
from mlcanary.telemetry.events import (
    BATCH_CONTENT_TYPE,
    HEADER_ARM,
    HEADER_ID,
    HEADER_INFERENCESERVICENAME,
    HEADER_SOURCE,
    HEADER_VERSION,
    STRUCTURED_CONTENT_TYPE,
    InferenceEvent,
)
from mlcanary.telemetry.log_records import Features, InferenceRow
from mlcanary.telemetry.log_tables import (
    MAX_MODEL_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_VERSION_LENGTH,
)

PayloadProtocol = Literal["v1", "v2"]
ARMS: frozenset[str] = frozenset(ROLLOUT_ARMS)
ContentMode = Literal["binary", "structured", "batched"]
#: Status assumed for a response event without ``ce-mlcanarystatus``: KServe's agent logs only 200s.
DEFAULT_RESPONSE_STATUS = 200


class MalformedEvent(ValueError):  # noqa: N818 (name fixed by the collector contract)
    """An event the collector cannot store: bad CloudEvents attributes or an unreadable payload.

    ``str(error)`` says what is wrong in terms the sender can act on; the event must not be retried
    unchanged.
    """


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's answer for one instance: class label and positive-class probability, if known."""

    label: int | None
    probability: float | None


def content_mode(headers: Mapping[str, str]) -> ContentMode:
    """CloudEvents' HTTP content mode of a request, from its ``content-type``: ``"batched"``
    (``application/cloudevents-batch+json``), ``"structured"`` (``application/cloudevents+json``)
    or ``"binary"`` (anything else: the attributes are in ``ce-*`` headers)."""
    content_type = _header(headers, "content-type").split(";", 1)[0].strip().lower()
    if content_type == BATCH_CONTENT_TYPE:
        return "batched"
    if content_type == STRUCTURED_CONTENT_TYPE:
        return "structured"
    return "binary"


def parse_event(headers: Mapping[str, str], body: bytes, *, received_at: datetime) -> InferenceEvent:
    """Parse and validate one CloudEvent in binary or structured HTTP mode.

    Structured mode is chosen by ``content-type: application/cloudevents+json``; a batch is refused
    here (see :mod:`mlcanary.telemetry.batch_ingest`). Beyond the CloudEvents rules of
    :meth:`InferenceEvent.from_headers` (``ce-specversion`` ``1.0``, ``ce-id``, a known ``ce-type``,
    ``ce-source``; ``ce-time`` defaulting to ``received_at``), the model name
    (``ce-inferenceservicename``) is required, ``ce-mlcanaryarm`` must be ``champion`` or
    ``candidate``, and ids, names and versions must fit the store's columns. The payload itself is
    checked by :func:`rows_from_event`. Raises :class:`MalformedEvent`.
    """
    mode = content_mode(headers)
    if mode == "batched":
        raise MalformedEvent(f"a {BATCH_CONTENT_TYPE} body holds several events, not one")
    if mode == "structured":
        return event_from_structured(_load_json(body, "structured CloudEvent"), received_at=received_at)
    return _validated(headers, body, received_at)


def event_from_structured(document: Any, *, received_at: datetime) -> InferenceEvent:
    """Validate one event in CloudEvents' JSON format (a decoded JSON object; the rules of
    :func:`parse_event`). Attributes are top-level members; the payload is ``data_base64``
    (decoded byte for byte) or ``data`` (re-encoded as JSON). Raises :class:`MalformedEvent`."""
    headers, body = _structured_to_binary(document)
    return _validated(headers, body, received_at)


def _validated(headers: Mapping[str, str], body: bytes, received_at: datetime) -> InferenceEvent:
    try:
        event = InferenceEvent.from_headers(headers, body, received_at=received_at)
    except ValueError as exc:
        raise MalformedEvent(str(exc)) from None
    _check_attributes(event)
    return event


def rows_from_event(
    event: InferenceEvent,
    *,
    received_at: datetime,
    outputs: OutputNames | None = None,
    threshold: float = 0.5,
) -> list[InferenceRow]:
    """The partial rows one event contributes, one per instance (at least one, index 0 first);
    a shadow event's rows are marked ``shadow`` (the store files them in ``shadow_log``).

    A request yields ``half="request"`` rows with features and protocol. A response yields
    ``half="response"`` rows with status (``ce-mlcanarystatus``, else 200), latency and the
    prediction of each instance; a response without predictions (an error) yields index 0 only,
    and the store copies its status to the request's other instances. Raises
    :class:`MalformedEvent` for a payload it cannot read. ``outputs`` names the V2 outputs holding
    the label and the probability (``model.outputs``); ``threshold`` labels a probability-only
    answer.
    """
    common: dict[str, Any] = {
        "request_id": event.request_id,
        "model": event.model,
        "received_at": received_at,
        "event_time": event.time,
        "arm": event.arm,
        "version": event.version,
        "source": event.source,
        "shadow": event.shadow,
    }
    if event.is_request:
        protocol, instances = parse_request_payload(_load_json(event.body, "request"))
        return [
            InferenceRow(instance_index=index, half="request", protocol=protocol, features=features, **common)
            for index, features in enumerate(instances)
        ]
    status = event.status if event.status is not None else DEFAULT_RESPONSE_STATUS
    if status >= 400:
        # Error bodies come from anywhere (the model server, Envoy, a proxy): never require JSON.
        response_protocol: PayloadProtocol | None = None
        predictions: list[Prediction] = []
    else:
        response_protocol, predictions = parse_response_payload(
            _load_json(event.body, "response"), outputs=outputs, threshold=threshold
        )
    return [
        InferenceRow(
            instance_index=index,
            half="response",
            protocol=response_protocol,
            status_code=status,
            latency_ms=event.latency_ms,
            prediction=prediction.label,
            probability=prediction.probability,
            **common,
        )
        for index, prediction in enumerate(predictions or [Prediction(None, None)])
    ]


def parse_request_payload(payload: Any) -> tuple[PayloadProtocol, list[Features]]:
    """PayloadProtocol and per-instance features of a V1 or V2 request body (see the module docstring)."""
    if not isinstance(payload, dict):
        raise MalformedEvent(f"request body must be a JSON object, got {_kind(payload)}")
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise MalformedEvent("V1 request: 'instances' must be a non-empty list")
        features: list[Features] = []
        for index, instance in enumerate(instances):
            if isinstance(instance, dict):
                features.append({str(key): value for key, value in instance.items()})
            elif isinstance(instance, list):
                features.append(list(instance))
            else:
                raise MalformedEvent(
                    f"V1 request: instances[{index}] must be an object or a list, got {_kind(instance)}"
                )
        return "v1", features
    if "inputs" in payload:
        return "v2", _v2_request_instances(payload["inputs"])
    raise MalformedEvent("request body has neither 'instances' (V1) nor 'inputs' (V2)")


def parse_response_payload(
    payload: Any, *, outputs: OutputNames | None = None, threshold: float = 0.5
) -> tuple[PayloadProtocol, list[Prediction]]:
    """PayloadProtocol and per-instance predictions of a successful V1 or V2 response body.

    V2 outputs are read by :func:`mlcanary.rollout.model_outputs.read_outputs` with ``outputs``
    (default names when None), exactly as the model servers read them."""
    if not isinstance(payload, dict):
        raise MalformedEvent(f"response body must be a JSON object, got {_kind(payload)}")
    if "predictions" in payload:
        raw = payload["predictions"]
        if not isinstance(raw, list):
            raise MalformedEvent("V1 response: 'predictions' must be a list")
        predictions = [_interpret(value) for value in raw]
        probabilities = payload.get("probabilities")
        if probabilities is not None:
            if not isinstance(probabilities, list) or len(probabilities) != len(raw):
                raise MalformedEvent(
                    f"V1 response: 'probabilities' must be a list as long as 'predictions' ({len(raw)})"
                )
            predictions = [
                Prediction(prediction.label, _probability(value))
                for prediction, value in zip(predictions, probabilities, strict=True)
            ]
        return "v1", predictions
    if "outputs" in payload:
        return "v2", _v2_predictions(payload["outputs"], outputs or OutputNames(), threshold)
    raise MalformedEvent("response body has neither 'predictions' (V1) nor 'outputs' (V2)")


# ---- helpers -----------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def _structured_to_binary(document: Any) -> tuple[dict[str, str], bytes]:
    if not isinstance(document, dict):
        raise MalformedEvent(f"structured CloudEvent must be a JSON object, got {_kind(document)}")
    headers: dict[str, str] = {}
    for name, value in document.items():
        if name in ("data", "data_base64", "datacontenttype") or value is None:
            continue
        headers[f"ce-{name.lower()}"] = value if isinstance(value, str) else json.dumps(value)
    if "data_base64" in document:
        try:
            data = base64.b64decode(str(document["data_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedEvent("structured CloudEvent: 'data_base64' is not valid base64") from None
    elif "data" in document:
        data = json.dumps(document["data"]).encode()
    else:
        data = b""
    return headers, data


def _check_attributes(event: InferenceEvent) -> None:
    if not event.model:
        raise MalformedEvent(
            f"missing {HEADER_INFERENCESERVICENAME}: the inference log is kept per model, name it"
        )
    for header, value, limit in (
        (HEADER_ID, event.ce_id, MAX_REQUEST_ID_LENGTH),
        ("x-request-id in ce-metadata", event.request_id, MAX_REQUEST_ID_LENGTH),
        (HEADER_INFERENCESERVICENAME, event.model, MAX_MODEL_LENGTH),
        (HEADER_SOURCE, event.source, MAX_SOURCE_LENGTH),
        (HEADER_VERSION, event.version or "", MAX_VERSION_LENGTH),
    ):
        if len(value) > limit:
            raise MalformedEvent(f"{header} is longer than {limit} characters")
    if event.arm is not None and event.arm not in ARMS:
        raise MalformedEvent(f"{HEADER_ARM} must be one of {', '.join(sorted(ARMS))}, got {event.arm!r}")


def _load_json(body: bytes, what: str) -> Any:
    if not body:
        raise MalformedEvent(f"{what} body is empty; expected JSON")
    try:
        # NaN/Infinity are not JSON; keep the value as null rather than reject the event.
        return json.loads(body, parse_constant=lambda _token: None)
    except (ValueError, RecursionError):
        raise MalformedEvent(f"{what} body is not valid JSON") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item))
    return flat


def _tensor_rows(tensor: Any, where: str) -> tuple[str, list[Any]]:
    """Name and per-row values of one V2 tensor: scalars for a column, lists for a 2-D block."""
    if not isinstance(tensor, dict):
        raise MalformedEvent(f"{where} must be an object with name, shape, datatype and data")
    name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
    if not isinstance(name, str) or not name:
        raise MalformedEvent(f"{where}: 'name' must be a non-empty string")
    if data is None:
        raise MalformedEvent(f"{where} ({name}): 'data' is missing")
    flat = _flatten(data)
    if shape is None:
        shape = [len(flat)]
    if (
        not isinstance(shape, list)
        or not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape)
        or len(shape) > 2
    ):
        raise MalformedEvent(f"{where} ({name}): 'shape' must be a list of at most 2 non-negative ints")
    size = math.prod(shape)
    if size != len(flat):
        raise MalformedEvent(f"{where} ({name}): shape {shape} needs {size} values, data has {len(flat)}")
    if len(shape) <= 1 or shape[1] == 1:
        return name, flat
    width = shape[1]
    return name, [flat[row * width : (row + 1) * width] for row in range(shape[0])]


def _v2_request_instances(inputs: Any) -> list[Features]:
    if not isinstance(inputs, list) or not inputs:
        raise MalformedEvent("V2 request: 'inputs' must be a non-empty list of tensors")
    tensors = [_tensor_rows(tensor, f"V2 request: inputs[{i}]") for i, tensor in enumerate(inputs)]
    counts = {len(rows) for _name, rows in tensors}
    if len(counts) != 1:
        raise MalformedEvent(f"V2 request: inputs disagree on the batch size: {sorted(counts)}")
    (rows_count,) = counts
    if rows_count == 0:
        raise MalformedEvent("V2 request: inputs hold no rows")
    if len(tensors) == 1 and isinstance(tensors[0][1][0], list):
        return list(tensors[0][1])
    return [{name: rows[index] for name, rows in tensors} for index in range(rows_count)]


def _tensor_array(tensor: Any, where: str) -> tuple[str, np.ndarray]:
    """One output tensor as an array, rows first, typed by its datatype where the values allow."""
    name, rows = _tensor_rows(tensor, where)
    datatype = str(tensor.get("datatype") or "")
    values = np.asarray(rows, dtype=object)
    target: Any = None
    if datatype.startswith("FP"):
        values = np.where(values == None, math.nan, values)  # noqa: E711 (elementwise)
        target = float
    elif datatype.startswith(("INT", "UINT")):
        target = np.int64
    elif datatype == "BOOL":
        target = bool
    if target is not None:
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            values = values.astype(target)
    return name, values


def _v2_predictions(outputs: Any, names: OutputNames, threshold: float) -> list[Prediction]:
    if not isinstance(outputs, list) or not outputs:
        raise MalformedEvent("V2 response: 'outputs' must be a non-empty list of tensors")
    tensors = [_tensor_array(tensor, f"V2 response: outputs[{i}]") for i, tensor in enumerate(outputs)]
    rows = len(tensors[0][1])
    counts = {len(values) for _name, values in tensors}
    if len(counts) != 1:
        raise MalformedEvent(f"V2 response: outputs disagree on the batch size ({sorted(counts)})")
    reading = read_outputs(tensors, rows, names, threshold)
    labels = reading.labels or (None,) * rows
    probabilities = reading.probabilities or (None,) * rows
    return [
        Prediction(None if label is None else _label(label), probability)
        for label, probability in zip(labels, probabilities, strict=True)
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _interpret(value: Any) -> Prediction:
    """A label, a positive-class probability, or a class-probability vector → :class:`Prediction`."""
    if isinstance(value, bool):
        return Prediction(int(value), None)
    if isinstance(value, int):
        return Prediction(_label(value), None)
    if isinstance(value, float):
        if not math.isfinite(value):
            return Prediction(None, None)
        if value.is_integer():
            return Prediction(_label(int(value)), None)
        return Prediction(None, value if 0.0 <= value <= 1.0 else None)
    if isinstance(value, str):
        stripped = value.strip()
        return Prediction(_label(int(stripped)) if stripped.lstrip("-").isdigit() else None, None)
    if isinstance(value, list) and value and all(_is_number(item) for item in value):
        if len(value) == 1:
            return _interpret(value[0])
        label = max(range(len(value)), key=lambda position: value[position])
        return Prediction(label, _probability(value))
    return Prediction(None, None)


def _label(value: int) -> int | None:
    # The label column is a 32-bit INTEGER on PostgreSQL; anything wider is not a class label anyway.
    return value if -(2**31) <= value < 2**31 else None


def _probability(value: Any) -> float | None:
    if isinstance(value, list):
        if len(value) == 2:
            value = value[1]
        elif len(value) == 1:
            value = value[0]
        else:
            return None
    if _is_number(value) and 0.0 <= float(value) <= 1.0:
        return float(value)
    return None


__all__ = [
    "ARMS",
    "DEFAULT_RESPONSE_STATUS",
    "ContentMode",
    "MalformedEvent",
    "Prediction",
    "content_mode",
    "event_from_structured",
    "parse_event",
    "parse_request_payload",
    "parse_response_payload",
    "rows_from_event",
]
