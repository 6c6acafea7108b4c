"""A small, real HTTP server speaking the Kubernetes API for custom objects (and Deployments).

What it implements, as the API server does:

* ``GET``/``POST``/``PATCH``/``DELETE`` on ``/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]``;
  ``GET …/{plural}?watch=true&fieldSelector=metadata.name=X&resourceVersion=N`` streams
  ``{"type", "object"}`` lines (chunked) from after N until ``timeoutSeconds``;
* ``resourceVersion`` on every write, ``metadata.generation`` bumped by spec changes only, the
  ``status`` subresource (a write to the main resource cannot change status);
* ``PATCH`` with ``application/merge-patch+json`` (RFC 7386) or ``application/json-patch+json``;
  strategic merge patch on a custom resource is refused (415), as the API server does;
* a ``metadata.resourceVersion`` in a patch is a precondition: a stale one gets 409 Conflict;
* create of an existing name → 409 AlreadyExists; a missing object → 404 NotFound;
* custom objects are validated against the real CRD schemas (422 Invalid with the reasons).

Faults for tests: :meth:`FakeKubeApi.fail` makes the next matching requests answer an HTTP status
(e.g. 500), hang past the client's timeout (``"hang"``; optionally after applying a write, like a
lost reply), or conflict (409). Every request is recorded in :attr:`FakeKubeApi.requests`.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from fake_kube import schemas

Key = tuple[str, str, str, str]  # group, plural, namespace, name
_CONFLICT = (
    "Operation cannot be fulfilled: the object has been modified; please apply your changes to the "
    "latest version and try again"
)
_MEDIA_TYPES = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json-patch+json, application/merge-patch+json"
)
_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """The subset of RFC 6902 a client sends to custom objects: add, replace, remove, test."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test":
            value = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if value != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
    return doc


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass
class Fault:
    """What the next ``count`` requests matching ``method`` (and ``path_contains``) get."""

    method: str
    action: int | str | Callable[[], None]  # an HTTP status, "hang", "hang-after-apply" or a hook
    count: int = 1
    path_contains: str = ""
    seconds: float = 3.0


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: Any


@dataclass
class Event:
    rv: int
    kind: str
    key: Key
    obj: dict[str, Any]


@dataclass
class Store:
    """The objects, their resourceVersions and the event log watches read from."""

    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    rv: int = 100
    changed: threading.Condition = field(default_factory=threading.Condition)
    listeners: list[Callable[[], None]] = field(default_factory=list)

    def _commit(self, kind: str, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append(Event(self.rv, kind, key, copy.deepcopy(obj)))
        self.changed.notify_all()
        return copy.deepcopy(obj)

    def get(self, key: Key) -> dict[str, Any] | None:
        with self.changed:
            obj = self.objects.get(key)
            return None if obj is None else copy.deepcopy(obj)

    def create(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{key[1]} "{key[3]}" already exists')
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.update(
                name=key[3],
                namespace=key[2],
                uid=str(uuid.uuid4()),
                generation=1,
                creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            obj.pop("status", None)
            _validate(obj)
            return self._commit("ADDED", key, obj)

    def write(
        self, key: Key, change: Callable[[dict[str, Any]], dict[str, Any]], *, status: bool = False
    ) -> dict[str, Any]:
        """Apply ``change`` to the stored object: the main resource (status kept) or its status."""
        with self.changed:
            current = self.objects.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f'{key[1]} "{key[3]}" not found')
            updated = change(copy.deepcopy(current))
            meta = updated.setdefault("metadata", {})
            for immutable in ("uid", "creationTimestamp", "name", "namespace", "generation"):
                if immutable in current["metadata"]:
                    meta[immutable] = current["metadata"][immutable]
            if status:
                updated = {**current, "status": updated.get("status", {})}
                updated["metadata"] = copy.deepcopy(current["metadata"])
            else:
                if "status" in current:
                    updated["status"] = current["status"]
                else:
                    updated.pop("status", None)
                if updated.get("spec") != current.get("spec"):
                    meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            if updated == current:
                return copy.deepcopy(current)  # a no-op write does not bump resourceVersion
            _validate(updated)
            return self._commit("MODIFIED", key, updated)

    def delete(self, key: Key) -> dict[str, Any]:
        with self.changed:
            current = self.objects.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f'{key[1]} "{key[3]}" not found')
            return self._commit("DELETED", key, copy.deepcopy(current))


def _validate(obj: dict[str, Any]) -> None:
    if not schemas.has_schema(obj):
        return
    problems = schemas.errors(obj)
    if problems:
        raise ApiError(422, "Invalid", f"{obj.get('kind')} is invalid: " + "; ".join(problems[:5]))


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out on purpose (an injected hang) closes its end: not an error here.
        return


class FakeKubeApi:
    """The server (see the module docstring). Use as a context manager; ``url`` is its address."""

    def __init__(self) -> None:
        self.store = Store()
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        for group, kind in schemas.CRD_FILES:  # compile the validators once, before any request
            schemas.validator(group, kind, "v1" if group == "networking.istio.io" else "v1beta1")
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube", daemon=True
        )
        self.closing = threading.Event()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        with self.store.changed:
            self.store.changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def fail(
        self,
        method: str,
        action: int | str | Callable[[], None],
        *,
        count: int = 1,
        path_contains: str = "",
        seconds: float = 3.0,
    ) -> None:
        with self._lock:
            self.faults.append(Fault(method.upper(), action, count, path_contains, seconds))

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and fault.path_contains in path and fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def calls(self, method: str, path_contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and path_contains in r.path]


def _handler(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as separate writes: without this, Nagle + delayed ACK add 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else None

        def _dispatch(self, method: str) -> None:
            parsed = urlparse(self.path)
            body = self._body() if method in ("POST", "PATCH", "PUT") else None
            content_type = (self.headers.get("Content-Type") or "").split(";")[0]
            api.requests.append(Recorded(method, self.path, content_type, body))
            match = _PATH.match(parsed.path)
            if match is None:
                self._send(404, ApiError(404, "NotFound", f"no route {parsed.path}").body())
                return
            fault = api.take_fault(method, self.path)
            if fault is not None and callable(fault.action):
                fault.action()  # e.g. another client writes just before this request lands
                fault = None
            if fault is not None and isinstance(fault.action, int):
                codes = {
                    409: "Conflict",
                    500: "InternalError",
                    503: "ServiceUnavailable",
                    429: "TooManyRequests",
                }
                self._send(
                    fault.action, ApiError(fault.action, codes.get(fault.action, "Error"), "injected").body()
                )
                return
            if fault is not None and fault.action == "hang":
                time.sleep(fault.seconds)
                self.close_connection = True
                return
            try:
                code, result = self._handle(method, match, parse_qs(parsed.query), body, content_type)
            except ApiError as exc:
                self._send(exc.code, exc.body())
                return
            if fault is not None and fault.action == "hang-after-apply":
                time.sleep(fault.seconds)  # applied, but the reply comes too late
                self.close_connection = True
                return
            if code == -1:
                return  # streamed
            self._send(code, result)

        def _handle(
            self, method: str, m: re.Match[str], query: dict[str, list[str]], body: Any, ctype: str
        ) -> tuple[int, Any]:
            group, version, ns, plural, name, sub = (
                m.group(k) for k in ("group", "version", "ns", "plural", "name", "sub")
            )
            store = api.store
            if name is None:
                if method == "GET" and query.get("watch", ["false"])[0].lower() in ("true", "1"):
                    self._watch(group, plural, ns, query)
                    return -1, None
                if method == "GET":
                    items = [
                        o
                        for (g, p, n, _), o in sorted(store.objects.items())
                        if (g, p, n) == (group, plural, ns)
                    ]
                    return 200, {
                        "kind": "List",
                        "apiVersion": f"{group}/{version}",
                        "metadata": {"resourceVersion": str(store.rv)},
                        "items": items,
                    }
                if method == "POST":
                    obj_name = (body.get("metadata") or {}).get("name")
                    if not obj_name:
                        raise ApiError(422, "Invalid", "metadata.name: Required value")
                    return 201, store.create((group, plural, ns, obj_name), body)
                raise ApiError(405, "MethodNotAllowed", method)
            key = (group, plural, ns, name)
            if method == "GET":
                obj = store.get(key)
                if obj is None:
                    raise ApiError(404, "NotFound", f'{plural}.{group} "{name}" not found')
                return 200, obj
            if method == "DELETE":
                store.delete(key)
                return 200, {"kind": "Status", "status": "Success"}
            if method == "PATCH":
                return 200, store.write(key, self._patcher(body, ctype), status=sub == "status")
            if method == "PUT":

                def replace(current: dict[str, Any]) -> dict[str, Any]:
                    expected = (body.get("metadata") or {}).get("resourceVersion")
                    if expected and expected != current["metadata"]["resourceVersion"]:
                        raise ApiError(409, "Conflict", _CONFLICT)
                    return body

                return 200, store.write(key, replace, status=sub == "status")
            raise ApiError(405, "MethodNotAllowed", method)

        def _patcher(self, body: Any, ctype: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
            def apply(current: dict[str, Any]) -> dict[str, Any]:
                if ctype == "application/merge-patch+json":
                    expected = ((body or {}).get("metadata") or {}).get("resourceVersion")
                    if expected and expected != current["metadata"]["resourceVersion"]:
                        raise ApiError(409, "Conflict", _CONFLICT)
                    return merge_patch(current, body)
                if ctype == "application/json-patch+json":
                    try:
                        return json_patch(current, body)
                    except (KeyError, IndexError, ValueError) as exc:
                        raise ApiError(422, "Invalid", f"json patch failed: {exc}") from None
                raise ApiError(415, "UnsupportedMediaType", f"{_MEDIA_TYPES} (got {ctype})")

            return apply

        def _watch(self, group: str, plural: str, ns: str, query: dict[str, list[str]]) -> None:
            selector = query.get("fieldSelector", [""])[0]
            wanted = selector.split("=", 1)[1] if selector.startswith("metadata.name=") else None
            since = int(query.get("resourceVersion", ["0"])[0] or 0)
            deadline = time.monotonic() + float(query.get("timeoutSeconds", ["30"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            store = api.store
            cursor = since
            try:
                while not api.closing.is_set():
                    with store.changed:
                        pending = [e for e in store.events if e.rv > cursor]
                        if not pending:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                break
                            store.changed.wait(min(remaining, 0.5))
                            continue
                    for event in pending:
                        cursor = event.rv
                        g, p, n, name = event.key
                        if (g, p, n) != (group, plural, ns) or (wanted and name != wanted):
                            continue
                        line = json.dumps({"type": event.kind, "object": event.obj}).encode() + b"\n"
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

    return Handler
