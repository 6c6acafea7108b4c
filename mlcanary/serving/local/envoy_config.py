"""Pure rendering of the local Envoy front door's configuration: bootstrap and routes (RDS).

Nothing here touches the network or starts a process; :mod:`mlcanary.serving.local.envoy` writes
these documents to disk and runs Envoy. The facts behind the shape of the documents (file-based RDS
that only reloads on a rename, ``validate_clusters``, header routes before the weighted catch-all)
are recorded in ``shared/reference/envoy/README.md``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlcanary.rollout.arms import ARMS, Arm
from mlcanary.serving.headers import ARM_HEADER, ARM_SERVED_HEADER, REQUEST_ID_HEADER, ROUTES_VERSION_HEADER

if TYPE_CHECKING:
    from mlcanary.config import Settings

DEFAULT_ROUTE_CONFIG_NAME: Final = "mlcanary_routes"
DEFAULT_STAT_PREFIX: Final = "ingress_http"
LISTENER_NAME: Final = "canary_listener"
VIRTUAL_HOST_NAME: Final = "mlcanary"
WEIGHTED_ROUTE_NAME: Final = "weighted_split"

_ROUTE_CONFIG_TYPE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_NAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
# Printable ASCII without quotes or backslash: the version is echoed in a response header and in
# the JSON access log, so it must survive both without escaping.
_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9._:@+-]{1,128}$")


SHADOW_RUNTIME_KEY: Final = "mlcanary.shadow"
"""Envoy runtime key of the mirrored share (the routes file's ``default_value`` applies unless an
operator overrides it in a runtime layer)."""
_SHADOW_DENOMINATOR: Final = 1_000_000
_DENOMINATORS: Final = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


@dataclass(frozen=True)
class Weights:
    """Relative traffic weights of the two arms, as Envoy's ``weighted_clusters`` applies them,
    and the share of requests mirrored to the candidate.

    Contract: both weights are ``int`` in 0..100 and at least one is positive (Envoy rejects 0/0);
    the share of an arm is ``weight / (champion + candidate)``, so 80/20 and 4/1 split alike.
    ``shadow`` (0..1, to a millionth) is the fraction of weighted requests Envoy also sends to the
    candidate as a mirrored copy whose response it discards (``request_mirror_policies``); it
    changes with the same routes swap as the weights. Invalid values raise :class:`ValueError` at
    construction, so a ``Weights`` that exists is renderable.
    """

    champion: int
    candidate: int
    shadow: float = 0.0

    def __post_init__(self) -> None:
        self.validate()
        # Envoy keeps the share as a fraction of a million: compare what it can represent.
        object.__setattr__(
            self, "shadow", round(float(self.shadow) * _SHADOW_DENOMINATOR) / _SHADOW_DENOMINATOR
        )

    def validate(self) -> None:
        """Raise :class:`ValueError` explaining why these weights cannot be sent to Envoy."""
        for arm in ARMS:
            value = getattr(self, arm)
            # bool is an int subclass; True/False as a weight is always a caller bug.
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{arm} weight must be an integer 0..100, got {value!r}")
            if not 0 <= value <= 100:
                raise ValueError(f"{arm} weight must be between 0 and 100, got {value}")
        if self.champion + self.candidate <= 0:
            raise ValueError(
                "weights champion=0, candidate=0 send traffic nowhere; at least one must be positive"
            )
        shadow = self.shadow
        if isinstance(shadow, bool) or not isinstance(shadow, int | float) or not 0.0 <= shadow <= 1.0:
            raise ValueError(f"shadow share must be a number within [0, 1], got {shadow!r}")

    @classmethod
    def mirrored(cls, share: float) -> Weights:
        """Every user to the champion, ``share`` of requests mirrored to the candidate."""
        return cls(champion=100, candidate=0, shadow=share)

    @classmethod
    def canary(cls, percent: int) -> Weights:
        """``percent`` % of traffic to the candidate, the rest to the champion."""
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise ValueError(f"canary percent must be an integer 0..100, got {percent!r}")
        return cls(champion=100 - percent, candidate=percent)

    @property
    def total(self) -> int:
        """Sum of both weights (> 0)."""
        return self.champion + self.candidate

    @property
    def candidate_share(self) -> float:
        """Expected fraction (0..1) of weighted traffic that reaches the candidate."""
        return self.candidate / self.total

    def of(self, arm: Arm) -> int:
        """The weight of ``arm``."""
        return self.champion if arm == "champion" else self.candidate

    def as_dict(self) -> dict[str, int]:
        """``{"champion": int, "candidate": int}``, the shape ``mlcanary status`` reports."""
        return {"champion": self.champion, "candidate": self.candidate}


@dataclass(frozen=True)
class Upstream:
    """One model server behind Envoy: an address Envoy connects to (IP literal or DNS name)."""

    port: int
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"upstream port must be 1..65535, got {self.port}")
        if not self.host:
            raise ValueError("upstream host must not be empty")


@dataclass(frozen=True)
class EnvoyLayout:
    """Where the local Envoy listens, which upstreams it splits between, and where its files live.

    Files live under ``<state_dir>/envoy/``: ``bootstrap.yaml``, ``rds/routes.yaml`` (the only
    file Envoy watches), ``weights.json`` (last weights written, used on the next start),
    ``admin.address`` (written by Envoy) and ``logs/`` (``access.log``, ``envoy.log``).
    ``state_dir`` is made absolute at construction because Envoy reads these paths from its own
    working directory. Ports come from the configuration (:meth:`from_settings`); a listener or
    admin port of 0 asks the kernel for a free port, which the proxy discovers after start.
    """

    state_dir: Path
    listener_port: int
    admin_port: int
    champion: Upstream
    candidate: Upstream
    host: str = "127.0.0.1"
    admin_host: str = "127.0.0.1"
    route_config_name: str = DEFAULT_ROUTE_CONFIG_NAME
    stat_prefix: str = DEFAULT_STAT_PREFIX
    route_timeout_s: float = 30.0
    connect_timeout_s: float = 1.0
    # Below uvicorn's default keep-alive (5 s) so Envoy, not the model server, closes idle
    # upstream connections; otherwise a request can race the server's close and fail with 503 UC.
    upstream_idle_timeout_s: float = 4.0
    max_downstream_connections: int = 10_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())
        for name in ("listener_port", "admin_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be 0..65535 (0 = any free port), got {port}")
        if self.listener_port and self.listener_port == self.admin_port:
            raise ValueError(f"listener_port and admin_port are both {self.listener_port}")
        if not _is_loopback(self.admin_host):
            # The admin API changes weights and can stop Envoy: never beside the front door.
            raise ValueError(f"admin_host must be a loopback address, got {self.admin_host!r}")
        for name in ("route_config_name", "stat_prefix"):
            if not _NAME_RE.match(getattr(self, name)):
                raise ValueError(f"{name} must match {_NAME_RE.pattern}, got {getattr(self, name)!r}")
        for name in ("route_timeout_s", "connect_timeout_s", "upstream_idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_downstream_connections < 1:
            raise ValueError("max_downstream_connections must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> EnvoyLayout:
        """The layout of the local stack described by the loaded configuration."""
        serving = settings.serving
        return cls(
            state_dir=settings.state_dir,
            host=serving.host,
            listener_port=serving.front_door_port,
            admin_port=serving.envoy_admin_port,
            champion=Upstream(host=serving.host, port=serving.champion_port),
            candidate=Upstream(host=serving.host, port=serving.candidate_port),
        )

    def upstream(self, arm: Arm) -> Upstream:
        """The model server behind ``arm``."""
        return self.champion if arm == "champion" else self.candidate

    @property
    def envoy_dir(self) -> Path:
        return self.state_dir / "envoy"

    @property
    def rds_dir(self) -> Path:
        return self.envoy_dir / "rds"

    @property
    def routes_path(self) -> Path:
        return self.rds_dir / "routes.yaml"

    @property
    def bootstrap_path(self) -> Path:
        return self.envoy_dir / "bootstrap.yaml"

    @property
    def weights_path(self) -> Path:
        return self.envoy_dir / "weights.json"

    @property
    def admin_address_path(self) -> Path:
        return self.envoy_dir / "admin.address"

    @property
    def log_dir(self) -> Path:
        return self.envoy_dir / "logs"

    @property
    def access_log_path(self) -> Path:
        return self.log_dir / "access.log"

    @property
    def proxy_errors_log_path(self) -> Path:
        """Only the responses Envoy flagged (it answered, or the upstream failed): small, read each tick."""
        return self.log_dir / "proxy-errors.log"

    @property
    def rds_stat_prefix(self) -> str:
        """Prefix of Envoy's RDS counters (``update_success``, ``update_rejected``, ...)."""
        return f"http.{self.stat_prefix}.rds.{self.route_config_name}."


def _duration(seconds: float) -> str:
    """A protobuf JSON Duration ("1s", "0.25s")."""
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster(cfg: EnvoyLayout, arm: Arm) -> dict[str, Any]:
    upstream = cfg.upstream(arm)
    return {
        "name": arm,
        # STATIC needs an IP literal; a host name is resolved (and re-resolved) by Envoy.
        "type": "STATIC" if _is_ip(upstream.host) else "STRICT_DNS",
        "connect_timeout": _duration(cfg.connect_timeout_s),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": _duration(cfg.upstream_idle_timeout_s)},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": arm,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(upstream.host, upstream.port)}}]}
            ],
        },
    }


def _access_log_format() -> dict[str, str]:
    return {
        "start_time": "%START_TIME(%Y-%m-%dT%H:%M:%E6S%z)%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "route_name": "%ROUTE_NAME%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "response_code": "%RESPONSE_CODE%",
        "response_flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "request_id": f"%REQ({REQUEST_ID_HEADER.upper()})%",
        "arm_header": f"%REQ({ARM_HEADER.upper()})%",
        "arm_served": f"%RESP({ARM_SERVED_HEADER.upper()})%",
        "routes_version": f"%RESP({ROUTES_VERSION_HEADER.upper()})%",
    }


def _file_access_log(path: Path) -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"json_format": _access_log_format()},
        },
    }


def render_bootstrap(cfg: EnvoyLayout) -> dict[str, Any]:
    """The Envoy bootstrap for ``cfg``: one listener whose routes come from ``cfg.routes_path``.

    Routes are file-based RDS on a watched directory (reloaded when a file is renamed into it);
    Envoy keeps a client's ``x-request-id`` (or generates one), forwards it upstream, echoes it in
    the response, and writes one JSON access-log line per request (and, to a second log, one per
    response Envoy flagged: the errors it answered for an arm whose server could not).
    """
    hcm = {
        "@type": (
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager"
        ),
        "stat_prefix": cfg.stat_prefix,
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "rds": {
            "route_config_name": cfg.route_config_name,
            "config_source": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": str(cfg.routes_path),
                    "watched_directory": {"path": str(cfg.rds_dir)},
                },
            },
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
        "access_log": [
            _file_access_log(cfg.access_log_path),
            # A response flag marks a request Envoy answered itself (upstream down, reset, timeout):
            # the errors a dead model server never logs (see serving/local/proxy_errors.py).
            {**_file_access_log(cfg.proxy_errors_log_path), "filter": {"response_flag_filter": {}}},
        ],
    }
    return {
        "node": {"id": "mlcanary-local", "cluster": "mlcanary"},
        "admin": {"address": _socket_address(cfg.admin_host, cfg.admin_port)},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": (
                            "type.googleapis.com/envoy.extensions.resource_monitors."
                            "downstream_connections.v3.DownstreamConnectionsConfig"
                        ),
                        "max_active_downstream_connections": cfg.max_downstream_connections,
                    },
                }
            ]
        },
        "static_resources": {
            "listeners": [
                {
                    "name": LISTENER_NAME,
                    "address": _socket_address(cfg.host, cfg.listener_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(cfg, arm) for arm in ARMS],
        },
    }


def _served_by(arm: Arm) -> list[dict[str, Any]]:
    return [
        {"header": {"key": ARM_SERVED_HEADER, "value": arm}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]


# Retry only a request that never reached the model server (e.g. a pooled keep-alive connection
# the server had just closed): safe for any method, and it hides no model-server error from the
# canary's judgement.
_RETRY_POLICY: Final = {"retry_on": "reset-before-request", "num_retries": 1}


def _forced_route(arm: Arm, timeout: str) -> dict[str, Any]:
    return {
        "name": f"force_{arm}",
        "match": {"prefix": "/", "headers": [{"name": ARM_HEADER, "string_match": {"exact": arm}}]},
        "route": {"cluster": arm, "timeout": timeout, "retry_policy": dict(_RETRY_POLICY)},
        "response_headers_to_add": _served_by(arm),
    }


def render_routes(
    weights: Weights,
    version: str,
    *,
    route_config_name: str = DEFAULT_ROUTE_CONFIG_NAME,
    route_timeout_s: float = 30.0,
) -> dict[str, Any]:
    """The RDS discovery response that splits traffic by ``weights``, labelled ``version``.

    Routes, in match order: ``x-mlcanary-arm: candidate`` and ``x-mlcanary-arm: champion`` (exact
    match) force one arm; everything else is split by ``weighted_clusters`` and, with a shadow share,
    mirrored to the candidate (forced requests never are). Every response names
    the arm that served it and the routing-table version. The version is also part of the route
    configuration itself, so writing the same weights twice is still a visible change that can be
    confirmed. Raises :class:`ValueError` for invalid weights or version.
    """
    weights.validate()
    if not _VERSION_RE.match(version):
        raise ValueError(f"routes version must match {_VERSION_RE.pattern}, got {version!r}")
    if not _NAME_RE.match(route_config_name):
        raise ValueError(f"route_config_name must match {_NAME_RE.pattern}, got {route_config_name!r}")
    timeout = _duration(route_timeout_s)
    weighted: dict[str, Any] = {
        "name": WEIGHTED_ROUTE_NAME,
        "match": {"prefix": "/"},
        "route": {
            "timeout": timeout,
            "retry_policy": dict(_RETRY_POLICY),
            "weighted_clusters": {
                "clusters": [
                    {"name": arm, "weight": weights.of(arm), "response_headers_to_add": _served_by(arm)}
                    for arm in ARMS
                ]
            },
        },
    }
    if weights.shadow > 0:
        # Envoy sends the copy with "-shadow" appended to the host and discards its response; the
        # candidate's model server logs it as a shadow event (same x-request-id as the original).
        weighted["route"]["request_mirror_policies"] = [
            {
                "cluster": "candidate",
                "runtime_fraction": {
                    "default_value": {
                        "numerator": round(weights.shadow * _SHADOW_DENOMINATOR),
                        "denominator": "MILLION",
                    },
                    "runtime_key": SHADOW_RUNTIME_KEY,
                },
            }
        ]
    route_config = {
        "@type": _ROUTE_CONFIG_TYPE,
        "name": route_config_name,
        "validate_clusters": True,
        "response_headers_to_add": [
            {
                "header": {"key": ROUTES_VERSION_HEADER, "value": version},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "virtual_hosts": [
            {
                "name": VIRTUAL_HOST_NAME,
                "domains": ["*"],
                "routes": [_forced_route("candidate", timeout), _forced_route("champion", timeout), weighted],
            }
        ],
    }
    return {"version_info": version, "resources": [route_config]}


def weights_from_route_config(route_config: dict[str, Any]) -> Weights:
    """Read the weighted split back out of a RouteConfiguration (as rendered or as Envoy dumps it).

    Raises :class:`ValueError` if the configuration has no weighted route over both arms.
    """
    for vhost in route_config.get("virtual_hosts", []):
        for route in vhost.get("routes", []):
            clusters = route.get("route", {}).get("weighted_clusters", {}).get("clusters")
            if not clusters:
                continue
            # Protobuf JSON omits a zero weight only when unset; an explicit 0 is dumped as 0.
            found = {c.get("name"): int(c.get("weight", 0)) for c in clusters}
            if set(found) != set(ARMS):
                raise ValueError(f"weighted route has clusters {sorted(found)}, expected {list(ARMS)}")
            shadow = _mirrored_share(route["route"].get("request_mirror_policies") or [])
            return Weights(champion=found["champion"], candidate=found["candidate"], shadow=shadow)
    raise ValueError(f"route configuration {route_config.get('name')!r} has no weighted route")


def _mirrored_share(policies: list[dict[str, Any]]) -> float:
    """The share mirrored to the candidate by a route's ``request_mirror_policies`` (0 without)."""
    for policy in policies:
        if policy.get("cluster") != "candidate":
            continue
        fraction = policy.get("runtime_fraction")
        if fraction is None:
            return 1.0  # a mirror policy without a fraction mirrors every request
        value = fraction.get("default_value", {})
        # Protobuf JSON omits the default enum value (HUNDRED) and a zero numerator.
        denominator = _DENOMINATORS.get(str(value.get("denominator", "HUNDRED")))
        if denominator is None:
            raise ValueError(f"unknown mirror denominator {value.get('denominator')!r}")
        return min(int(value.get("numerator", 0)) / denominator, 1.0)
    return 0.0
