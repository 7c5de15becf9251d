"""A streaming watch: typed events from the API's newline-delimited JSON.

The server sends one JSON object per line: ``{"type": ..., "object": ...}``. ADDED,
MODIFIED and DELETED carry the object; BOOKMARK carries only a newer resourceVersion (the
point to resume from when nothing changed for a while); ERROR carries a ``Status``, which
is raised: 410 as :class:`~modelship_kube.errors.Gone` (the version is too old: list
again), anything else as its ApiError. :class:`Watch` remembers the last resourceVersion it
saw, so a watch that the server ended (``timeoutSeconds``) or that broke can be resumed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from modelship_kube.errors import ApiError, from_status
from modelship_kube.paths import WATCH_SECONDS, resource_version, watch_params
from modelship_kube.request import WATCH_SLACK_SECONDS, Client

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
EVENT_TYPES: Final[frozenset[str]] = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: dict[str, Any]

    @property
    def resource_version(self) -> str | None:
        return resource_version(self.object)


def parse_event(line: str | bytes, what: str = "watch") -> WatchEvent | None:
    """One line of a watch stream: its event, None for a blank line; an ERROR event is
    raised as its ApiError (Gone for 410), a line that is no event as an ApiError."""
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ApiError(what, 200, "BadWatchEvent", f"not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ApiError(what, 200, "BadWatchEvent", "not a JSON object")
    kind, obj = data.get("type"), data.get("object")
    if not isinstance(obj, dict):
        raise ApiError(what, 200, "BadWatchEvent", f"{kind} event without an object")
    if kind == "ERROR":
        raise from_status(what, obj, 500)
    if kind not in EVENT_TYPES:
        raise ApiError(what, 200, "BadWatchEvent", f"unknown event type {kind!r}")
    return WatchEvent(cast(EventType, kind), obj)


class Watch:
    """Events of one watch request, from ``resource_version`` until the server ends it.

    ``resource_version`` follows the events (bookmarks included): after the iteration
    ends or fails, it is where to resume.
    """

    def __init__(
        self,
        client: Client,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = WATCH_SECONDS,
        bookmarks: bool = True,
        what: str | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.params = dict(params or {})
        self.resource_version = resource_version
        self.timeout_seconds = timeout_seconds
        self.bookmarks = bookmarks
        self.what = what or f"watch {path}"
        #: Events received by this watch (bookmarks included).
        self.received = 0

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[WatchEvent]:
        query = watch_params(
            self.params, self.resource_version, self.timeout_seconds, self.bookmarks
        )
        async with self.client.stream(
            self.path,
            params=query,
            read_timeout=self.timeout_seconds + WATCH_SLACK_SECONDS,
            what=self.what,
        ) as response:
            async for line in response.aiter_lines():
                event = parse_event(line, self.what)
                if event is None:
                    continue
                self.received += 1
                self.resource_version = event.resource_version or self.resource_version
                yield event
