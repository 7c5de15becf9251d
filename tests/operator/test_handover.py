"""Handing replicas to an autoscaler: who owns spec.replicas, and the apply that keeps it."""

from __future__ import annotations

from typing import Any

from modelship_operator.handover import handover, replica_owners, slim_managed_fields


def live(*owners: str, replicas: int = 3) -> dict[str, Any]:
    fields = [
        {"manager": "kube-controller-manager", "fieldsV1": {"f:status": {"f:replicas": {}}}},
        *({"manager": o, "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}}
          for o in owners),
    ]  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "churn-stable", "namespace": "ml", "managedFields": fields},
        "spec": {"replicas": replicas},
    }


RENDERED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "churn-stable", "namespace": "ml"},
    "spec": {"template": {}},
}


def test_the_cache_keeps_only_who_owns_the_replicas() -> None:
    obj = live("modelship-operator")
    slim_managed_fields(obj)
    assert obj["metadata"]["managedFields"] == [
        {"manager": "modelship-operator", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    ]
    assert replica_owners(obj) == {"modelship-operator"}
    service = {"kind": "Service", "metadata": {"managedFields": [{"manager": "x"}]}}
    slim_managed_fields(service)
    assert "managedFields" not in service["metadata"]


def test_the_first_apply_without_replicas_keeps_the_live_count() -> None:
    keep = handover(RENDERED, live("modelship-operator", replicas=3), "modelship-operator")
    assert keep == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "churn-stable", "namespace": "ml"},
        "spec": {"replicas": 3},
    }


def test_no_handover_once_the_autoscaler_owns_the_field_or_replicas_are_rendered() -> None:
    assert handover(RENDERED, live("horizontal-pod-autoscaler"), "modelship-operator") is None
    assert handover(RENDERED, None, "modelship-operator") is None
    sized = {**RENDERED, "spec": {"replicas": 2}}
    assert handover(sized, live("modelship-operator"), "modelship-operator") is None
