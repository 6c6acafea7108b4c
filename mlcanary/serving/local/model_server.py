"""Local model server process: one MLflow model version behind KServe's V1 and V2 protocols.

Two of these run side by side on one machine (champion and candidate arm), with Envoy in front
splitting traffic. The routes, status codes, headers and logged events are those of
:mod:`mlcanary.serving.local.inference_app`; concurrent requests are micro-batched
(:mod:`mlcanary.serving.local.micro_batcher`).

Run as a process: ``python -m mlcanary.serving.local.model_server --port P --name NAME --version V
--arm ARM --tracking-uri URI [--collector-url URL] [--workers N] [--max-batch-rows R]
[--max-batch-wait-ms MS] [--log-batch-events N] [--log-linger-ms MS]``.

With ``--workers N`` (default 1) the process loads the model once, binds the port, and forks
N − 1 more workers that accept on the same listening socket (the kernel spreads connections over
them); each worker has its own event loop, micro-batcher and payload logger (its own queue and
connection to the collector, so events are neither shared nor lost between workers), and
``GET /metrics/payload-logger`` / ``/metrics/batching`` report the counters of the worker that
answered. SIGTERM to the process group (as the stack stops a server) shuts every worker down
gracefully; the parent also forwards SIGTERM to its workers and waits for them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from mlcanary.registry.model_loader import ModelLoadError
from mlcanary.rollout.model_outputs import OutputNames
from mlcanary.serving.local.inference_app import (
    CLIENT_CLOSED_REQUEST,
    DEFAULT_MAX_BODY_BYTES,
    SHADOW_HOST_SUFFIX,
    create_app,
    is_shadow_host,
)
from mlcanary.serving.local.inference_protocol import DEFAULT_MAX_INSTANCES
from mlcanary.serving.local.micro_batcher import DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_WAIT_MS, BatchingConfig
from mlcanary.serving.local.payload_logger import (
    DEFAULT_LINGER_S,
    DEFAULT_MAX_BATCH,
    UVICORN_GRACEFUL_S,
    EventSink,
    PayloadLogger,
)
from mlcanary.serving.local.served_model import ServedModel, placeholder_request

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "DEFAULT_MAX_BODY_BYTES",
    "EXIT_LOAD_FAILED",
    "LOAD_FAILED_PREFIX",
    "SHADOW_HOST_SUFFIX",
    "ServeOptions",
    "ServedModel",
    "create_app",
    "is_shadow_host",
    "main",
    "placeholder_request",
    "serve",
]

logger = logging.getLogger(__name__)

#: Exit status of a model server whose model cannot be loaded (its last log line says why).
EXIT_LOAD_FAILED = 3
#: Prefix of that last line, so a supervisor can report it alone.
LOAD_FAILED_PREFIX = "mlcanary: cannot serve"
MAX_WORKERS = 64


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlcanary.serving.local.model_server",
        description="Serve one MLflow model version over KServe's V1 and V2 protocols.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--name", required=True, help="registered model name (also the name in URL paths)")
    parser.add_argument("--version", required=True, help="registered model version to serve")
    parser.add_argument(
        "--arm", required=True, help="arm label reported in events, e.g. champion or candidate"
    )
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI")
    parser.add_argument(
        "--registry-uri", default=None, help="MLflow registry URI (default: the tracking URI)"
    )
    parser.add_argument(
        "--collector-url", default=None, help="where to POST inference events (default: none)"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="label = P(positive) >= threshold")
    parser.add_argument(
        "--outputs", default=None, help="model.outputs as JSON: which outputs hold the label and probability"
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--max-instances", type=int, default=DEFAULT_MAX_INSTANCES)
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (default: 1)"
    )
    parser.add_argument(
        "--max-batch-rows",
        type=int,
        default=DEFAULT_MAX_BATCH_ROWS,
        help=f"rows scored together at most, 1 = no batching (default: {DEFAULT_MAX_BATCH_ROWS})",
    )
    parser.add_argument(
        "--max-batch-wait-ms",
        type=float,
        default=DEFAULT_MAX_WAIT_MS,
        help="longest wait for requests already arriving before a batch is scored "
        f"(default: {DEFAULT_MAX_WAIT_MS})",
    )
    parser.add_argument(
        "--log-batch-events",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help="inference events per POST to the collector at most (CloudEvents batched mode); 1 = each "
        f"event alone in binary mode, as KServe's logger sends (default: {DEFAULT_MAX_BATCH})",
    )
    parser.add_argument(
        "--log-linger-ms",
        type=float,
        default=DEFAULT_LINGER_S * 1000,
        help="longest wait for a batch of events to fill before it is sent "
        f"(default: {DEFAULT_LINGER_S * 1000:g})",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if args.log_batch_events < 1:
        parser.error(f"--log-batch-events must be at least 1, got {args.log_batch_events}")
    if not (0.0 <= args.log_linger_ms <= 60_000 and math.isfinite(args.log_linger_ms)):
        parser.error(f"--log-linger-ms must be within [0, 60000], got {args.log_linger_ms}")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be within 1-65535, got {args.port}")
    if not (0.0 <= args.threshold <= 1.0 and math.isfinite(args.threshold)):
        parser.error(f"--threshold must be within [0, 1], got {args.threshold}")
    if not 1 <= args.workers <= MAX_WORKERS:
        parser.error(f"--workers must be within 1-{MAX_WORKERS}, got {args.workers}")
    try:
        args.batching = BatchingConfig(args.max_batch_rows, args.max_batch_wait_ms)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Load the model version from MLflow and serve it until SIGTERM/SIGINT (exit code 0)."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        outputs = OutputNames.model_validate_json(args.outputs) if args.outputs else OutputNames()
        served = _load(args)
    except Exception as exc:
        # One line, no traceback: `up` and `release` report it as the reason the arm cannot serve.
        reason = (
            " ".join(str(exc).split()) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
        )
        print(f"{LOAD_FAILED_PREFIX} {args.name} v{args.version}: {reason}", file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    served = replace(served, outputs=outputs)
    options = ServeOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        collector_url=args.collector_url,
        max_body_bytes=args.max_body_bytes,
        max_instances=args.max_instances,
        batching=args.batching,
        log_level=args.log_level,
        log_batch_events=args.log_batch_events,
        log_linger_ms=args.log_linger_ms,
    )
    return serve(served, options)


@dataclass(frozen=True)
class ServeOptions:
    """How :func:`serve` runs: where it listens, how many worker processes, where events go and in
    batches of how many (``log_batch_events``, ``log_linger_ms``: see
    :class:`~mlcanary.serving.local.payload_logger.PayloadLogger`'s ``max_batch`` and ``linger_s``)."""

    host: str
    port: int
    workers: int = 1
    collector_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_instances: int = DEFAULT_MAX_INSTANCES
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    log_level: str = "info"
    log_batch_events: int = DEFAULT_MAX_BATCH
    log_linger_ms: float = DEFAULT_LINGER_S * 1000


def serve(served: ServedModel, options: ServeOptions) -> int:
    """Serve ``served`` until SIGTERM/SIGINT with ``options.workers`` processes on one socket.

    Returns 0 after a graceful shutdown, 1 if the port cannot be bound.
    """
    try:
        listener = socket.create_server((options.host, options.port), backlog=2048)
    except OSError as exc:
        print(f"mlcanary: cannot listen on {options.host}:{options.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    logger.info(
        "serving %s v%s as %s on http://%s:%d (%d worker(s))",
        served.name,
        served.version,
        served.arm,
        options.host,
        options.port,
        options.workers,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; this handler
    # turns it into an orderly exit, so the parent still stops and reaps its workers.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    children = _fork_workers(options.workers - 1, lambda: _serve(served, options, listener))
    try:
        _serve(served, options, listener)
    finally:
        _stop_workers(children)
    return 0


def _fork_workers(count: int, run: Callable[[], None]) -> list[int]:
    """Fork ``count`` workers that call ``run()`` and exit; returns their pids."""
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker: its own event loop, batcher and payload logger
            code = 0
            try:
                run()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
            except BaseException:
                logger.exception("model-server worker %d failed", os.getpid())
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    return children


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _stop_workers(children: list[int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _serve(served: ServedModel, options: ServeOptions, listener: socket.socket) -> None:
    import uvicorn

    sink: EventSink | None = None
    if options.collector_url:
        # Per process: its thread starts after the fork.
        sink = PayloadLogger(
            options.collector_url,
            max_batch=options.log_batch_events,
            linger_s=options.log_linger_ms / 1000,
        )
    app = create_app(
        served,
        sink=sink,
        max_body_bytes=options.max_body_bytes,
        max_instances=options.max_instances,
        batching=options.batching,
    )
    # uvicorn turns SIGTERM into a graceful shutdown, which runs the lifespan that closes the sink.
    config = uvicorn.Config(
        app,
        access_log=False,
        log_level=options.log_level,
        lifespan="on",
        timeout_graceful_shutdown=UVICORN_GRACEFUL_S,
    )
    uvicorn.Server(config).run(sockets=[listener])


def _load(args: argparse.Namespace) -> ServedModel:
    # Imported here so the server module stays importable without MLflow.
    from mlflow import MlflowClient

    from mlcanary.registry.model_loader import load_registered_model

    registry_uri = args.registry_uri or args.tracking_uri
    client = MlflowClient(tracking_uri=args.tracking_uri, registry_uri=registry_uri)
    scorer = load_registered_model(
        client, args.tracking_uri, args.name, str(args.version), threshold=args.threshold
    )
    return ServedModel(
        name=args.name, version=str(args.version), arm=args.arm, threshold=args.threshold, scorer=scorer
    )


if __name__ == "__main__":
    raise SystemExit(main())
