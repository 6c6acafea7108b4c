"""What the checkout's ``prefect.yaml`` declares: :func:`deployment_names` and
:func:`work_pool_names` (a missing or malformed file is a :class:`PlatformError`).

A deployment without a pool name goes to Prefect's ``deployments.default_work_pool_name``, which the
checkout's ``prefect.toml`` sets (the platform's children never inherit ``PREFECT_*`` variables, so
that file is what ``prefect deploy --all`` sees there)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from mlcanary.platform.errors import PlatformError
from mlcanary.platform.paths import repo_root

__all__ = ["default_work_pool", "deployment_names", "work_pool_names"]


def _prefect_yaml(root: Path) -> dict[str, Any]:
    path = root / "prefect.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlatformError(
            f"{path} not found: `up --platform` deploys the flows from a checkout of mlcanary"
        ) from None
    except yaml.YAMLError as exc:
        raise PlatformError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("deployments"), list):
        raise PlatformError(f"{path}: no `deployments:` list")
    return data


def deployment_names(root: Path | None = None) -> list[str]:
    """The deployment names declared in ``prefect.yaml``."""
    return [str(d["name"]) for d in _prefect_yaml(root or repo_root())["deployments"]]


def default_work_pool(root: Path) -> str | None:
    """``deployments.default_work_pool_name`` from the checkout's ``prefect.toml``, if set."""
    path = root / "prefect.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as exc:
        raise PlatformError(f"{path}: not valid TOML: {exc}") from None
    name = (data.get("deployments") or {}).get("default_work_pool_name")
    return str(name) if name else None


def work_pool_names(root: Path | None = None) -> list[str]:
    """The work pools the deployments of ``prefect.yaml`` use (first-seen order); a deployment
    naming no pool uses :func:`default_work_pool`."""
    root = root or repo_root()
    default = default_work_pool(root)
    pools: list[str] = []
    for deployment in _prefect_yaml(root)["deployments"]:
        pool = (deployment.get("work_pool") or {}).get("name") or default
        if pool and pool not in pools:
            pools.append(str(pool))
    return pools
