"""Builders for the operator's unit tests: a valid resource to start each case from."""

from __future__ import annotations

import copy
from typing import Any

SHA_STABLE = "a" * 64
SHA_CANARY = "b" * 64


def base_resource(name: str = "churn", **spec: Any) -> dict[str, Any]:
    """A minimal valid ModelDeployment as a user would write it, with ``spec`` merged in."""
    body: dict[str, Any] = {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {
            "model": {
                "version": "1.4.0",
                "uri": "file:///models/churn-1.4.0.skops",
                "sha256": SHA_STABLE,
            }
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def set_path(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``obj`` with the dotted ``path`` set (created as needed)."""
    result = copy.deepcopy(obj)
    node = result
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return result
