"""Request paths and query parameters: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: Seconds a watch asks the server to keep it open (the server ends it then; it is resumed
#: from the last resourceVersion seen).
WATCH_SECONDS: Final = 240


def api_root(api_version: str) -> str:
    """``/api/v1`` for the core group, ``/apis/<group>/<version>`` for the others."""
    return f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"


def collection_path(api_version: str, plural: str, namespace: str | None) -> str:
    """``/api/v1/namespaces/ns/pods`` or ``/apis/apps/v1/namespaces/ns/deployments``
    (no namespace: the cluster-wide collection)."""
    root = api_root(api_version)
    if namespace is None:
        return f"{root}/{plural}"
    return f"{root}/namespaces/{namespace}/{plural}"


def object_path(
    api_version: str, plural: str, namespace: str | None, name: str, subresource: str = ""
) -> str:
    """One object's path, or its ``status``/``scale``... subresource's."""
    path = f"{collection_path(api_version, plural, namespace)}/{name}"
    return f"{path}/{subresource}" if subresource else path


def watch_params(
    params: Mapping[str, str],
    resource_version: str | None,
    timeout_seconds: int = WATCH_SECONDS,
    bookmarks: bool = True,
) -> dict[str, str]:
    """The query of a watch from ``resource_version`` (None: from now, with the current
    state sent first as ADDED events)."""
    query = {**params, "watch": "true", "timeoutSeconds": str(timeout_seconds)}
    if bookmarks:
        query["allowWatchBookmarks"] = "true"
    if resource_version:
        query["resourceVersion"] = resource_version
    return query


def apply_params(field_manager: str, force: bool) -> dict[str, str]:
    """The query of a server-side apply."""
    params = {"fieldManager": field_manager}
    if force:
        params["force"] = "true"
    return params


def item_kind(list_kind: str) -> str:
    """``ConfigMapList`` -> ``ConfigMap``: the kind of a list's items."""
    return list_kind.removesuffix("List")


def typed_items(listing: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A list's items, each with the ``apiVersion`` and ``kind`` the API leaves out of list
    items (a server-side apply of an object read from a list needs them)."""
    api_version = listing.get("apiVersion")
    kind = item_kind(str(listing.get("kind") or ""))
    items: list[dict[str, Any]] = list(listing.get("items") or [])
    for item in items:
        if api_version and "apiVersion" not in item:
            item["apiVersion"] = api_version
        if kind and "kind" not in item:
            item["kind"] = kind
    return items


def resource_version(obj: Mapping[str, Any]) -> str | None:
    """``metadata.resourceVersion`` of an object or a list, if any."""
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        version = meta.get("resourceVersion")
        return str(version) if version else None
    return None
