"""The environment that keeps third-party tools quiet and offline, for this process and its children.

No telemetry calls, no progress bars or INFO chatter from MLflow in a user's terminal or a child's
log, unbuffered output from child processes. Values already set by the user win
(:func:`quiet_defaults`); children get them on top of the parent's environment (:func:`child_env`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Final

QUIET_ENV: Final[Mapping[str, str]] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def quiet_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set every :data:`QUIET_ENV` variable the environment does not set yet (default ``os.environ``)."""
    target = os.environ if environ is None else environ
    for key, value in QUIET_ENV.items():
        target.setdefault(key, value)


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ``base`` (default ``os.environ``), :data:`QUIET_ENV` and
    unbuffered Python output."""
    return {**(os.environ if base is None else base), **QUIET_ENV, "PYTHONUNBUFFERED": "1"}
