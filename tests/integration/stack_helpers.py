"""Helpers for integration tests that need the real local stack (Envoy, model servers, collector).

Typical module fixture::

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory, mlflow_state):
        settings = stack_settings(tmp_path_factory.mktemp("stack"), mlflow_dir=mlflow_state)
        with local_stack(settings) as running:
            yield running

:func:`local_stack` trains a champion (and a candidate) with small data, brings the stack up on
ports the kernel reports free, and always runs ``down`` on exit, even if ``up`` failed half way.
All traffic goes to 127.0.0.1; every loop here is bounded in count and time.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from mlcanary.config import PORT_SETTINGS, Settings, load_settings
from mlcanary.data.loader import load_dataset
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.rollout.arms import Arm
from mlcanary.runtime.processes import RUN_DIRNAME, find_running, read_pidfile
from mlcanary.serving.headers import ARM_HEADER, ARM_SERVED_HEADER, REQUEST_ID_HEADER
from mlcanary.serving.local.arm_servers import server_process_name
from mlcanary.serving.local.backend import LocalBackend
from mlcanary.serving.local.stack import StackInfo, down, up
from mlcanary.telemetry.store import InferenceLogStore
from mlcanary.testing.ports import free_port_overrides
from mlcanary.training import train

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
_names = itertools.count(1)


def stack_settings(
    state_dir: Path,
    *,
    mlflow_dir: Path | None = None,
    model_name: str | None = None,
    rows: int = 2000,
    **overrides: Any,
) -> Settings:
    """Settings for a stack in ``state_dir`` on free ports, with small, fast-to-train data.

    ``mlflow_dir`` shares an existing MLflow store (e.g. the session's ``mlflow_state``; creating
    one costs seconds) while pidfiles, Envoy files and the inference log stay in ``state_dir``.
    ``overrides`` are dotted keys (``**{"training.decision_threshold": 0.4}``) and win over all else.
    """
    base: dict[str, Any] = {
        "state_dir": str(state_dir),
        "model.name": model_name or f"stack-model-{os.getpid()}-{next(_names)}",
        "model.estimator": "logistic_regression",
        "data.synthetic.rows": rows,
        "training.reference_rows": 500,
        "serving.host": HOST,
        **free_port_overrides(HOST),
    }
    if mlflow_dir is not None:
        base["mlflow.tracking_uri"] = f"sqlite:///{(mlflow_dir / 'mlflow.db').resolve()}"
        base["mlflow.artifact_location"] = (mlflow_dir / "mlartifacts").resolve().as_uri()
    return load_settings("local", config_dir=REPO_ROOT / "configs", env={}, overrides=base | overrides)


def stack_overrides(settings: Settings) -> dict[str, Any]:
    """The dotted settings that locate the stack of ``settings``: its state, model, MLflow store,
    host and ports (everything but the policy)."""
    values: dict[str, Any] = {
        "state_dir": str(settings.state_dir),
        "model.name": settings.model.name,
        "model.estimator": settings.model.estimator,
        "data.synthetic.rows": settings.data.synthetic.rows,
        "training.reference_rows": settings.training.reference_rows,
        "serving.host": settings.serving.host,
        "mlflow.tracking_uri": settings.tracking_uri,
        "mlflow.artifact_location": settings.artifact_location,
    }
    for dotted in PORT_SETTINGS:
        values[dotted] = getattr(settings.serving, dotted.split(".", 1)[1])
    return values


def same_stack(settings: Settings, **overrides: Any) -> Settings:
    """Settings for the running stack of ``settings`` with another policy (``overrides`` are dotted
    keys on top of the shipped profile), so tests with different policies share one stack."""
    return load_settings(
        "local", config_dir=REPO_ROOT / "configs", env={}, overrides=stack_overrides(settings) | overrides
    )


def cli_env(settings: Settings) -> dict[str, str]:
    """``MLCANARY_*`` variables that point the command line at the stack of ``settings``."""
    return {
        "MLCANARY_" + key.upper().replace(".", "__"): str(value)
        for key, value in stack_overrides(settings).items()
    }


def train_versions(settings: Settings, *, candidate: bool = True) -> tuple[str, str | None]:
    """Train ``@champion`` (and, with the same settings, ``@candidate``); return their versions."""
    registry = registry_from_settings(settings)
    first = train(settings, registry)
    assert first.alias == "champion", first
    if not candidate:
        return first.version, None
    second = train(settings, registry)
    assert second.alias == "candidate", second
    return first.version, second.version


@dataclass(frozen=True)
class Reply:
    """One request sent through the front door and what came back."""

    request_id: str
    status: int
    arm: str | None
    version: str | None
    body: Any


@dataclass
class LocalStack:
    """A running local stack and the handles a test needs (see :func:`local_stack`)."""

    settings: Settings
    info: StackInfo
    backend: LocalBackend
    champion_version: str
    candidate_version: str | None
    _rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def model(self) -> str:
        return self.settings.model.name

    @property
    def front_door(self) -> str:
        return self.info.front_door_url

    @property
    def state_dir(self) -> Path:
        return self.info.state_dir

    def instances(self, n: int) -> list[dict[str, Any]]:
        """``n`` feature rows of the bundled dataset (cycled), as V1 ``instances`` entries."""
        if not self._rows:
            dataset = load_dataset(self.settings.data)
            self._rows = dataset.x.head(500).to_dict(orient="records")
        return [self._rows[i % len(self._rows)] for i in range(n)]

    def client(self, timeout_s: float = 10.0) -> httpx.Client:
        """A keep-alive client for the front door that ignores any proxy settings."""
        return httpx.Client(base_url=self.front_door, timeout=timeout_s, trust_env=False)

    def send(
        self,
        n: int,
        *,
        arm: str | None = None,
        prefix: str | None = None,
        deadline_s: float = 60.0,
    ) -> list[Reply]:
        """Send ``n`` V1 predictions with distinct ``x-request-id`` s (``arm`` forces an arm).

        Stops early (returning what was sent) if ``deadline_s`` passes.
        """
        prefix = prefix or uuid.uuid4().hex[:8]
        replies: list[Reply] = []
        deadline = time.monotonic() + deadline_s
        path = f"/v1/models/{self.model}:predict"
        with self.client() as client:
            for index, instance in enumerate(self.instances(n)):
                if time.monotonic() > deadline:
                    break
                request_id = f"{prefix}-{index:05d}"
                headers = {REQUEST_ID_HEADER: request_id}
                if arm is not None:
                    headers[ARM_HEADER] = arm
                response = client.post(path, json={"instances": [instance]}, headers=headers)
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                replies.append(
                    Reply(
                        request_id=request_id,
                        status=response.status_code,
                        arm=response.headers.get(ARM_SERVED_HEADER),
                        version=response.headers.get("x-mlcanary-model-version"),
                        body=body,
                    )
                )
        return replies

    @contextmanager
    def background_traffic(
        self, *, interval_s: float = 0.02, max_requests: int = 20_000, deadline_s: float = 120.0
    ) -> Iterator[list[Reply]]:
        """Send predictions from a thread, one every ``interval_s`` at most, while the body runs.

        The pause keeps the load light: on 2 cores a flat-out client slows a model server's start
        several-fold.
        Yields the list the replies are appended to; a transport error is recorded as status 0.
        Stops at the end of the body, after ``max_requests`` or after ``deadline_s``, whichever is
        first, and joins the thread before returning.
        """
        replies: list[Reply] = []
        stop = threading.Event()
        instances = self.instances(500)
        path = f"/v1/models/{self.model}:predict"
        prefix = uuid.uuid4().hex[:8]

        def run() -> None:
            deadline = time.monotonic() + deadline_s
            with self.client() as client:
                for index in range(max_requests):
                    if stop.wait(interval_s) or time.monotonic() > deadline:
                        return
                    request_id = f"{prefix}-bg-{index:06d}"
                    body = {"instances": [instances[index % len(instances)]]}
                    try:
                        response = client.post(path, json=body, headers={REQUEST_ID_HEADER: request_id})
                    except httpx.HTTPError as exc:
                        replies.append(Reply(request_id, 0, None, None, repr(exc)))
                        continue
                    replies.append(
                        Reply(
                            request_id=request_id,
                            status=response.status_code,
                            arm=response.headers.get(ARM_SERVED_HEADER),
                            version=response.headers.get("x-mlcanary-model-version"),
                            body=response.text if response.status_code != 200 else None,
                        )
                    )

        thread = threading.Thread(target=run, name="background-traffic", daemon=True)
        thread.start()
        try:
            yield replies
        finally:
            stop.set()
            thread.join(timeout=30)

    def model_info(self, arm: str) -> dict[str, Any]:
        """``GET /v1/models/<name>`` through the front door, forced to ``arm``."""
        with self.client() as client:
            response = client.get(f"/v1/models/{self.model}", headers={ARM_HEADER: arm})
        response.raise_for_status()
        data = response.json()
        assert isinstance(data, dict)
        return data

    def wait_for_logged(
        self, request_ids: Iterable[str], *, timeout_s: float = 30.0, complete: bool = True
    ) -> pd.DataFrame:
        """Poll the inference log until every id has a row (with both halves if ``complete``).

        Returns those rows indexed by request id; on timeout returns what is there (the caller's
        assertion then names what is missing).
        """
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout_s
        with InferenceLogStore(self.info.store_url) as store:
            while True:
                frame = store.fetch(self.model)
                frame = frame[frame["request_id"].isin(wanted) & (frame["instance_index"] == 0)]
                done = frame
                if complete:
                    done = frame[frame["prediction"].notna() & frame["status_code"].notna()]
                if set(done["request_id"]) >= wanted or time.monotonic() >= deadline:
                    return frame.set_index("request_id")
                time.sleep(0.2)

    def server_pid(self, arm: Arm) -> int | None:
        """Pid of ``arm``'s running model server, from its pidfile (None if none runs)."""
        process = find_running(self.state_dir, server_process_name(arm))
        return None if process is None else process.pid


def recorded_pids(state_dir: Path) -> dict[str, int]:
    """Name → pid of every pidfile in ``<state>/run/`` (live or not)."""
    run_dir = state_dir / RUN_DIRNAME
    found: dict[str, int] = {}
    for path in sorted(run_dir.glob("*.pid")) if run_dir.is_dir() else []:
        record = read_pidfile(state_dir, path.stem)
        if record is not None:
            found[path.stem] = record.pid
    return found


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie awaiting its parent counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def count_by(replies: Sequence[Reply], key: str = "arm") -> Mapping[Any, int]:
    """How many replies per value of ``key`` (e.g. per arm or per status)."""
    counts: dict[Any, int] = {}
    for reply in replies:
        value = getattr(reply, key)
        counts[value] = counts.get(value, 0) + 1
    return counts


@contextmanager
def local_stack(
    settings: Settings,
    *,
    candidate: bool = True,
    candidate_percent: int = 20,
    ready_timeout_s: float = 90.0,
) -> Iterator[LocalStack]:
    """Train ``@champion`` (+ ``@candidate``), ``up`` the stack, yield it, and always ``down`` it."""
    champion_version, candidate_version = train_versions(settings, candidate=candidate)
    try:
        info = up(settings, candidate_percent=candidate_percent, ready_timeout_s=ready_timeout_s)
        backend = LocalBackend(settings, ready_timeout_s=ready_timeout_s)
        yield LocalStack(settings, info, backend, champion_version, candidate_version)
    finally:
        down(settings)
