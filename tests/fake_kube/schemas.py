"""Validation of custom objects against the real CRD schemas in ``shared/reference/crds/``.

Each CRD's ``openAPIV3Schema`` becomes a JSON Schema validator. It is made *strict* the way
``kubectl apply --validate=strict`` is: an object schema that lists properties (and neither allows
additional ones nor preserves unknown fields) rejects a field it does not list, where the API
server would silently prune it. CEL rules (``x-kubernetes-validations``) are not evaluated; the
Istio VirtualService CRD's only ones bound durations, which mlcanary does not set.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT.parent / "shared" / "reference" / "crds"
if not CRD_DIR.is_dir():  # CI lays shared/ beside the clone; a worktree finds it one level further up
    CRD_DIR = Path("/work/shared/reference/crds")

CRD_FILES = {
    ("serving.kserve.io", "InferenceService"): "inferenceservices.serving.kserve.io.yaml",
    ("networking.istio.io", "VirtualService"): "virtualservices.networking.istio.io.yaml",
}


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def crd(group: str, kind: str) -> dict[str, Any]:
    path = CRD_DIR / CRD_FILES[(group, kind)]
    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def validator(group: str, kind: str, version: str) -> jsonschema.Draft7Validator:
    for entry in crd(group, kind)["spec"]["versions"]:
        if entry["name"] == version:
            schema = _strict(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
            # apiVersion/kind/metadata are checked by the API server itself, not by the CRD.
            schema["properties"]["metadata"] = {"type": "object"}
            schema["properties"].setdefault("apiVersion", {"type": "string"})
            schema["properties"].setdefault("kind", {"type": "string"})
            return jsonschema.Draft7Validator(schema)
    raise KeyError(f"{kind}.{group} has no version {version}")


def errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of a custom object (empty when valid), as ``path: message``."""
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    kind = obj.get("kind", "")
    if (group, kind) not in CRD_FILES:
        return [f"no CRD schema for {kind} {obj.get('apiVersion')}"]
    found = []
    for error in validator(group, kind, version).iter_errors(obj):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"{where}: {error.message[:300]}")
    metadata = obj.get("metadata") or {}
    if not metadata.get("name"):
        found.append("metadata/name: required")
    return found


def has_schema(obj: dict[str, Any]) -> bool:
    group, _, _ = str(obj.get("apiVersion", "")).rpartition("/")
    return (group, obj.get("kind", "")) in CRD_FILES
