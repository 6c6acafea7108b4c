"""MLflow's webhook signature: ``X-MLflow-Signature`` over the delivery id, timestamp and raw body.

MLflow 3.17 sends ``X-MLflow-Delivery-Id`` (a UUID per event, reused by its retries),
``X-MLflow-Timestamp`` (unix seconds) and ``X-MLflow-Signature`` =
``v1,<base64 HMAC-SHA256(secret, "<delivery_id>.<timestamp>.<raw body>")>`` (see
``mlflow/webhooks/delivery.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "X-MLflow-Signature"
TIMESTAMP_HEADER: Final = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER: Final = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION: Final = "v1"


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow 3.17 sends for these headers and this raw body.

    Same bytes as ``mlflow.webhooks.delivery._generate_hmac_signature``:
    HMAC-SHA256 over ``f"{delivery_id}.{timestamp}.{payload}"`` (UTF-8), base64, prefixed ``v1,``.
    """
    content = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify_signature(secret: str, delivery_id: str, timestamp: str, body: bytes, provided: str) -> bool:
    """True iff ``provided`` is a well-formed ``v1,<base64>`` signature matching ``sign(...)``.

    Never raises; the digests are compared in constant time. Header values arrive latin-1 decoded,
    so non-ASCII input is compared as its raw bytes (and simply fails).
    """
    version, sep, encoded = provided.partition(",")
    if not sep or version.strip() != SIGNATURE_VERSION:
        return False
    try:
        given = base64.b64decode(encoded.strip().encode("latin-1"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    expected = base64.b64decode(sign(secret, delivery_id, timestamp, body).partition(",")[2])
    return hmac.compare_digest(expected, given)
