"""``kustomize build`` for this repository's kustomizations: ``kubectl kustomize`` when kubectl is
installed (it embeds kustomize; the machine image and CI have it), else a small builder of our own
that implements exactly the features ``deploy/k8s`` uses — ``resources`` (files and directories),
``namespace``, ``labels`` (without selectors), ``images`` and JSON 6902 ``patches`` with a target.
A test checks the two agree wherever kubectl exists."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from fake_kube.server import json_patch

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def kubectl() -> str | None:
    return shutil.which("kubectl")


def build_with_kubectl(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl() or "kubectl", "kustomize", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def build_here(directory: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(build_here(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    objects = [copy.deepcopy(o) for o in objects]
    namespace = spec.get("namespace")
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = namespace
        if namespace and obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace
        for group in spec.get("labels", []):
            meta.setdefault("labels", {}).update(group["pairs"])
        for image in spec.get("images", []):
            for container in _containers(obj):
                if container.get("image", "").split(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for patch in spec.get("patches", []):
        target = patch["target"]
        ops = yaml.safe_load(patch["patch"])
        for index, obj in enumerate(objects):
            group = obj["apiVersion"].rpartition("/")[0]
            if (
                target.get("kind", obj["kind"]) != obj["kind"]
                or target.get("name", obj["metadata"]["name"]) != obj["metadata"]["name"]
            ):
                continue
            if "group" in target and target["group"] != group:
                continue
            objects[index] = json_patch(obj, ops)
    return objects


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    if obj.get("kind") == "Job":
        pod = spec.get("template", {}).get("spec", {})
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def build(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build directory`` renders."""
    return build_with_kubectl(directory) if kubectl() else build_here(directory)
