"""When a child's apply is skipped: only when rendered as last applied and untouched since."""

from __future__ import annotations

import copy
from typing import Any

from modelship_operator.applied import (
    Applied,
    fingerprint,
    object_key,
    rendered_digest,
    unchanged,
)

RENDERED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "churn-stable", "namespace": "ml", "labels": {"a": "1"}},
    "spec": {"replicas": 1},
}


def live(**meta: Any) -> dict[str, Any]:
    obj = copy.deepcopy(RENDERED)
    obj["metadata"].update(
        {"uid": "u1", "generation": 1, "resourceVersion": "10", "annotations": {}}, **meta
    )
    return obj


def record(answer: dict[str, Any]) -> Applied:
    return Applied(("ml", "churn"), rendered_digest(RENDERED), fingerprint(answer))


def test_the_same_rendering_of_an_untouched_child_is_not_applied_again() -> None:
    applied = record(live())
    assert unchanged(applied, rendered_digest(copy.deepcopy(RENDERED)), live())
    # Its controller writing status moves the resourceVersion, not the generation.
    assert unchanged(applied, rendered_digest(RENDERED), live(resourceVersion="11"))


def test_any_other_change_applies() -> None:
    applied = record(live())
    digest = rendered_digest(RENDERED)
    new_spec = rendered_digest({**RENDERED, "spec": {"replicas": 2}})
    assert not unchanged(applied, new_spec, live())  # rendered differently
    assert not unchanged(applied, digest, live(generation=2))  # spec edited by hand
    assert not unchanged(applied, digest, live(labels={"a": "2"}))  # relabelled
    assert not unchanged(applied, digest, live(annotations={"x": "y"}))  # annotated
    assert not unchanged(applied, digest, live(uid="u2"))  # deleted and recreated
    assert not unchanged(applied, digest, None)  # gone, or not seen yet
    assert not unchanged(None, digest, live())  # never applied by this process


def test_kinds_without_a_generation_compare_the_resource_version() -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ml"}}
    stored = {**config, "metadata": {**config["metadata"], "uid": "u", "resourceVersion": "5"}}
    applied = Applied(("ml", "churn"), rendered_digest(config), fingerprint(stored))
    assert unchanged(applied, rendered_digest(config), stored)
    edited = {**stored, "metadata": {**stored["metadata"], "resourceVersion": "6"}}
    assert not unchanged(applied, rendered_digest(config), edited)
    assert object_key(stored) == ("ml", "ConfigMap", "c")
