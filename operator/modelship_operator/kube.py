"""The operator's Kubernetes API seam: the few calls a reconcile and leader election make.

Everything here is I/O and nothing here decides: list a ModelDeployment's children and
pods, server-side apply and delete them, patch status with optimistic concurrency, post
Events, and read/write the leader Lease. Connection settings come from the ``kubernetes``
package's loaders (in-cluster service account, else ``$KUBECONFIG``/``~/.kube/config``);
the requests go through one httpx client on the operator's event loop.

Every failure is an :class:`ApiError` carrying the HTTP status, so callers can tell an API
refusal (a 4xx a user can fix: quota, admission, invalid object) from a transient failure
(transport errors, 409 conflicts, 429, 5xx) that is simply retried.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from modelship_operator.kinds import CHILD_KINDS, ChildRef, child_kind
from modelship_operator.spec import API_VERSION, KIND, PLURAL

#: Seconds for one API request (lists of a few objects, small patches).
REQUEST_TIMEOUT: Final = 15.0
LEASE_API: Final = "coordination.k8s.io/v1"


class ApiError(Exception):
    """An API request failed. ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, what: str, status: int = 0, reason: str = "", message: str = "") -> None:
        self.what = what
        self.status = status
        self.reason = reason
        self.message = message or reason
        super().__init__(f"{what}: {status or 'no answer'} {self.message}".strip())

    @property
    def transient(self) -> bool:
        """Worth retrying as is: no answer, a conflict, throttling or a server error."""
        return self.status in (0, 408, 409, 429) or self.status >= 500

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def collection_path(api_version: str, plural: str, namespace: str | None) -> str:
    """``/api/v1/namespaces/ns/pods`` or ``/apis/apps/v1/namespaces/ns/deployments``."""
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace is None:
        return f"{root}/{plural}"
    return f"{root}/namespaces/{namespace}/{plural}"


def object_path(api_version: str, plural: str, namespace: str | None, name: str) -> str:
    return f"{collection_path(api_version, plural, namespace)}/{name}"


def _error(what: str, response: httpx.Response) -> ApiError:
    """An ApiError from a failed response, with the API's own Status message if any."""
    reason, message = "", response.text[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and body.get("kind") == "Status":
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or message)
    return ApiError(what, response.status_code, reason, message)


def load_configuration(kubeconfig: str | Path | None = None) -> Any:
    """A ``kubernetes.client.Configuration``: from ``kubeconfig`` if given, else in-cluster,
    else ``$KUBECONFIG`` or ``~/.kube/config``."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=cfg
        )
        return cfg
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return cfg


def bearer(cfg: Any) -> str | None:
    """The Authorization header value of a configuration, if it uses a token.

    The in-cluster loader keeps ``bearer <token>`` under ``BearerToken``, kubeconfig loaders
    under ``authorization``; asking runs the refresh hook, so a rotated token is used.
    """
    value = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    return str(value) if value else None


class Kube:
    """One httpx client to the API server, with the operator's identity."""

    def __init__(
        self,
        server: str,
        verify: ssl.SSLContext | bool,
        authorization: Callable[[], str | None],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._authorization = authorization
        self._client = httpx.AsyncClient(
            base_url=self.server,
            verify=verify,
            timeout=httpx.Timeout(REQUEST_TIMEOUT),
            transport=transport,
        )

    @classmethod
    def connect(cls, kubeconfig: str | Path | None = None) -> Kube:
        """In-cluster (the pod's ServiceAccount) unless a kubeconfig is given or found."""
        return cls.from_configuration(load_configuration(kubeconfig))

    @classmethod
    def from_configuration(cls, cfg: Any) -> Kube:
        """From a ``kubernetes.client.Configuration``."""
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)

        return cls(cfg.host, context, lambda: bearer(cfg))

    async def close(self) -> None:
        await self._client.aclose()

    # --- plumbing --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        what: str | None = None,
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer, or ApiError."""
        what = what or f"{method} {path}"
        headers = {"accept": "application/json"}
        token = self._authorization()
        if token:
            headers["authorization"] = token
        content = None
        if body is not None:
            headers["content-type"] = content_type
            content = json.dumps(body).encode()
        try:
            response = await self._client.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ApiError(what, 0, type(exc).__name__, str(exc) or repr(exc)) from exc
        if response.status_code >= 300:
            raise _error(what, response)
        data: dict[str, Any] = response.json() if response.content else {}
        return data

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API serves ``plural`` in ``api_version`` (is the CRD installed?)."""
        try:
            found = await self.request(
                "GET", f"/apis/{api_version}", what=f"discovery of {api_version}"
            )
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources", []))

    # --- ModelDeployments ------------------------------------------------------------------

    def _md_path(self, namespace: str, name: str) -> str:
        return object_path(API_VERSION, PLURAL, namespace, name)

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The resource as stored now (None when it is gone)."""
        try:
            return await self.request("GET", self._md_path(namespace, name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch ``status`` only if the resource is still at ``resource_version``
        (409 otherwise): a status computed from an older spec is never written."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(patch)}
        return await self.request(
            "PATCH",
            self._md_path(namespace, name) + "/status",
            body=body,
            content_type="application/merge-patch+json",
            what=f"status of {KIND} {namespace}/{name}",
        )

    # --- children --------------------------------------------------------------------------

    async def list_objects(
        self, api_version: str, kind: str, plural: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        """Objects of one kind matching ``selector``, each with its kind and apiVersion set
        (the API leaves them out of list items)."""
        listing = await self.request(
            "GET",
            collection_path(api_version, plural, namespace),
            params={"labelSelector": selector},
            what=f"list {plural} in {namespace}",
        )
        items = listing.get("items") or []
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
        params = {"fieldManager": field_manager}
        if force:
            params["force"] = "true"
        return await self.request(
            "PATCH",
            path,
            params=params,
            body=obj,  # JSON is YAML: the apply content type takes it as is
            content_type="application/apply-patch+yaml",
            what=f"apply {obj['kind']} {meta.get('namespace')}/{meta['name']}",
        )

    async def delete(self, ref: ChildRef, namespace: str) -> None:
        """Delete a child (its dependents in the background); gone already is fine."""
        kind = child_kind(ref.api_version, ref.kind)
        try:
            await self.request(
                "DELETE",
                object_path(kind.api_version, kind.plural, namespace, ref.name),
                body={"propagationPolicy": "Background"},
                what=f"delete {ref.kind} {namespace}/{ref.name}",
            )
        except ApiError as exc:
            if not exc.not_found:
                raise

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
    ) -> None:
        """A core/v1 Event about ``involved`` (an object as read from the API)."""
        meta = involved["metadata"]
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
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
        await self.request(
            "POST",
            collection_path("v1", "events", meta["namespace"]),
            body=body,
            what=f"event {reason} on {meta['namespace']}/{meta['name']}",
        )

    # --- the leader Lease ------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request(
                "GET", object_path(LEASE_API, "leases", namespace, name), what=f"lease {name}"
            )
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        body = {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        await self.request(
            "POST",
            collection_path(LEASE_API, "leases", namespace),
            body=body,
            what=f"create lease {name}",
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
        await self.request(
            "PUT",
            object_path(LEASE_API, "leases", meta["namespace"], meta["name"]),
            body=body,
            what=f"update lease {meta['name']}",
        )
