"""MLflow's registry read straight from its database with SQLAlchemy Core (no ``mlflow`` import).

MLflow's SQL store keeps the registry in four tables, the columns read here unchanged through MLflow
3.x: ``registered_models`` (``name``), ``model_versions`` (``name``, ``version``, ``creation_time`` in
epoch ms, ``source``, ``run_id``, ``current_stage``: ``Deleted_Internal`` marks a deleted version),
``model_version_tags`` (``name``, ``version``, ``key``, ``value``) and ``registered_model_aliases``
(``name``, ``alias``, ``version``). From MLflow 3.6 each also has a ``workspace`` column; without
workspaces enabled MLflow reads and writes only ``default``, and so does this reader.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import ColumnElement

from mlcanary.registry.read_only import ReadOnlyRegistry, RegistryConnectionError, VersionRow, not_registered
from mlcanary.registry.retry import NO_RETRY, RetryPolicy
from mlcanary.rollout.versions import RegistryError

DELETED_STAGE = "Deleted_Internal"
DEFAULT_WORKSPACE = "default"
_metadata = MetaData()
# `workspace` is only read where the store has it (MLflow >= 3.6).
registered_models = Table(
    "registered_models", _metadata, Column("workspace", String(63)), Column("name", String(256))
)
model_versions = Table(
    "model_versions",
    _metadata,
    Column("workspace", String(63)),
    Column("name", String(256)),
    Column("version", Integer),
    Column("creation_time", BigInteger),
    Column("source", String(500)),
    Column("run_id", String(32)),
    Column("current_stage", String(20)),
)
model_version_tags = Table(
    "model_version_tags",
    _metadata,
    Column("workspace", String(63)),
    Column("name", String(256)),
    Column("version", Integer),
    Column("key", String(250)),
    Column("value", Text),
)
registered_model_aliases = Table(
    "registered_model_aliases",
    _metadata,
    Column("workspace", String(63)),
    Column("name", String(256)),
    Column("alias", String(256)),
    Column("version", Integer),
)
_TABLES = (registered_models, model_versions, model_version_tags, registered_model_aliases)


class SqlRegistryReader(ReadOnlyRegistry):
    """:class:`~mlcanary.registry.read_only.ReadOnlyRegistry` on the database of MLflow's SQL store
    at ``uri`` (``sqlite:///…`` or ``postgresql…://…``). Reads only: a SQLite file that does not
    exist, or a database without MLflow's tables, is a registry with no models. A database that
    cannot be reached (or is locked) raises the transient
    :class:`~mlcanary.registry.read_only.RegistryConnectionError`."""

    def __init__(self, uri: str, retry: RetryPolicy = NO_RETRY) -> None:
        super().__init__(uri, retry)
        self._engine: Engine | None = None
        self._workspaced: bool | None = None
        self._empty = False
        url = make_url(uri)
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            # Connecting would create the file: a store that does not exist holds no models.
            self._empty = database not in ("", ":memory:") and not Path(database).exists()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _connected(self) -> Engine | None:
        """The engine, after checking MLflow's tables are there (None: a store with no models)."""
        if self._empty:
            return None
        if self._engine is None:
            self._engine = create_engine(self.uri, poolclass=NullPool)
        if self._workspaced is None:
            try:
                inspector = inspect(self._engine)
                if not all(inspector.has_table(table.name) for table in _TABLES):
                    self._empty = True
                    return None
                columns = {column["name"] for column in inspector.get_columns(registered_models.name)}
            except DBAPIError as exc:
                raise _unreachable(exc) from exc
            self._workspaced = "workspace" in columns
        return self._engine

    def _fetch_aliases(self, name: str) -> dict[str, str]:
        engine = self._connected()
        if engine is None:
            raise not_registered(name)
        try:
            with engine.connect() as connection:
                found = connection.execute(
                    select(registered_models.c.name).where(*self._scoped(registered_models, name))
                ).first()
                if found is None:
                    raise not_registered(name)
                rows = connection.execute(
                    select(registered_model_aliases.c.alias, registered_model_aliases.c.version).where(
                        *self._scoped(registered_model_aliases, name)
                    )
                ).all()
        except DBAPIError as exc:
            raise _unreachable(exc) from exc
        return {alias: str(version) for alias, version in rows}

    def _fetch_versions(self, name: str) -> list[VersionRow]:
        engine = self._connected()
        if engine is None:
            return []
        versions, tags = model_versions, model_version_tags
        try:
            with engine.connect() as connection:
                live = connection.execute(
                    select(
                        versions.c.version, versions.c.run_id, versions.c.source, versions.c.creation_time
                    ).where(*self._scoped(versions, name), versions.c.current_stage != DELETED_STAGE)
                ).all()
                tag_rows = connection.execute(
                    select(tags.c.version, tags.c.key, tags.c.value).where(*self._scoped(tags, name))
                ).all()
        except DBAPIError as exc:
            raise _unreachable(exc) from exc
        by_version: dict[int, dict[str, str]] = {}
        for version, key, value in tag_rows:
            by_version.setdefault(version, {})[key] = value
        return [
            VersionRow(
                name=name,
                version=str(version),
                run_id=run_id or None,
                source=source,
                created_ms=int(created or 0),
                tags=by_version.get(version, {}),
            )
            for version, run_id, source, created in live
        ]

    def _scoped(self, table: Table, name: str) -> list[ColumnElement[bool]]:
        """The rows of model ``name`` (in MLflow's default workspace, where there are workspaces)."""
        clauses = [table.c.name == name]
        if self._workspaced:
            clauses.append(table.c.workspace == DEFAULT_WORKSPACE)
        return clauses


def _unreachable(exc: DBAPIError) -> RegistryError:
    """A database error as the registry's: transient when the connection failed or the database
    is busy (SQLAlchemy's ``OperationalError``), a plain ``RegistryError`` otherwise."""
    from sqlalchemy.exc import OperationalError

    message = f"{type(exc.orig).__name__}: {str(exc.orig).strip()[:300]}"
    if isinstance(exc, OperationalError):
        return RegistryConnectionError(f"cannot read MLflow's database: {message}")
    return RegistryError(f"cannot read MLflow's database: {message}")
