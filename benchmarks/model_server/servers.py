"""The processes measured: our model server, KServe's, our Envoy and a minimal Envoy in front.

Every process is started in its own process group, recorded in the benchmark's temporary state
directory, and stopped by :class:`Fleet` (also after an error).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlcanary.runtime.env import child_env
from mlcanary.runtime.processes import ManagedProcess, start_process, wait_for_http, wait_for_port

HOST = "127.0.0.1"
# One OpenMP/BLAS thread per model server, as the local stack runs them (LocalBackend's default).
MODEL_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Fleet:
    """The processes one run started, stopped together."""

    state_dir: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    stoppers: list[Any] = field(default_factory=list)
    pending: list[tuple[ManagedProcess, str]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], ready_url: str) -> ManagedProcess:
        """Start a process; :meth:`wait_ready` waits for every one started (they load in parallel)."""
        process = start_process(
            name,
            argv,
            state_dir=self.state_dir,
            log_path=self.state_dir / "logs" / f"{name}.log",
            env=child_env({**os.environ, **MODEL_ENV}),
        )
        self.processes.append(process)
        self.pending.append((process, ready_url))
        return process

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        for process, url in self.pending:
            wait_for_http(url, timeout_s=timeout_s, process=process)
        self.pending.clear()

    def stop(self) -> None:
        for stopper in reversed(self.stoppers):
            stopper()
        for process in reversed(self.processes):
            process.stop(grace_s=5.0)
        self.processes.clear()
        self.stoppers.clear()


def start_ours(
    fleet: Fleet, port: int, tracking_uri: str, name: str, version: str, extra: list[str] | None = None
) -> ManagedProcess:
    argv = [sys.executable, "-m", "mlcanary.serving.local.model_server", "--port", str(port)]
    argv += ["--name", name, "--version", version, "--arm", "champion", "--tracking-uri", tracking_uri]
    argv += ["--log-level", "warning", *(extra or [])]
    return fleet.start("ours", argv, f"http://{HOST}:{port}/v1/models/{name}")


def start_kserve(fleet: Fleet, port: int, tracking_uri: str, name: str, version: str) -> ManagedProcess:
    argv = [sys.executable, "-m", "benchmarks.model_server.kserve_server", "--port", str(port)]
    argv += ["--tracking-uri", tracking_uri, "--name", name, "--version", version]
    return fleet.start("kserve", argv, f"http://{HOST}:{port}/v1/models/{name}")


def minimal_envoy_bootstrap(listener_port: int, upstream_port: int) -> dict[str, Any]:
    """The smallest useful front door: one listener, one route to one static cluster, the router
    filter; no access log, no runtime layers, no admin listener."""
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "minimal",
                    "address": {"socket_address": {"address": HOST, "port_value": listener_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                        "http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "minimal",
                                        "route_config": {
                                            "name": "minimal",
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "model"},
                                                        }
                                                    ],
                                                }
                                            ],
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters."
                                                    "http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "model",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "model",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": HOST,
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        }
    }


def start_minimal_envoy(fleet: Fleet, listener_port: int, upstream_port: int) -> None:
    """Envoy's defaults otherwise (one worker thread per core), as the local stack runs ours."""
    from mlcanary.serving.local.envoy import find_envoy_binary

    path = fleet.state_dir / "minimal-envoy.yaml"
    path.write_text(yaml.safe_dump(minimal_envoy_bootstrap(listener_port, upstream_port)))
    argv = [str(find_envoy_binary()), "-c", str(path), "--disable-hot-restart", "--use-dynamic-base-id"]
    argv += ["--log-level", "warn"]
    process = start_process(
        "minimal-envoy", argv, state_dir=fleet.state_dir, log_path=fleet.state_dir / "logs" / "minimal.log"
    )
    fleet.processes.append(process)
    wait_for_port(HOST, listener_port, timeout_s=30.0, process=process)


def start_our_envoy(
    fleet: Fleet, listener_port: int, admin_port: int, upstream_port: int, spare_port: int
) -> None:
    """Our front door as the local stack renders it, champion = the model server at 100 %."""
    from mlcanary.serving.local.envoy import EnvoyProxy
    from mlcanary.serving.local.envoy_config import EnvoyLayout, Upstream

    layout = EnvoyLayout(
        state_dir=fleet.state_dir / "ours-envoy",
        host=HOST,
        listener_port=listener_port,
        admin_port=admin_port,
        champion=Upstream(host=HOST, port=upstream_port),
        candidate=Upstream(host=HOST, port=spare_port),
    )
    proxy = EnvoyProxy(layout)
    proxy.start()
    fleet.stoppers.append(proxy.stop)
