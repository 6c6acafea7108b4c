"""The one error of the local platform: :class:`PlatformError`."""

from __future__ import annotations

__all__ = ["PlatformError"]


class PlatformError(RuntimeError):
    """The platform cannot be brought up (or down); the message says which step, why and what to do."""
