"""The operator's in-memory view of its children and their pods, fed by watches.

One list-and-watch (:class:`modelship_kube.informer.ListWatch`) per managed kind and one for
pods, each with the server-side label selector ``app.kubernetes.io/managed-by=modelship,
modelship.io/deployment`` (cluster-wide, or one per watched namespace). A reconcile reads
what exists from here instead of listing eight collections; a change of a child or a pod
calls ``on_change(namespace, deployment)`` so the owner is reconciled, unless the event is
of the operator's own write (``is_own``: the resourceVersion its apply got back).

Objects are kept without ``metadata.managedFields`` (the bulk of a Deployment, never read),
but for who owns a Deployment's replicas (:mod:`modelship_operator.handover`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from modelship_kube.informer import ListWatch
from modelship_kube.paths import collection_path
from modelship_kube.request import Client

from modelship_operator.handover import slim_managed_fields
from modelship_operator.kinds import CHILD_KINDS, LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger(__name__)

#: Every object the operator made, and their pods.
SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_DEPLOYMENT}"
#: (namespace, kind, name) of one cached object.
ObjectKey = tuple[str, str, str]
Owner = tuple[str, str]


def _key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(obj.get("kind", "")), str(meta.get("name", "")))


def _owner(obj: dict[str, Any]) -> Owner | None:
    meta = obj.get("metadata") or {}
    deployment = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
    if not deployment:
        return None
    return (str(meta.get("namespace", "")), str(deployment))


def _slim(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    obj["apiVersion"] = api_version
    obj["kind"] = kind
    slim_managed_fields(obj)
    return obj


class _Store:
    """One kind's objects, indexed by owner."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.by_owner: dict[Owner, set[ObjectKey]] = {}

    def put(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        self.drop(key)
        self.objects[key] = obj
        owner = _owner(obj)
        if owner is not None:
            self.by_owner.setdefault(owner, set()).add(key)

    def drop(self, key: ObjectKey) -> dict[str, Any] | None:
        old = self.objects.pop(key, None)
        if old is not None:
            owner = _owner(old)
            keys = self.by_owner.get(owner) if owner is not None else None
            if keys is not None:
                keys.discard(key)
                if not keys:
                    self.by_owner.pop(owner, None)  # type: ignore[arg-type]
        return old

    def replace(self, items: Iterable[dict[str, Any]]) -> set[Owner]:
        """A (re)list: the new contents; the owners whose objects changed."""
        before = {
            k: str((o.get("metadata") or {}).get("resourceVersion"))
            for k, o in self.objects.items()
        }
        owners_before = {k: _owner(o) for k, o in self.objects.items()}
        self.objects.clear()
        self.by_owner.clear()
        touched: set[Owner] = set()
        for obj in items:
            self.put(obj)
            key = _key(obj)
            if before.pop(key, None) != str(obj["metadata"].get("resourceVersion")):
                owner = _owner(obj)
                if owner is not None:
                    touched.add(owner)
        for key in before:  # gone while not watched
            owner = owners_before.get(key)
            if owner is not None:
                touched.add(owner)
        return touched

    def of(self, owner: Owner) -> list[dict[str, Any]]:
        return [self.objects[k] for k in sorted(self.by_owner.get(owner, ()))]


class ChildCache:
    """Watches every child kind and the pods; ``children``/``pods`` read from memory."""

    def __init__(
        self,
        client: Client,
        namespaces: Sequence[str] | None,
        on_change: Callable[[str, str], None],
        is_own: Callable[[ObjectKey, str], bool] = lambda _key, _version: False,
    ) -> None:
        self.client = client
        self.scopes: tuple[str | None, ...] = tuple(namespaces) if namespaces else (None,)
        self.on_change = on_change
        self.is_own = is_own
        self._kinds = [(k.api_version, k.kind, k.plural) for k in CHILD_KINDS]
        self._kinds.append(("v1", "Pod", "pods"))
        self._stores: dict[tuple[str, str | None], _Store] = {
            (kind, scope): _Store() for _v, kind, _p in self._kinds for scope in self.scopes
        }
        self._synced: dict[tuple[str, str | None], asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for api_version, kind, plural in self._kinds:
            for scope in self.scopes:
                event = asyncio.Event()
                self._synced[(kind, scope)] = event
                watch = ListWatch(
                    self.client,
                    collection_path(api_version, plural, scope),
                    {"labelSelector": SELECTOR},
                    what=f"{plural} in {scope or 'all namespaces'}",
                )
                self._tasks.append(
                    asyncio.create_task(
                        self._follow(watch, api_version, kind, self._stores[(kind, scope)], event),
                        name=f"watch {plural}",
                    )
                )

    async def wait_synced(self) -> None:
        """Until every watch has listed once."""
        await asyncio.gather(*(e.wait() for e in self._synced.values()))

    @property
    def synced(self) -> bool:
        return all(e.is_set() for e in self._synced.values())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _store(self, kind: str, namespace: str) -> _Store | None:
        scope = None if self.scopes == (None,) else namespace
        return self._stores.get((kind, scope))

    def _of(self, kind: str, namespace: str, deployment: str) -> list[dict[str, Any]]:
        store = self._store(kind, namespace)
        return store.of((namespace, deployment)) if store is not None else []

    def children(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        """Every cached child of the ModelDeployment ``namespace/deployment``."""
        return [
            obj
            for _v, kind, _p in self._kinds
            if kind != "Pod"
            for obj in self._of(kind, namespace, deployment)
        ]

    def pods(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        return self._of("Pod", namespace, deployment)

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        store = self._store(key[1], key[0])
        return store.objects.get(key) if store is not None else None

    async def _follow(
        self,
        watch: ListWatch,
        api_version: str,
        kind: str,
        store: _Store,
        synced: asyncio.Event,
    ) -> None:
        async for event_type, obj in watch:
            try:
                if event_type == "SYNC":
                    items = [_slim(o, api_version, kind) for o in obj.get("items") or []]
                    touched = store.replace(items)
                    first = not synced.is_set()
                    synced.set()
                    if not first:  # after a gap: whatever changed meanwhile
                        for changed in touched:
                            self.on_change(*changed)
                    continue
                obj = _slim(obj, api_version, kind)
                key = _key(obj)
                if event_type == "DELETED":
                    old = store.drop(key)
                    owner = _owner(old or obj)
                else:
                    store.put(obj)
                    owner = _owner(obj)
                    if self.is_own(key, str(obj["metadata"].get("resourceVersion", ""))):
                        continue  # the watch event of the operator's own apply
                if owner is not None:
                    self.on_change(*owner)
            except Exception:
                log.exception("handling a %s event of %s failed: listing again", event_type, kind)
                watch.resync()
