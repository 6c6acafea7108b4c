"""Registry calls retried with bounded backoff: which failures, how often, how long, and the error after."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from mlcanary.config import ConfigError, load_settings
from mlcanary.registry.evidence import MlflowEvidence
from mlcanary.registry.mlflow_registry import MlflowRegistry, bound_mlflow_http_client, redacted
from mlcanary.registry.retry import RetryPolicy, call_with_retry, is_transient
from mlcanary.rollout.versions import ModelNotFoundError, RegistryError, RegistryUnavailableError


def test_delays_double_up_to_the_cap() -> None:
    assert RetryPolicy(5, 1.0, 8.0).delays() == [1.0, 2.0, 4.0, 8.0]
    assert RetryPolicy(4, 0.2, 0.5).delays() == [0.2, 0.4, 0.5]
    assert RetryPolicy(1, 0.0, 0.0).delays() == []
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(0, 1.0, 1.0)


def _wrapped(cause: BaseException) -> RegistryError:
    try:
        raise RegistryError("cannot read model 'm'") from cause
    except RegistryError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (MlflowException("API request to http://x failed with exception refused"), True),  # INTERNAL_ERROR
        (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}), True),
        (RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}), True),
        (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"}), False),
        (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad name"}), False),
        (RestException({"error_code": "UNAUTHENTICATED", "message": "who are you"}), False),
        (RestException({"error_code": "NOT_IMPLEMENTED", "message": "no webhooks here"}), False),
        (RestException({"error_code": "503", "message": "Service Unavailable"}), True),
        (requests.ConnectionError("refused"), True),
        (requests.Timeout("read timed out"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (_wrapped(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "down"})), True),
        (_wrapped(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "gone"})), False),
        (ModelNotFoundError("model 'm' is not registered"), False),
        (RegistryUnavailableError("already retried"), False),
        (ValueError("a bug"), False),
    ],
)
def test_only_failures_that_say_try_later_are_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


class Flaky:
    """Fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


DOWN = MlflowException("API request to http://mlflow failed with exception Connection refused")


def test_a_transient_failure_is_retried_with_the_policys_waits() -> None:
    slept: list[float] = []
    call = Flaky(2, DOWN)
    assert call_with_retry(RetryPolicy(5, 1.0, 8.0), "aliases", call, sleep=slept.append) == "answer"
    assert call.calls == 3
    assert slept == [1.0, 2.0]


def test_after_the_last_attempt_the_error_names_the_call_the_attempts_and_the_cause() -> None:
    slept: list[float] = []
    call = Flaky(10, DOWN)
    with pytest.raises(RegistryUnavailableError) as caught:
        call_with_retry(
            RetryPolicy(3, 0.5, 1.0), "set_alias", call, where="MLflow at http://m", sleep=slept.append
        )
    assert call.calls == 3
    assert slept == [0.5, 1.0]
    message = str(caught.value)
    assert message.startswith("MLflow at http://m is unavailable: set_alias failed 3 times in ")
    assert "Connection refused" in message
    assert caught.value.__cause__ is DOWN


def test_a_permanent_failure_is_raised_at_once() -> None:
    slept: list[float] = []
    call = Flaky(1, ModelNotFoundError("model 'm' is not registered"))
    with pytest.raises(ModelNotFoundError):
        call_with_retry(RetryPolicy(5, 1.0, 8.0), "aliases", call, sleep=slept.append)
    assert (call.calls, slept) == (1, [])


class FlakyClient:
    """The two ``MlflowClient`` calls ``set_alias`` makes, each failing its first ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] <= self.failures:
            raise DOWN

    def get_registered_model(self, name: str) -> Any:
        self._call("get_registered_model")
        return SimpleNamespace(aliases={"champion": "1"})

    def get_model_version(self, name: str, version: str) -> Any:
        self._call("get_model_version")
        return SimpleNamespace(
            name=name, version=version, run_id=None, source="s3://m", creation_timestamp=0, tags={}
        )

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self._call("set_registered_model_alias")


def test_the_registry_retries_a_whole_call_once_never_its_inner_calls_again() -> None:
    client = FlakyClient(failures=1)
    registry = MlflowRegistry("http://mlflow", client=client, retry=RetryPolicy(4, 0.0, 0.0))  # type: ignore[arg-type]
    registry.set_alias("m", "candidate", "2")
    # set_alias → get_version → aliases: each inner failure fails the attempt and the outer call
    # retries it all: attempt 1 fails reading the model, 2 the version, 3 setting the alias; 4 succeeds.
    assert client.calls == {
        "get_registered_model": 4,
        "get_model_version": 3,
        "set_registered_model_alias": 2,
    }

    never = MlflowRegistry("http://mlflow", client=FlakyClient(failures=1))  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="cannot read model 'm'") as caught:
        never.aliases("m")  # the default: no retry, the error as it is
    assert not isinstance(caught.value, RegistryUnavailableError)


def test_a_password_in_the_registry_uri_never_reaches_an_error() -> None:
    assert (
        redacted("postgresql+psycopg://mlflow:s3cret@db:5432/mlflow")
        == "postgresql+psycopg://mlflow:***@db:5432/mlflow"
    )
    assert redacted("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    registry = MlflowRegistry(
        "postgresql://u:s3cret@db/m",
        client=FlakyClient(failures=5),  # type: ignore[arg-type]
        retry=RetryPolicy(2, 0.0, 0.0),
    )
    with pytest.raises(RegistryUnavailableError) as caught:
        registry.aliases("m")
    assert "s3cret" not in str(caught.value)
    assert "postgresql://u:***@db/m" in str(caught.value)


def test_mlflows_own_http_retries_are_bounded_unless_the_user_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "90")
    bound_mlflow_http_client(30)
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "90"


def test_retry_settings_are_validated() -> None:
    settings = load_settings("local", env={}, overrides={"mlflow.retry.attempts": 2})
    assert (settings.mlflow.retry.attempts, settings.mlflow.retry.first_delay_s) == (2, 1.0)
    with pytest.raises(ConfigError, match="max_delay_s"):
        load_settings(
            "local", env={}, overrides={"mlflow.retry.first_delay_s": 5, "mlflow.retry.max_delay_s": 1}
        )


class FlakyRunClient:
    """The run calls ``MlflowEvidence.finish`` makes; ``set_tag`` fails its first call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.calls.append("set_tag")
        if self.calls.count("set_tag") == 1:
            raise DOWN

    def log_artifact(self, run_id: str, path: str, folder: str | None) -> None:
        self.calls.append("log_artifact")

    def set_terminated(self, run_id: str, status: str, end_time: int) -> None:
        self.calls.append(f"set_terminated:{status}")


def test_release_evidence_is_retried_like_the_registry() -> None:
    from datetime import UTC, datetime

    from mlcanary.rollout.state import Phase, ReleaseState

    now = datetime.now(UTC)
    release = ReleaseState("m", "2", "1", Phase.PROMOTED, 1, 100, now, now, ticks=3, release_run_id="r1")
    client = FlakyRunClient()
    evidence = MlflowEvidence(client, "m-releases", retry=RetryPolicy(3, 0.0, 0.0))  # type: ignore[arg-type]
    evidence.finish(release)
    assert client.calls == ["set_tag", "set_tag", "set_tag", "log_artifact", "set_terminated:FINISHED"]
