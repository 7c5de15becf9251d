"""The operator's Kubernetes API calls: what a reconcile and leader election ask for.

Everything here is I/O and nothing here decides: list a ModelDeployment's children and
pods, server-side apply and delete them, patch status with optimistic concurrency, post
Events, and read/write the leader Lease. The connection (credentials, token rotation,
timeouts, errors) is :mod:`modelship_kube`'s, shared with the router.

Every failure is a :class:`modelship_kube.errors.ApiError` carrying the HTTP status, so
callers can tell an API refusal (a 4xx a user can fix: quota, admission, invalid object)
from a transient failure (transport errors, 409 conflicts, 429, 5xx) that is simply
retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
from modelship_kube.credentials import Credentials, load
from modelship_kube.errors import ApiError
from modelship_kube.informer import list_all
from modelship_kube.paths import collection_path, object_path
from modelship_kube.request import Client, PatchType

from modelship_operator.kinds import CHILD_KINDS, ChildRef, child_kind
from modelship_operator.spec import API_VERSION, KIND, PLURAL

LEASE_API: Final = "coordination.k8s.io/v1"


class Kube:
    """The operator's calls over one :class:`modelship_kube.request.Client`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def connect(cls, kubeconfig: str | Path | None = None, connections: int = 100) -> Kube:
        """In-cluster (the pod's ServiceAccount) unless a kubeconfig is given or found;
        at most ``connections`` open at once."""
        return cls.from_credentials(load(kubeconfig), connections)

    @classmethod
    def from_credentials(cls, credentials: Credentials, connections: int = 100) -> Kube:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return cls(Client(credentials, limits=limits))

    async def close(self) -> None:
        await self.client.close()

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API serves ``plural`` in ``api_version`` (is the CRD installed?)."""
        try:
            found = await self.client.get(
                f"/apis/{api_version}", what=f"discovery of {api_version}"
            )
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources", []))

    # --- ModelDeployments ------------------------------------------------------------------

    def _md_path(self, namespace: str, name: str, subresource: str = "") -> str:
        return object_path(API_VERSION, PLURAL, namespace, name, subresource)

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The resource as stored now (None when it is gone)."""
        return await self.client.get_or_none(
            self._md_path(namespace, name), what=f"get {KIND} {namespace}/{name}"
        )

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch ``status`` only if the resource is still at ``resource_version``
        (409 otherwise): a status computed from an older spec is never written."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(patch)}
        return await self.client.patch(
            self._md_path(namespace, name, "status"),
            body,
            PatchType.MERGE,
            what=f"status of {KIND} {namespace}/{name}",
        )

    # --- children --------------------------------------------------------------------------

    async def list_objects(
        self, api_version: str, kind: str, plural: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        """Objects of one kind matching ``selector``, each with its kind and apiVersion set
        (the API leaves them out of list items)."""
        listing = await list_all(
            self.client,
            collection_path(api_version, plural, namespace),
            {"labelSelector": selector},
            what=f"list {plural} in {namespace}",
        )
        items: list[dict[str, Any]] = listing["items"]
        for item in items:
            item["apiVersion"] = api_version
            item["kind"] = kind
        return items

    async def list_children(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Every object of every managed kind matching ``selector`` (listed concurrently)."""
        listings = await asyncio.gather(
            *(
                self.list_objects(kind.api_version, kind.kind, kind.plural, namespace, selector)
                for kind in CHILD_KINDS
            )
        )
        return [obj for listing in listings for obj in listing]

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await self.list_objects("v1", "Pod", "pods", namespace, selector)

    async def apply(
        self, obj: Mapping[str, Any], field_manager: str, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply one rendered object (it names its own namespace)."""
        meta = obj["metadata"]
        kind = child_kind(obj["apiVersion"], obj["kind"])
        path = object_path(kind.api_version, kind.plural, meta.get("namespace"), meta["name"])
        return await self.client.apply(
            path,
            obj,
            field_manager,
            force=force,
            what=f"apply {obj['kind']} {meta.get('namespace')}/{meta['name']}",
        )

    async def scale(self, namespace: str, name: str, replicas: int, to: int) -> bool:
        """Deployment ``name``'s replicas from ``replicas`` to ``to`` through its scale
        subresource; False (nothing written) when it no longer ran ``replicas``."""
        path = object_path("apps/v1", "deployments", namespace, name, "scale")
        return await self.client.scale(
            path, replicas, to, what=f"scale Deployment {namespace}/{name}"
        )

    async def delete(self, ref: ChildRef, namespace: str) -> None:
        """Delete a child (its dependents in the background); gone already is fine."""
        kind = child_kind(ref.api_version, ref.kind)
        await self.client.delete(
            object_path(kind.api_version, kind.plural, namespace, ref.name),
            propagation="Background",
            what=f"delete {ref.kind} {namespace}/{ref.name}",
        )

    # --- Events ----------------------------------------------------------------------------

    async def post_event(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        component: str,
        instance: str,
        now: datetime | None = None,
        name: str | None = None,
    ) -> None:
        """A core/v1 Event about ``involved`` (an object as read from the API). With a
        ``name``, posting the same Event again is refused (409 AlreadyExists)."""
        meta = involved["metadata"]
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        naming = {"name": name} if name else {"generateName": f"{meta['name']}."}
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {**naming, "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", API_VERSION),
                "kind": involved.get("kind", KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "type": event_type,
            "reason": reason[:128],
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": instance[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self.client.create(
            collection_path("v1", "events", meta["namespace"]),
            body,
            what=f"event {reason} on {meta['namespace']}/{meta['name']}",
        )

    # --- the leader Lease ------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.client.get_or_none(
            object_path(LEASE_API, "leases", namespace, name), what=f"lease {name}"
        )

    async def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        body = {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        await self.client.create(
            collection_path(LEASE_API, "leases", namespace), body, what=f"create lease {name}"
        )

    async def update_lease(self, lease: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
        """Replace the Lease's spec; 409 if someone else wrote it since it was read."""
        meta = lease["metadata"]
        body = {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": dict(spec),
        }
        await self.client.replace(
            object_path(LEASE_API, "leases", meta["namespace"], meta["name"]),
            body,
            what=f"update lease {meta['name']}",
        )
