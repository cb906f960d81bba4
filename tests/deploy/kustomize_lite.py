"""Render a kustomization the way ``kubectl kustomize`` does, for the features deploy/k8s uses.

No registry ships kustomize (nor kubectl) as a Python or npm package that runs offline, so the
tests render the overlay themselves to validate what a cluster would receive. Only the fields
listed in ``SUPPORTED`` are understood; any other field fails the render, so a kustomization
that grows beyond this subset fails the tests instead of being half-rendered.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "labels", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass"}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge for maps (recursive); lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(patch)


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return [*pod.get("containers", []), *pod.get("initContainers", [])]


def render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: kustomization fields not understood: {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        docs.extend(render(target) if target.is_dir() else load_documents(target))
    for patch_ref in kustomization.get("patches", []):
        if set(patch_ref) != {"path"}:
            raise ValueError(f"only file patches are understood: {patch_ref}")
        for patch in load_documents(directory / patch_ref["path"]):
            matches = [
                i
                for i, doc in enumerate(docs)
                if doc["kind"] == patch["kind"]
                and doc["metadata"]["name"] == patch["metadata"]["name"]
            ]
            if len(matches) != 1:
                raise ValueError(f"patch {patch_ref['path']} matches {len(matches)} resources")
            docs[matches[0]] = _merge(docs[matches[0]], patch)
    for label_set in kustomization.get("labels", []):
        if label_set.get("includeSelectors"):
            raise ValueError("labels with includeSelectors are not understood")
        for doc in docs:
            labels = doc.setdefault("metadata", {}).setdefault("labels", {})
            labels.update(label_set["pairs"])
            if label_set.get("includeTemplates"):
                raise ValueError("labels with includeTemplates are not understood")
    images = {image["name"]: image for image in kustomization.get("images", [])}
    for doc in docs:
        for container in _containers(doc):
            name, _, tag = container["image"].partition(":")
            image = images.get(name)
            if image:
                container["image"] = (
                    f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
                )
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    return docs
