"""The Kubernetes API as mlcanary uses it: custom objects read, created, merge-patched, deleted and
watched with the official ``kubernetes`` client, made safe to call from a controller.

* **Retries with backoff** on 5xx, 429 and transport errors (timeouts, refused or dropped
  connections), ``retries`` times, the delay doubling from ``backoff_s`` (capped at 8 s).
* **Optimistic concurrency**: :meth:`KubeApi.update` reads the object, computes a merge patch that
  carries the read's ``metadata.resourceVersion``, and on 409 (someone wrote in between) reads again
  and recomputes, so a decision is never applied to a state it was not made on.
* **Waiting** watches the one object (``fieldSelector=metadata.name=…``) from the read's
  ``resourceVersion`` and re-reads after a watch ends or expires (410), until a predicate holds or
  the deadline passes — no fixed sleeps, no missed updates.

Errors that retrying cannot fix (403, 404 where an object must exist, 422 invalid) become
:class:`~mlcanary.rollout.serving.ServingError` with the API server's message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from mlcanary.rollout.serving import ServingError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Object = dict[str, Any]
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    urllib3.exceptions.HTTPError,  # timeouts, protocol errors, refused connections
    ConnectionError,
    TimeoutError,
)
MAX_BACKOFF_S = 8.0


@dataclass(frozen=True)
class Ref:
    """Where a custom object lives: group, version, plural, namespace, name (and its kind, for messages)."""

    group: str
    version: str
    plural: str
    namespace: str
    name: str
    kind: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class ConflictError(ServingError):
    """The object kept changing under us: every attempt of an update met a newer resourceVersion."""


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.body or exc.reason)[:500]


class KubeApi:
    """Custom objects through ``kubernetes.client.CustomObjectsApi`` (see the module docstring)."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        timeout_s: float = 15.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        conflict_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.custom = k8s.CustomObjectsApi(api_client)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.conflict_attempts = conflict_attempts
        self.sleep = sleep

    # -- one call, retried ------------------------------------------------------------------------

    def _call(self, what: str, ref: Ref, fn: Callable[[], T]) -> T:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except ApiException as exc:
                if exc.status not in _TRANSIENT_STATUS or attempt == self.retries:
                    raise
                problem = f"HTTP {exc.status} {_message(exc)}"
            except _TRANSPORT_ERRORS as exc:
                if attempt == self.retries:
                    raise ServingError(
                        f"{what} {ref}: Kubernetes API unreachable after {attempt + 1} attempts: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                problem = f"{type(exc).__name__}: {exc}"
            logger.warning("%s %s failed (%s); retry %d in %.2fs", what, ref, problem, attempt + 1, delay)
            self.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fail(self, what: str, ref: Ref, exc: ApiException) -> ServingError:
        return ServingError(f"{what} {ref}: HTTP {exc.status}: {_message(exc)}")

    # -- verbs ------------------------------------------------------------------------------------

    def get(self, ref: Ref) -> Object | None:
        """The object (status included), or None if it does not exist."""
        try:
            return self._call(
                "get",
                ref,
                lambda: self.custom.get_namespaced_custom_object(
                    ref.group,
                    ref.version,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                    _request_timeout=self.timeout_s,
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._fail("get", ref, exc) from exc

    def create(self, ref: Ref, body: Object) -> Object:
        """Create the object; if it already exists (a retry after a lost reply), return it."""
        try:
            return self._call(
                "create",
                ref,
                lambda: self.custom.create_namespaced_custom_object(
                    ref.group, ref.version, ref.namespace, ref.plural, body, _request_timeout=self.timeout_s
                ),
            )
        except ApiException as exc:
            if exc.status == 409:
                existing = self.get(ref)
                if existing is not None:
                    return existing
            raise self._fail("create", ref, exc) from exc

    def patch(self, ref: Ref, patch: Object) -> Object:
        """One JSON merge patch (``application/merge-patch+json``: the client picks it for a dict).
        A 409 (stale ``resourceVersion`` in the patch) propagates as ``ApiException``."""
        try:
            return self._call(
                "patch",
                ref,
                lambda: self.custom.patch_namespaced_custom_object(
                    ref.group,
                    ref.version,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                    patch,
                    _request_timeout=self.timeout_s,
                ),
            )
        except ApiException as exc:
            if exc.status == 409:
                raise
            raise self._fail("patch", ref, exc) from exc

    def delete(self, ref: Ref) -> None:
        """Delete the object; already gone is fine."""
        try:
            self._call(
                "delete",
                ref,
                lambda: self.custom.delete_namespaced_custom_object(
                    ref.group,
                    ref.version,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                    _request_timeout=self.timeout_s,
                ),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise self._fail("delete", ref, exc) from exc

    def update(self, ref: Ref, decide: Callable[[Object], Object | None]) -> Object:
        """Read, let ``decide`` turn the object into a merge patch (None: nothing to change), apply it
        with the read's ``resourceVersion``; on 409 read again and decide again."""
        for _ in range(self.conflict_attempts):
            current = self.get(ref)
            if current is None:
                raise ServingError(f"{ref} does not exist")
            patch = decide(current)
            if patch is None:
                return current
            metadata = patch.setdefault("metadata", {})
            metadata["resourceVersion"] = current["metadata"].get("resourceVersion")
            try:
                return self.patch(ref, patch)
            except ApiException as exc:
                if exc.status != 409:
                    raise self._fail("patch", ref, exc) from exc
                logger.info("%s changed while we wrote (409); reading it again", ref)
        raise ConflictError(f"{ref} kept changing: {self.conflict_attempts} updates met a newer version")

    # -- waiting ----------------------------------------------------------------------------------

    def wait(
        self,
        ref: Ref,
        done: Callable[[Object | None], T | None],
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        """Return ``done(object)`` as soon as it is not None; watch the object between checks.
        Raises :class:`TimeoutError` when ``timeout_s`` passes first."""
        deadline = clock() + timeout_s
        while True:
            current = self.get(ref)
            result = done(current)
            if result is not None:
                return result
            remaining = deadline - clock()
            if remaining <= 0:
                raise TimeoutError(f"{ref}: condition not reached within {timeout_s:g}s")
            version = (current or {}).get("metadata", {}).get("resourceVersion")
            result = self._watch(ref, done, version, min(remaining, 60.0))
            if result is not None:
                return result

    def _watch(
        self, ref: Ref, done: Callable[[Object | None], T | None], version: str | None, seconds: float
    ) -> T | None:
        stream = watch.Watch()
        kwargs: dict[str, Any] = {
            "field_selector": f"metadata.name={ref.name}",
            "timeout_seconds": max(1, int(seconds)),
            "_request_timeout": seconds + self.timeout_s,
            "allow_watch_bookmarks": True,
        }
        if version:
            kwargs["resource_version"] = version
        try:
            for event in stream.stream(
                self.custom.list_namespaced_custom_object,
                ref.group,
                ref.version,
                ref.namespace,
                ref.plural,
                **kwargs,
            ):
                kind = event.get("type")
                if kind == "ERROR":
                    return None  # e.g. 410 Gone: the caller reads afresh
                if kind == "BOOKMARK":
                    continue
                obj = event.get("raw_object") or event.get("object")
                result = done(None if kind == "DELETED" else obj)
                if result is not None:
                    return result
        except ApiException as exc:
            if exc.status not in _TRANSIENT_STATUS and exc.status != 410:
                raise self._fail("watch", ref, exc) from exc
            logger.info("watch of %s ended with HTTP %s; reading again", ref, exc.status)
        except _TRANSPORT_ERRORS as exc:
            logger.info("watch of %s dropped (%s); reading again", ref, exc)
            self.sleep(min(self.backoff_s, 1.0))
        finally:
            stream.stop()
        return None


def api_client(*, api_url: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An ``ApiClient`` for ``api_url`` (no credentials: tests, ``kubectl proxy``), else in-cluster
    credentials when running in a pod, else the kubeconfig (``context`` or its current one)."""
    from kubernetes import config as kube_config

    if api_url:
        configuration = k8s.Configuration()
        configuration.host = api_url.rstrip("/")
    else:
        configuration = k8s.Configuration()
        try:
            if context is None:
                kube_config.load_incluster_config(client_configuration=configuration)
            else:
                raise kube_config.ConfigException("a context was named")
        except kube_config.ConfigException:
            try:
                kube_config.load_kube_config(context=context, client_configuration=configuration)
            except (kube_config.ConfigException, OSError) as exc:
                raise ServingError(
                    f"no Kubernetes credentials: not in a pod and no usable kubeconfig ({exc}); set "
                    "KUBECONFIG, kserve.context or kserve.api_url"
                ) from exc
    # Our own retry loop decides what is retried; urllib3's would hide timeouts from it.
    configuration.retries = False
    return k8s.ApiClient(configuration)
