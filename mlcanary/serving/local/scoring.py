"""One inference request from body to answer: decode, score (batched by the caller), encode.

:func:`decode` parses and validates a V1 or V2 body for the served model's signature,
:func:`model_call` is what scores a (batched) model input, and :func:`answer` checks the model's
outputs for one request and encodes its response. The model server runs them on its event loop
around a :class:`~mlcanary.serving.local.micro_batcher.MicroBatcher`; :func:`compute` chains them
for a single request (the warm-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mlcanary.rollout.model_outputs import OutputReading, read_outputs
from mlcanary.serving.local.inference_protocol import (
    UNPROCESSABLE,
    RequestError,
    decode_json,
    encode_json,
)
from mlcanary.serving.local.served_model import ServedModel
from mlcanary.serving.local.v2_binary import (
    binary_outputs,
    binary_response,
    header_length,
    inline_binary_inputs,
)
from mlcanary.serving.local.v2_codec import (
    DecodedRequest,
    ModelData,
    model_input,
    parse_v1,
    parse_v2,
    v1_answer,
    v2_answer,
)

WireProtocol = Literal["v1", "v2"]
Outputs = list[tuple[str, np.ndarray]]


class PredictorError(Exception):
    """The predictor raised or returned something unusable: a 500."""


@dataclass(frozen=True)
class Parsed:
    """A decoded request: what the model gets, the payload as decoded (for the answer), and the
    request body as logged when it differs from the bytes received (a binary V2 request)."""

    decoded: DecodedRequest
    payload: Any
    logged_request: bytes | None


@dataclass(frozen=True)
class Answer:
    """A computed answer: the body sent, the request and response bodies as logged (JSON, also for
    binary requests), and the JSON header length of a binary response."""

    body: bytes
    logged_request: bytes | None
    logged_response: bytes
    header_length: int | None


def decode(
    served: ServedModel, body: bytes, protocol: WireProtocol, binary_header: str | None, max_instances: int
) -> Parsed:
    """Parse and validate ``body`` (a ``RequestError`` of :mod:`.inference_protocol` says what is wrong)."""
    schema = served.model.inputs
    length = header_length(binary_header, len(body)) if protocol == "v2" else None
    payload = inline_binary_inputs(body, length) if length is not None else decode_json(body)
    if protocol == "v1":
        decoded = parse_v1(payload, schema, max_instances=max_instances)
    else:
        decoded = parse_v2(payload, schema, max_instances=max_instances)
    # A binary request is logged as the JSON request it stands for, once it is known to be valid.
    logged_request = None if length is None else _logged_binary_request(payload)
    return Parsed(decoded, payload, logged_request)


def _logged_binary_request(payload: dict[str, Any]) -> bytes:
    """The JSON form of a binary request, for the payload log; its binary data may hold values JSON
    cannot carry (NaN, infinities) in a tensor the model did not read: refused like a JSON ``NaN``."""
    try:
        return encode_json(payload)
    except ValueError:
        raise RequestError(UNPROCESSABLE, "the binary request holds NaN or infinite values") from None


def model_call(served: ServedModel) -> Callable[[Any], Outputs]:
    """What scores a model input (:func:`combine` of one or more requests' data).

    On the scikit-learn path with no optional inputs, every value was checked finite while
    decoding, so scikit-learn's own finiteness check of every call is skipped (``assume_finite``).
    """
    scorer = served.model
    if scorer.path != "sklearn" or scorer.inputs.optional:
        return scorer.predict
    import sklearn  # loaded already: the model is a scikit-learn one

    def call(data: Any) -> Outputs:
        with sklearn.config_context(assume_finite=True):
            return scorer.predict(data)

    return call


def combine(parts: list[ModelData]) -> Any:
    """One model input from the parts of a batch (see :func:`.v2_codec.model_input`)."""
    return model_input(parts)


def reading_of(served: ServedModel, outputs: Outputs, rows: int) -> OutputReading:
    """The label and probability read from one request's outputs; :class:`PredictorError` if unusable."""
    if not outputs:
        raise PredictorError("model returned no output")
    reading = read_outputs(outputs, rows, served.outputs, served.threshold)
    if reading.problem is not None:
        raise PredictorError(f"model returned an unusable answer: {reading.problem}")
    return reading


def answer(
    served: ServedModel, protocol: WireProtocol, parsed: Parsed, outputs: Outputs, request_id: str
) -> Answer:
    """The response to one request given its model outputs (checked first: :class:`PredictorError`)."""
    decoded = parsed.decoded
    reading = reading_of(served, outputs, decoded.rows)
    if protocol == "v1":
        result = v1_answer(
            model=served.name,
            version=served.version,
            arm=served.arm,
            labels=reading.labels,
            probabilities=reading.probabilities,
            first_output=outputs[0][1],
        )
        encoded = encode_json(result)
        return Answer(encoded, parsed.logged_request, encoded, None)
    v2 = v2_answer(
        model=served.name,
        version=served.version,
        request_id=decoded.id if decoded.id is not None else request_id,
        outputs=outputs,
        requested=decoded.outputs,
    )
    logged = encode_json(v2)
    binary = binary_outputs(parsed.payload, [output["name"] for output in v2["outputs"]])
    content, length_out = binary_response(v2, binary)
    return Answer(content, parsed.logged_request, logged, length_out)


def compute(
    served: ServedModel,
    body: bytes,
    protocol: WireProtocol,
    request_id: str,
    binary_header: str | None,
    max_instances: int,
) -> Answer:
    """Decode, score alone and answer one request (no batching)."""
    parsed = decode(served, body, protocol, binary_header, max_instances)
    try:
        outputs = model_call(served)(combine([parsed.decoded.data]))
    except Exception as exc:
        raise PredictorError(f"model failed to predict: {type(exc).__name__}: {exc}") from exc
    return answer(served, protocol, parsed, outputs, request_id)
