"""List-and-watch: keep a view of a collection current, forever.

List the collection, hand the full list over (a ``SYNC`` event), then watch from the
list's resourceVersion and hand over each ADDED, MODIFIED and DELETED event. When the
server ends a watch (``timeoutSeconds``) it is resumed from the last resourceVersion seen
(BOOKMARK events keep that recent); when the version is too old (410 Gone, at the start
or mid-stream) the collection is listed again and a new ``SYNC`` replaces everything the
consumer knew. Any other failure (no answer, 5xx, 403 while RBAC catches up) is logged
once and retried after a jittered exponential back-off with a cap, reset by the next
success (a list, or a watch that delivered an event).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, Literal

from modelship_kube.backoff import Backoff
from modelship_kube.errors import ApiError, Gone
from modelship_kube.paths import WATCH_SECONDS, resource_version, typed_items
from modelship_kube.request import Client
from modelship_kube.watch import Watch

log = logging.getLogger(__name__)

#: The synthetic event of a (re)list: its object is the whole list.
SYNC: Final = "SYNC"
InformerEventType = Literal["SYNC", "ADDED", "MODIFIED", "DELETED"]
#: Items per page of a list.
PAGE_SIZE: Final = 500
#: A watch that ends before this many seconds without an event counts as a failure (a
#: server or proxy that closes every watch at once must not make a busy loop).
MIN_WATCH_SECONDS: Final = 1.0


async def list_all(
    client: Client,
    path: str,
    params: Mapping[str, str] | None = None,
    *,
    page_size: int = PAGE_SIZE,
    what: str | None = None,
) -> dict[str, Any]:
    """The whole collection as one list (pages followed), items with kind and apiVersion;
    its ``metadata.resourceVersion`` is the first page's (the snapshot's)."""
    query = {**(params or {}), "limit": str(page_size)}
    first: dict[str, Any] | None = None
    items: list[dict[str, Any]] = []
    while True:
        page = await client.get(path, query, what=what or f"list {path}")
        items.extend(typed_items(page))
        if first is None:
            first = page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            break
        query = {**query, "continue": str(token)}
    first["items"] = items
    first.get("metadata", {}).pop("continue", None)
    return first


class ListWatch:
    """``async for type, obj in ListWatch(...)``: ``(SYNC, list)`` after every (re)list,
    then ``(ADDED|MODIFIED|DELETED, object)``; never ends (cancel the task to stop)."""

    def __init__(
        self,
        client: Client,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        what: str | None = None,
        backoff: Backoff | None = None,
        timeout_seconds: int = WATCH_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.path = path
        self.params = dict(params or {})
        self.what = what or path
        self.backoff = backoff or Backoff()
        self.timeout_seconds = timeout_seconds
        self._sleep = sleep
        self._clock = clock
        #: Lists made so far (the first and every re-list).
        self.lists = 0
        self._failing = False
        self._resync = False

    def resync(self) -> None:
        """List again before the next event (for a consumer that lost track, e.g. its
        handler failed); after the usual back-off, so a handler that always fails cannot
        make a busy loop."""
        self._resync = True

    def _check_resync(self) -> None:
        if self._resync:
            self._resync = False
            raise _Resync(f"{self.what}: a new list was asked for")

    def __aiter__(self) -> AsyncIterator[tuple[InformerEventType, dict[str, Any]]]:
        return self._events()

    def _succeeded(self) -> None:
        self.backoff.reset()
        if self._failing:
            log.info("watching %s again", self.what)
            self._failing = False

    async def _failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("watch of %s failed (retrying): %s", self.what, exc)
            self._failing = True
        else:
            log.debug("watch of %s failed again: %s", self.what, exc)
        await self._sleep(self.backoff.next())

    async def _events(self) -> AsyncIterator[tuple[InformerEventType, dict[str, Any]]]:
        version: str | None = None  # None: list first
        while True:
            watch: Watch | None = None
            fresh = False  # listed just now
            try:
                if version is None:
                    listing = await list_all(
                        self.client, self.path, self.params, what=f"list {self.what}"
                    )
                    version = resource_version(listing)
                    if version is None:
                        raise ApiError(f"list {self.what}", 200, "BadList", "no resourceVersion")
                    self.lists += 1
                    fresh = True
                    self._succeeded()
                    yield SYNC, listing
                    self._check_resync()
                watch = Watch(
                    self.client,
                    self.path,
                    self.params,
                    resource_version=version,
                    timeout_seconds=self.timeout_seconds,
                    what=f"watch {self.what}",
                )
                started = self._clock()
                async for event in watch:
                    version = watch.resource_version
                    if watch.received == 1:
                        self._succeeded()
                    if event.type != "BOOKMARK":
                        yield event.type, event.object
                        self._check_resync()
                version = watch.resource_version
                if watch.received == 0 and self._clock() - started < MIN_WATCH_SECONDS:
                    raise ApiError(f"watch {self.what}", 200, "WatchEnded", "ended at once")
            except asyncio.CancelledError:
                raise
            except _Resync as exc:
                version = None
                await self._failed(exc)
            except Gone as exc:
                log.debug("watch of %s expired (%s): listing again", self.what, exc)
                version = None
                if watch is None or (fresh and watch.received == 0):
                    # The list itself, or a watch from the version just listed: listing
                    # again at once could spin, so back off like after any failure.
                    await self._failed(exc)
            except Exception as exc:
                if watch is not None:
                    version = watch.resource_version
                await self._failed(exc)

    async def run(
        self,
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        """The same as callbacks: ``on_list(items)`` after every (re)list, ``on_event(type,
        object)`` for each change. A callback that raises is logged and the collection is
        listed again (after the back-off): the view is rebuilt rather than left stale."""
        async for kind, obj in self:
            try:
                if kind == SYNC:
                    on_list(obj.get("items") or [])
                else:
                    on_event(kind, obj)
            except Exception:
                log.exception("handling %s of %s failed: listing again", kind, self.what)
                self.resync()


class _Resync(Exception):
    """A consumer asked for a new list."""
