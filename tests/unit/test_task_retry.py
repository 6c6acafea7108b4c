"""Tasks retry transient I/O failures only, never a user's mistake."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlcanary.config import ConfigError
from mlcanary.data.loader import DataError
from mlcanary.rollout.versions import ModelNotFoundError, RegistryError
from mlcanary.training import TrainingError
from tasks.retry import retry_on_io


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionError("reset by peer"), True),
        (TimeoutError("registry did not answer"), True),
        (OSError("disk busy"), True),
        (RegistryError("MLflow returned 503"), True),
        (DataError("file not found"), False),
        (ConfigError("bad field"), False),
        (TrainingError("bad factory"), False),
        (ModelNotFoundError("no model"), False),
        (ValueError("bad value"), False),
    ],
)
def test_retry_condition(error: BaseException, retry: bool) -> None:
    assert retry_on_io(None, None, SimpleNamespace(data=error)) is retry
