"""Reading an HTTP request body with a size limit, for every service of ours (model server,
collector, webhook receiver): the declared Content-Length is checked first and the bytes that
actually arrive are counted too, since the header may be absent (chunked) or wrong."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLargeError(Exception):
    """The body exceeds ``limit`` bytes; ``size`` is the declared length when that gave it away."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit
        self.size = size


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`BodyTooLargeError` as soon as it is known to exceed ``limit``.

    A Content-Length that is not a number is ignored here (callers that must reject it check
    the header first).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit, int(declared))
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)
