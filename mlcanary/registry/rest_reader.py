"""MLflow's registry read over its REST API with httpx (no ``mlflow`` import).

Two calls of MLflow's REST API 2.0 (the ones ``MlflowClient`` makes): ``GET
registered-models/get`` for a model's aliases and ``GET model-versions/search`` (``name = '…'``,
page by page) for its versions and their tags. Credentials are MLflow's environment variables:
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic auth), ``MLFLOW_TRACKING_TOKEN``
(bearer), ``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH`` and
``MLFLOW_TRACKING_CLIENT_CERT_PATH``; :func:`~mlcanary.registry.read_only.reader_kind` leaves any
other scheme to MLflow's own client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from mlcanary.registry.read_only import (
    ReadOnlyRegistry,
    RegistryConnectionError,
    RegistryHttpError,
    VersionRow,
    not_registered,
)
from mlcanary.registry.retry import NO_RETRY, RetryPolicy
from mlcanary.rollout.versions import RegistryError

API = "/api/2.0/mlflow"
PAGE_SIZE = 1000
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _client_options(env: Mapping[str, str]) -> dict[str, Any]:
    """httpx options for MLflow's credential and TLS variables in ``env``."""
    options: dict[str, Any] = {}
    username, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    token = env.get("MLFLOW_TRACKING_TOKEN")
    if username and password:
        options["auth"] = httpx.BasicAuth(username, password)
    elif token:
        options["headers"] = {"Authorization": f"Bearer {token}"}
    if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        options["verify"] = False
    elif env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        options["verify"] = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    if env.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        options["cert"] = env["MLFLOW_TRACKING_CLIENT_CERT_PATH"]
    return options


class RestRegistryReader(ReadOnlyRegistry):
    """:class:`~mlcanary.registry.read_only.ReadOnlyRegistry` on an MLflow tracking server at ``uri``
    (each request at most ``timeout_s``; a refused or timed-out connection is a transient
    :class:`~mlcanary.registry.read_only.RegistryConnectionError`)."""

    def __init__(
        self,
        uri: str,
        retry: RetryPolicy = NO_RETRY,
        *,
        timeout_s: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(uri, retry)
        options = _client_options(os.environ if env is None else env)
        self._http = httpx.Client(base_url=uri.rstrip("/") + API, timeout=timeout_s, **options)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: Mapping[str, str | int]) -> dict[str, Any]:
        try:
            response = self._http.get(path, params=dict(params))
        except httpx.TransportError as exc:
            raise RegistryConnectionError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict):
            return body
        if isinstance(body, dict) and "error_code" in body:
            code, message = str(body["error_code"]), str(body.get("message", ""))
            raise RegistryHttpError(response.status_code, code, message)
        raise RegistryHttpError(
            response.status_code, "", f"HTTP {response.status_code} from GET {path}: {response.text[:200]}"
        )

    def _fetch_aliases(self, name: str) -> dict[str, str]:
        try:
            body = self._get("/registered-models/get", {"name": name})
        except RegistryHttpError as exc:
            if exc.error_code in _NOT_FOUND or "not found" in exc.message.lower():
                raise not_registered(name) from None
            # Raised from the answer: the retry policy reads its status (5xx and 429 are transient).
            raise RegistryError(f"cannot read model {name!r}: {exc.message}") from exc
        model = body.get("registered_model", {})
        return {entry["alias"]: str(entry["version"]) for entry in model.get("aliases", [])}

    def _fetch_versions(self, name: str) -> list[VersionRow]:
        rows: list[VersionRow] = []
        token = ""
        while True:
            params: dict[str, str | int] = {"filter": f"name = '{name}'", "max_results": PAGE_SIZE}
            if token:
                params["page_token"] = token
            body = self._get("/model-versions/search", params)
            rows.extend(_row(version) for version in body.get("model_versions", []))
            token = body.get("next_page_token", "")
            if not token:
                return rows


def _row(version: Mapping[str, Any]) -> VersionRow:
    # Protobuf's JSON leaves out empty fields: a missing run id or tag value is "".
    return VersionRow(
        name=version["name"],
        version=str(version["version"]),
        run_id=version.get("run_id") or None,
        source=version.get("source", ""),
        created_ms=int(version.get("creation_timestamp", 0)),
        tags={tag["key"]: tag.get("value", "") for tag in version.get("tags", [])},
    )
