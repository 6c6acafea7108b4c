"""The V2 binary tensor extension (KServe / Triton), as ``tritonclient[http]`` sends it by default.

A request with the header ``Inference-Header-Content-Length: L`` is a JSON header of ``L`` bytes
followed by raw tensor bytes: each input whose ``parameters.binary_data_size`` is ``S`` takes the
next ``S`` bytes, in input order. Numbers are little-endian in their datatype's width (BOOL one
byte); BYTES elements are each a 4-byte little-endian length and the bytes. A response carries
binary outputs the same way when the request asks for them (``parameters.binary_data_output`` on
the request, or ``parameters.binary_data`` on a requested output).

:func:`inline_binary_inputs` turns a binary request into the plain JSON request it stands for
(what the model server parses and what the payload log stores); :func:`binary_response` does the
reverse for a JSON response. Pure: bytes and dicts in and out, :class:`RequestError` for bad input.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlcanary.serving.local.inference_protocol import BAD_REQUEST, RequestError, encode_json

BINARY_SIZE = "binary_data_size"

_NUMPY_OF: dict[str, str] = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from the header value (None when the request is plain JSON)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise RequestError(BAD_REQUEST, f"Inference-Header-Content-Length must be a number, got {value!r}")
    length = int(text)
    if length > body_size:
        raise RequestError(
            BAD_REQUEST, f"Inference-Header-Content-Length {length} exceeds the body's {body_size} bytes"
        )
    return length


def _decode_bytes_elements(raw: bytes, where: str) -> list[str]:
    values: list[str] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError(BAD_REQUEST, f"{where}: truncated BYTES element length at byte {offset}")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise RequestError(BAD_REQUEST, f"{where}: BYTES element of {size} bytes runs past the data")
        try:
            values.append(raw[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(BAD_REQUEST, f"{where}: a BYTES element is not UTF-8 text") from None
        offset += size
    return values


def decode_tensor_bytes(raw: bytes, datatype: str, where: str) -> list[Any]:
    """The flat list of values ``raw`` holds for ``datatype``."""
    if datatype == "BYTES":
        return _decode_bytes_elements(raw, where)
    dtype = _NUMPY_OF.get(datatype)
    if dtype is None:
        raise RequestError(BAD_REQUEST, f"{where}: datatype {datatype!r} cannot be sent as binary data")
    width = np.dtype(dtype).itemsize
    if len(raw) % width:
        raise RequestError(
            BAD_REQUEST, f"{where}: {len(raw)} bytes is not a whole number of {datatype} values"
        )
    return np.frombuffer(raw, dtype=dtype).tolist()


def encode_tensor_bytes(values: Sequence[Any], datatype: str) -> bytes:
    """``values`` (flat) as the binary extension lays them out for ``datatype``."""
    if datatype == "BYTES":
        parts = []
        for value in values:
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.asarray(values, dtype=_NUMPY_OF[datatype]).tobytes()


def inline_binary_inputs(body: bytes, length: int) -> dict[str, Any]:
    """The JSON request a binary request stands for: each binary input's ``data`` filled in."""
    try:
        payload = json.loads(body[:length])
    except (ValueError, RecursionError):
        raise RequestError(BAD_REQUEST, "the JSON header of the binary request is not valid JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise RequestError(BAD_REQUEST, 'the JSON header of the binary request must have an "inputs" list')
    offset = length
    for index, tensor in enumerate(payload["inputs"]):
        if not isinstance(tensor, dict):
            continue
        parameters = tensor.get("parameters")
        if not isinstance(parameters, dict) or BINARY_SIZE not in parameters:
            continue
        size = parameters[BINARY_SIZE]
        where = f"inputs[{index}] ({tensor.get('name')})"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(BAD_REQUEST, f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(body):
            raise RequestError(BAD_REQUEST, f"{where}: binary_data_size {size} runs past the end of the body")
        tensor["data"] = decode_tensor_bytes(body[offset : offset + size], str(tensor.get("datatype")), where)
        offset += size
        rest = {k: v for k, v in parameters.items() if k != BINARY_SIZE}
        if rest:
            tensor["parameters"] = rest
        else:
            tensor.pop("parameters")
    if offset != len(body):
        raise RequestError(
            BAD_REQUEST,
            f"the binary request has {len(body) - offset} bytes no input's binary_data_size claims",
        )
    return payload


def binary_outputs(request: dict[str, Any], output_names: Sequence[str]) -> set[str]:
    """Names of the outputs the request wants as binary data."""
    parameters = request.get("parameters")
    everything = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    wanted = set(output_names) if everything else set()
    for requested in request.get("outputs") or []:
        if not isinstance(requested, dict):
            continue
        flag = (requested.get("parameters") or {}).get("binary_data")
        if flag is True:
            wanted.add(str(requested.get("name")))
        elif flag is False:
            wanted.discard(str(requested.get("name")))
    return wanted


def binary_response(payload: dict[str, Any], binary: set[str]) -> tuple[bytes, int | None]:
    """The response body with the ``binary`` outputs moved behind the JSON header.

    Returns ``(body, header_length)``; ``header_length`` is None when no output is binary (the body
    is then plain JSON).
    """
    if not binary:
        return encode_json(payload), None
    header = dict(payload)
    header["outputs"] = []
    chunks = []
    for output in payload.get("outputs", []):
        if output["name"] not in binary:
            header["outputs"].append(output)
            continue
        raw = encode_tensor_bytes(output["data"], output["datatype"])
        chunks.append(raw)
        moved = {k: v for k, v in output.items() if k != "data"}
        moved["parameters"] = {**output.get("parameters", {}), BINARY_SIZE: len(raw)}
        header["outputs"].append(moved)
    head = encode_json(header)
    return head + b"".join(chunks), len(head)
