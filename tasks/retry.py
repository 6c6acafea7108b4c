"""When a task may retry: only for transient I/O failures, never for a user's mistake."""

from __future__ import annotations

from typing import Any

from mlcanary.config import ConfigError
from mlcanary.data.loader import DataError
from mlcanary.rollout.lease import LeaseHeldError
from mlcanary.rollout.versions import ModelNotFoundError, VersionNotFoundError
from mlcanary.training import TrainingError

# Deterministic errors: retrying cannot change the outcome, only delay the message.
_PERMANENT: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    TrainingError,
    ModelNotFoundError,
    VersionNotFoundError,
    ValueError,
    TypeError,
    KeyError,
    # Another run acts on the release: this one yields rather than acting late on stale input.
    LeaseHeldError,
)


def retry_on_io(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the failure is a permanent (user) error."""
    return not isinstance(getattr(state, "data", None), _PERMANENT)
