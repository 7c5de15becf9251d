"""Builders for the operator's unit tests: a valid resource to start each case from."""

from __future__ import annotations

import copy
from typing import Any

SHA_STABLE = "a" * 64
SHA_CANARY = "b" * 64


def base_resource(name: str = "churn", **spec: Any) -> dict[str, Any]:
    """A minimal valid ModelDeployment as a user would write it, with ``spec`` merged in."""
    body: dict[str, Any] = {
        "apiVersion": "modelship.io/v1alpha2",
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


#: spec.access naming a token Secret: what feedback (and checks from ground truth) need.
ACCESS: dict[str, Any] = {"tokenSecret": {"name": "churn-access"}}

STABLE_MODEL: dict[str, Any] = {
    "version": "1.4.0",
    "uri": "file:///models/churn-1.4.0.skops",
    "sha256": SHA_STABLE,
    "format": "auto",
}


def rolling_out(body: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """``body`` with spec.model set to ``candidate`` while 1.4.0 serves: the serving model is
    status.rolledOut.current (kept when the status already records one, e.g. after a
    promotion)."""
    body["spec"]["model"] = {**STABLE_MODEL, **candidate}
    rolled = body.setdefault("status", {}).setdefault("rolledOut", {})
    rolled.setdefault("current", dict(STABLE_MODEL))
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
