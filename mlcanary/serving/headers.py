"""Every HTTP header name of the serving wire contract, in one place (importing it loads nothing).

Clients (``mlcanary traffic``, the benchmark) send ``x-mlcanary-arm`` to force an arm and
``x-request-id`` to name a request; Envoy routes on the former, keeps the latter and adds
``x-mlcanary-arm-served`` and ``x-mlcanary-routes-version`` to each response; the model servers add
their own arm, version and server-side latency.
"""

from __future__ import annotations

from typing import Final

ARM_HEADER: Final = "x-mlcanary-arm"
"""Request header that forces one arm regardless of the weights (like KServe tag routing)."""

ARM_SERVED_HEADER: Final = "x-mlcanary-arm-served"
"""Response header (set by Envoy) naming the arm that served the request."""

ROUTES_VERSION_HEADER: Final = "x-mlcanary-routes-version"
"""Response header (set by Envoy) carrying the ``version_info`` of the routing table used."""

REQUEST_ID_HEADER: Final = "x-request-id"
"""The request id: kept by Envoy, echoed by the model server, the key of the inference log."""

SERVER_ARM_HEADER: Final = "x-mlcanary-server-arm"
"""Response header (set by the model server) naming the arm it was started as. Not
``x-mlcanary-arm``: that is the request header Envoy routes on."""

SERVER_VERSION_HEADER: Final = "x-mlcanary-model-version"
"""Response header (set by the model server) naming the model version it serves."""

SERVER_LATENCY_HEADER: Final = "x-mlcanary-latency-ms"
"""Response header (set by the model server) with its own inference time in milliseconds."""

NO_LOG_HEADER: Final = "x-mlcanary-preflight"
"""Request header: the model server answers but does not log the request (the release preflight's
probes, so they never count as traffic)."""

BINARY_HEADER_LENGTH_HEADER: Final = "inference-header-content-length"
"""The V2 binary tensor extension's header: the length of the JSON header that precedes the raw
tensor bytes, on a request and on a response with binary outputs (names are case-insensitive)."""
