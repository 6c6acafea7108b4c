"""The collector as a real process (``python -m mlcanary.telemetry.collector``), for the tests and
benchmarks that need one outside the local stack (which starts its own through ``mlcanary up``).

Started and waited for with the product's own process helpers (:func:`start_process`,
:func:`wait_for_http`), so a collector that exits or never becomes healthy fails with its log."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from mlcanary.runtime.processes import ProcessError, start_process, wait_for_http

__all__ = ["collector_process"]


@contextmanager
def collector_process(
    port: int,
    db_url: str,
    *extra_args: str,
    log: Path | None = None,
    stop_grace_s: float = 15.0,
    deadline_s: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A healthy collector on ``127.0.0.1:port`` writing to ``db_url``, its output appended to
    ``log`` (a temporary file without one). Raises :class:`~mlcanary.runtime.processes.ProcessError`
    with the log's tail if it exits or is not healthy within ``deadline_s``. On exit it is sent
    SIGTERM and given ``stop_grace_s`` to finish (0: killed at once), then killed."""
    argv = [
        sys.executable,
        "-m",
        "mlcanary.telemetry.collector",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db-url",
        db_url,
        "--log-level",
        "warning",
        *extra_args,
    ]
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlcanary-collector-")))
        managed = start_process(
            f"collector-{port}", argv, state_dir=scratch, log_path=log or scratch / "collector.log"
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout_s=deadline_s, process=managed)
            if managed.popen is None:  # start_process always returns its own child
                raise ProcessError("the collector was started without a handle")
            yield managed.popen
        finally:
            managed.stop(grace_s=stop_grace_s)
