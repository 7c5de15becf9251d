"""Handing a Deployment's replicas to its autoscaler without a reset. Pure, no I/O.

Server-side apply removes a field its manager stops setting when no other manager owns it.
A Deployment the operator sized (``spec.replicas``), once autoscaled and applied without the
field, would fall back to one pod until the autoscaler's next sync. So before that first
apply the operator applies the live count alone under a second field manager (the hand-over
the Kubernetes documentation describes for HorizontalPodAutoscalers): the value stays, and
the autoscaler's own writes take the field from there.

The watch cache keeps, of a Deployment's ``managedFields``, only who owns ``spec.replicas``
(:func:`slim_managed_fields`), which is all this needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: Appended to the operator's field manager for the hand-over apply.
HANDOVER_SUFFIX: Final = "-handover"


def _owns_replicas(entry: Mapping[str, Any]) -> bool:
    spec = (entry.get("fieldsV1") or {}).get("f:spec")
    return isinstance(spec, Mapping) and "f:replicas" in spec


def slim_managed_fields(obj: dict[str, Any]) -> None:
    """Drop ``metadata.managedFields`` (the bulk of an object, never read), except, for a
    Deployment, which managers own ``spec.replicas``."""
    meta = obj.get("metadata") or {}
    entries = meta.pop("managedFields", None)
    if obj.get("kind") != "Deployment" or not entries:
        return
    owners: list[dict[str, Any]] = [
        {"manager": e.get("manager"), "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        for e in entries
        if isinstance(e, Mapping) and _owns_replicas(e)
    ]
    if owners:
        meta["managedFields"] = owners


def replica_owners(live: Mapping[str, Any]) -> set[str]:
    """The field managers that own a live Deployment's ``spec.replicas``."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    return {str(e.get("manager")) for e in entries if _owns_replicas(e)}


def handover(
    rendered: Mapping[str, Any], live: Mapping[str, Any] | None, manager: str
) -> dict[str, Any] | None:
    """The apply that keeps ``live``'s replicas when ``rendered`` (the operator's next
    apply, as ``manager``) no longer sets them; None when none is needed."""
    if rendered.get("kind") != "Deployment" or "replicas" in (rendered.get("spec") or {}):
        return None
    if live is None or manager not in replica_owners(live):
        return None
    replicas = (live.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int):
        return None
    meta = rendered["metadata"]
    return {
        "apiVersion": rendered["apiVersion"],
        "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }
