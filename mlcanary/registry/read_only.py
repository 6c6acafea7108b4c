"""Reading the registry without MLflow's client: what ``mlcanary status`` answers from in well under
two seconds (importing ``mlflow`` alone takes several).

:class:`ReadOnlyRegistry` is the :class:`~mlcanary.rollout.versions.VersionReader` part of
:class:`~mlcanary.registry.mlflow_registry.MlflowRegistry`, with the same answers, errors and
messages, over one of two readers of the same data: MLflow's REST API when the registry URI is an
``http(s)://`` server (:mod:`~mlcanary.registry.rest_reader`), MLflow's own tables through SQLAlchemy
Core when it is a ``sqlite:`` or ``postgresql`` database (:mod:`~mlcanary.registry.sql_reader`).
:func:`registry_reader` picks one, and falls back to ``MlflowRegistry`` for anything these do not
reproduce exactly (other stores, MLflow's auth plugins, a credentials file, workspaces).

Nothing here writes: a missing SQLite file is an empty registry, not a new database.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

from mlcanary.registry.retry import NO_RETRY, RetryPolicy, call_with_retry
from mlcanary.rollout.versions import (
    ModelNotFoundError,
    ModelVersionInfo,
    RegistryError,
    VersionNotFoundError,
    VersionReader,
)

if TYPE_CHECKING:
    from mlcanary.config import Settings

T = TypeVar("T")


def redacted(uri: str) -> str:
    """``uri`` without a password (a database URL may carry one); safe to log."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class RegistryConnectionError(RegistryError, ConnectionError):
    """The registry could not be reached (a refused or broken connection, a locked database): a
    :class:`ConnectionError`, so the retry policy tries again, and a ``RegistryError`` the command
    line shows as one line."""


class RegistryHttpError(RegistryError):
    """An error answer of MLflow's REST API: ``http_status`` (read by the retry policy: 5xx and 429
    are transient), MLflow's ``error_code`` and its message."""

    def __init__(self, http_status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class VersionRow:
    """One model version as MLflow stores it (``created_ms``: its creation time in epoch ms)."""

    name: str
    version: str
    run_id: str | None
    source: str
    created_ms: int
    tags: Mapping[str, str] = field(default_factory=dict)


class ReadOnlyRegistry(ABC):
    """:class:`~mlcanary.rollout.versions.VersionReader` over MLflow's data without its client.

    Subclasses fetch a model's aliases (raising ``ModelNotFoundError`` for a model that is not
    registered) and its live versions (MLflow's deleted ones left out); this class turns them into
    what ``MlflowRegistry`` returns, each call retried by ``retry`` as ``MlflowRegistry`` retries it.
    Use it as a context manager (or call :meth:`close`) to release its connections.
    """

    def __init__(self, uri: str, retry: RetryPolicy = NO_RETRY) -> None:
        self.uri = uri
        self.retry = retry

    @abstractmethod
    def _fetch_aliases(self, name: str) -> dict[str, str]:
        """Alias → version of a registered model; ``ModelNotFoundError`` if it is not registered."""

    @abstractmethod
    def _fetch_versions(self, name: str) -> list[VersionRow]:
        """Every version of ``name`` that is not deleted, in any order."""

    @abstractmethod
    def close(self) -> None:
        """Release the reader's connections."""

    def __enter__(self) -> ReadOnlyRegistry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _retried(self, what: str, call: Callable[[], T]) -> T:
        return call_with_retry(self.retry, what, call, where=f"MLflow at {redacted(self.uri)}")

    @staticmethod
    def _info(row: VersionRow, aliases: Mapping[str, str]) -> ModelVersionInfo:
        return ModelVersionInfo(
            name=row.name,
            version=row.version,
            run_id=row.run_id or None,
            source=row.source,
            created_at=datetime.fromtimestamp(row.created_ms / 1000, tz=UTC),
            tags=dict(row.tags),
            aliases=tuple(sorted(a for a, v in aliases.items() if v == row.version)),
        )

    def _versions(self, name: str) -> list[ModelVersionInfo]:
        aliases = self._fetch_aliases(name)
        rows = self._fetch_versions(name)
        return sorted((self._info(row, aliases) for row in rows), key=lambda v: int(v.version))

    def _version(self, name: str, version: str) -> ModelVersionInfo:
        for info in self._versions(name):
            if info.version == str(version):
                return info
        raise VersionNotFoundError(f"model {name!r} has no version {version!r}")

    def model_exists(self, name: str) -> bool:
        def exists() -> bool:
            try:
                self._fetch_aliases(name)
            except ModelNotFoundError:
                return False
            return True

        return self._retried(f"model_exists({name!r},)", exists)

    def aliases(self, name: str) -> dict[str, str]:
        return self._retried(f"aliases({name!r},)", lambda: self._fetch_aliases(name))

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        return self._retried(f"list_versions({name!r},)", lambda: self._versions(name))

    def get_version(self, name: str, version: str) -> ModelVersionInfo:
        return self._retried(f"get_version({name!r}, {version!r})", lambda: self._version(name, version))

    def version_for_alias(self, name: str, alias: str) -> ModelVersionInfo | None:
        def lookup() -> ModelVersionInfo | None:
            version = self._fetch_aliases(name).get(alias)
            return None if version is None else self._version(name, version)

        return self._retried(f"version_for_alias({name!r}, {alias!r})", lookup)


def not_registered(name: str) -> ModelNotFoundError:
    """The error ``MlflowRegistry`` raises for a model that is not registered (same message)."""
    return ModelNotFoundError(f"model {name!r} is not registered")


_REST_UNSUPPORTED = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4", "MLFLOW_WORKSPACE")
"""Set, these make MLflow's client authenticate or scope requests in ways only it knows."""
_SQL_UNSUPPORTED = ("MLFLOW_ENABLE_WORKSPACES", "MLFLOW_WORKSPACE", "MLFLOW_WORKSPACE_STORE_URI")


def _set(env: Mapping[str, str], names: tuple[str, ...]) -> bool:
    return any(env.get(name, "").strip().lower() not in ("", "false", "0") for name in names)


def reader_kind(uri: str, env: Mapping[str, str], home: Path | None = None) -> str:
    """``"rest"``, ``"sql"`` or ``"mlflow"`` (MLflow's own client): which reader answers ``uri``
    exactly as MLflow's client would, given the environment ``env``."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        credentials_file = (home or Path.home()) / ".mlflow" / "credentials"
        if _set(env, _REST_UNSUPPORTED) or credentials_file.exists():
            return "mlflow"
        return "rest"
    if (scheme == "sqlite" or scheme.startswith("postgresql")) and not _set(env, _SQL_UNSUPPORTED):
        return "sql"
    return "mlflow"


@contextmanager
def registry_reader(settings: Settings, env: Mapping[str, str] | None = None) -> Iterator[VersionReader]:
    """The quickest exact reader of the registry the settings point at (see :func:`reader_kind`),
    retrying by ``mlflow.retry``; its connections are closed on exit."""
    env = os.environ if env is None else env
    uri = settings.registry_uri
    retry = settings.mlflow.retry
    policy = RetryPolicy(retry.attempts, retry.first_delay_s, retry.max_delay_s)
    kind = reader_kind(uri, env)
    if kind == "mlflow":
        from mlcanary.registry.mlflow_registry import registry_from_settings

        yield registry_from_settings(settings)
        return
    reader: ReadOnlyRegistry
    if kind == "rest":
        from mlcanary.registry.rest_reader import RestRegistryReader

        reader = RestRegistryReader(uri, policy, timeout_s=retry.request_timeout_s, env=env)
    else:
        from mlcanary.registry.sql_reader import SqlRegistryReader

        reader = SqlRegistryReader(uri, policy)
    with reader:
        yield reader
