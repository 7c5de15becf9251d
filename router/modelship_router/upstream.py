"""Upstream HTTP/1.1 client: pooled keep-alive connections parsed with httptools.

Deliberately small and allocation-light: this is the router's hot path. A response is
buffered whole (model answers are small) so the proxy can write it to the client in one
call, with its own headers added and hop-by-hop headers removed.

A request is sent with a *handler* (an object with ``upstream_response(response)`` and
``upstream_failed(error)``), not a future, so the proxy's common case runs as plain
callbacks without creating a task or a future per request. ``request()`` wraps the same
thing in a future for coroutine callers (retries, shadow copies). Deadlines are checked
by a coarse periodic sweep (``Limits.expire``) instead of one timer per request.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from modelship_router.http1 import ResponseHead, response_head
from modelship_router.replica import REPLICA_HEADER, replica_token


class UpstreamError(Exception):
    """An upstream exchange failed."""


class ConnectFailed(UpstreamError):
    """No connection could be opened (refused, unreachable, connect timeout)."""


class NoResponse(UpstreamError):
    """The connection closed before any byte of the response arrived."""

    def __init__(self, message: str, reused: bool = False) -> None:
        super().__init__(message)
        #: Whether the connection came from the idle pool (it may simply have gone stale).
        self.reused = reused


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the timeout."""


class BadResponse(UpstreamError):
    """The upstream sent something that is not a usable HTTP response."""


class CutOff(UpstreamError):
    """The connection closed after part of the response had arrived (the upstream died
    mid-answer). Nothing of it reached the client: responses are buffered whole."""


class Response:
    """A complete upstream response: its relayable head (see ``http1``), status and body."""

    __slots__ = ("body", "head", "status")

    def __init__(self, status: int, head: ResponseHead, body: bytes) -> None:
        self.status = status
        self.head = head
        self.body = body


class ResponseHandler(Protocol):
    """Receives the outcome of one upstream request."""

    def upstream_response(self, response: Response) -> None: ...

    def upstream_failed(self, error: UpstreamError) -> None: ...


class _FutureHandler:
    """Adapts the handler interface to a future, for coroutine callers."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Response]) -> None:
        self.future = future

    def upstream_response(self, response: Response) -> None:
        if not self.future.done():
            self.future.set_result(response)

    def upstream_failed(self, error: UpstreamError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream; one request at a time."""

    __slots__ = (
        "_body",
        "_body_parts",
        "_body_size",
        "_head",
        "_head_only",
        "_informational",
        "_loop",
        "_max_body",
        "_raw",
        "_status",
        "_until_close",
        "closed",
        "deadline",
        "handler",
        "idle_since",
        "keep_alive",
        "parser",
        "received",
        "reused",
        "transport",
        "upstream",
    )

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._loop = upstream.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.handler: ResponseHandler | None = None
        self.deadline = 0.0
        self.closed = False
        self.reused = False
        self.received = False
        self.keep_alive = False
        self.idle_since = 0.0
        self._max_body = upstream.limits.max_response_bytes
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        #: Bytes received until the head is complete (the head is taken from here, so
        #: no Python callback runs per header line).
        self._raw = b""
        self._head: ResponseHead | None = None
        self._status = 0
        #: The body's first chunk, and the list of all chunks once a second one arrives.
        self._body = b""
        self._body_parts: list[bytes] | None = None
        self._body_size = 0
        self._head_only = head_only
        self._informational = False
        self._until_close = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.handler is None:
            # Unsolicited bytes on an idle connection (e.g. a 408): not reusable.
            self.close()
            return
        self.received = True
        if self._head is None:
            self._raw = self._raw + data if self._raw else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid response from {self.upstream.address}: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.handler is not None:
            if self._until_close:
                self._finish()
            elif self.received:
                self._fail(CutOff(f"{self.upstream.address} closed mid-response"))
            else:
                message = f"{self.upstream.address} closed the connection"
                self._fail(NoResponse(message, self.reused))
        self.upstream.forget(self)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_headers_complete(self) -> None:
        raw = self._raw
        end = raw.find(b"\r\n\r\n")
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # 1xx interim responses (e.g. 103) are dropped; the final response follows.
            self._informational = True
            self._raw = raw[end + 4 :]
            return
        self._head = response_head(raw[: end + 2])
        self._status = status
        self._raw = b""
        self.keep_alive = self.parser.should_keep_alive()
        if self._head_only:
            # httptools cannot be told a HEAD response has no body: finish here and do
            # not reuse the connection, whose parser now expects body bytes.
            self.keep_alive = False
            self._finish()
            self.close()
        elif not self.keep_alive and status not in (204, 304):
            self._until_close = True

    def on_body(self, body: bytes) -> None:
        size = self._body_size + len(body)
        self._body_size = size
        if size > self._max_body:
            self._fail(BadResponse(f"response from {self.upstream.address} is too large"))
            self.close()
            return
        if not self._body:
            self._body = body
        elif self._body_parts is None:
            self._body_parts = [self._body, body]
        else:
            self._body_parts.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._finish()

    # -- request/response ------------------------------------------------------------------

    def send(self, data: bytes, head_only: bool, deadline: float, handler: ResponseHandler) -> None:
        """Send one request (already serialised); ``handler`` gets the outcome, or a timeout
        once the loop's clock passes ``deadline``."""
        # The per-exchange state of _reset(), inline: this runs for every request.
        self._raw = b""
        self._head = None
        self._body = b""
        self._body_parts = None
        self._body_size = 0
        self._head_only = head_only
        self._informational = False
        self._until_close = False
        self.received = False
        self.handler = handler
        self.deadline = deadline
        self.upstream.limits.in_flight.add(self)
        self.transport.write(data)  # type: ignore[union-attr]  # set once connected

    def request(self, data: bytes, head_only: bool, timeout: float) -> asyncio.Future[Response]:
        """Like :meth:`send`, for coroutines: the future resolves to the response."""
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self.send(data, head_only, self._loop.time() + timeout, _FutureHandler(waiter))
        return waiter

    def _finish(self) -> None:
        handler = self.handler
        head = self._head
        if handler is None or head is None:
            return
        self.handler = None
        upstream = self.upstream
        upstream.limits.in_flight.discard(self)
        parts = self._body_parts
        body = self._body if parts is None else b"".join(parts)
        response = Response(self._status, head, body)
        if self.keep_alive and not self.closed:
            upstream.release(self)
        else:
            self.close()
        handler.upstream_response(response)

    def _fail(self, exc: UpstreamError) -> None:
        handler = self.handler
        if handler is None:
            return
        self.handler = None
        self.upstream.limits.in_flight.discard(self)
        handler.upstream_failed(exc)

    def expire(self) -> None:
        """The deadline passed: fail the request and drop the connection."""
        self._fail(UpstreamTimeout(f"{self.upstream.address} did not answer in time"))
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Limits:
    """Per-upstream limits, shared by every upstream of a router."""

    __slots__ = (
        "connect_timeout",
        "eject_seconds",
        "idle_timeout",
        "in_flight",
        "max_idle",
        "max_response_bytes",
    )

    def __init__(
        self,
        connect_timeout: float = 1.0,
        idle_timeout: float = 4.0,
        max_idle: int = 64,
        eject_seconds: float = 2.0,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.eject_seconds = eject_seconds
        self.max_response_bytes = max_response_bytes
        #: Connections waiting for a response, checked against their deadlines.
        self.in_flight: set[UpstreamConnection] = set()

    def expire(self, now: float) -> None:
        """Fail every request whose deadline has passed (call a few times per second)."""
        for conn in [c for c in self.in_flight if c.deadline <= now]:
            conn.expire()


class Upstream:
    """One upstream address with its pool of idle keep-alive connections.

    An upstream that refused a connection is ejected for ``eject_seconds``: routing skips
    it while another upstream is available (passive health checking).
    """

    __slots__ = (
        "address",
        "down_until",
        "host",
        "idle",
        "limits",
        "loop",
        "port",
        "replica_line",
        "retired",
        "token",
    )

    def __init__(
        self, host: str, port: int, limits: Limits, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        #: Names this upstream to clients (modelship_router.replica), added to responses.
        self.token = replica_token(self.address)
        self.replica_line = b"%s: %s\r\n" % (REPLICA_HEADER.encode(), self.token.encode())
        self.limits = limits
        self.loop = loop
        self.idle: list[UpstreamConnection] = []
        self.down_until = 0.0
        self.retired = False

    def __repr__(self) -> str:
        return f"Upstream({self.address})"

    def take_idle(self, now: float) -> UpstreamConnection | None:
        """The most recently used idle connection that is still usable, if any."""
        idle = self.idle
        deadline = now - self.limits.idle_timeout
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > deadline:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        """A connection: the most recently used idle one, else a new one."""
        conn = self.take_idle(self.loop.time()) if self.idle else None
        return conn if conn is not None else await self.open()

    async def open(self) -> UpstreamConnection:
        """A new connection (raises ConnectFailed)."""
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port),
                self.limits.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect to {self.address}: {exc}") from exc
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after a complete keep-alive exchange."""
        if self.retired or len(self.idle) >= self.limits.max_idle:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """Drop a closed connection from the idle pool."""
        if conn in self.idle:
            self.idle.remove(conn)

    def eject(self) -> None:
        """Skip this upstream for a while after a connection failure."""
        self.down_until = self.loop.time() + self.limits.eject_seconds

    def sweep(self, now: float) -> None:
        """Close idle connections older than the idle timeout."""
        deadline = now - self.limits.idle_timeout
        stale = [c for c in self.idle if c.idle_since <= deadline or c.closed]
        for conn in stale:
            self.forget(conn)
            conn.close()

    def retire(self) -> None:
        """This address left the configuration: close idle connections, reuse none."""
        self.retired = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()


UpstreamFactory = Callable[[str, int], Upstream]
