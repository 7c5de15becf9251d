"""Upstream HTTP/1.1 client: pooled keep-alive connections parsed with httptools.

Deliberately small and allocation-light: this is the router's hot path. A response is
buffered whole (model answers are small) so the proxy can write it to the client in one
call, with its own headers added and hop-by-hop headers removed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

import httptools

#: Response headers that describe one connection, not the message: never relayed.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)


class UpstreamError(Exception):
    """An upstream exchange failed."""


class ConnectFailed(UpstreamError):
    """No connection could be opened (refused, unreachable, connect timeout)."""


class NoResponse(UpstreamError):
    """The connection closed before any byte of the response arrived."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the timeout."""


class BadResponse(UpstreamError):
    """The upstream sent something that is not a usable HTTP response."""


class Response:
    """A complete upstream response, with relayable header lines pre-rendered."""

    __slots__ = (
        "body",
        "content_length",
        "header_lines",
        "model_version",
        "reason",
        "request_id",
        "status",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        header_lines: list[bytes],
        body: bytes,
        model_version: bytes | None,
        request_id: bytes | None,
        content_length: bytes | None = None,
    ) -> None:
        self.status = status
        self.content_length = content_length
        self.reason = reason
        self.header_lines = header_lines
        self.body = body
        self.model_version = model_version
        self.request_id = request_id


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream; one request at a time."""

    __slots__ = (
        "_body",
        "_body_size",
        "_content_length",
        "_head_only",
        "_informational",
        "_lines",
        "_loop",
        "_reason",
        "_request_id",
        "_timer",
        "_until_close",
        "_version",
        "_waiter",
        "closed",
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
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.reused = False
        self.received = False
        self.keep_alive = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._lines: list[bytes] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._reason = b""
        self._version: bytes | None = None
        self._request_id: bytes | None = None
        self._content_length: bytes | None = None
        self._head_only = False
        self._informational = False
        self._until_close = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Unsolicited bytes on an idle connection (e.g. a 408): not reusable.
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid response from {self.upstream.address}: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._until_close:
                self._finish()
            elif self.received:
                self._fail(BadResponse(f"{self.upstream.address} closed mid-response"))
            else:
                self._fail(NoResponse(f"{self.upstream.address} closed the connection"))
        self.upstream.forget(self)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"content-length":
                self._content_length = value
            return
        if lname == b"x-model-version":
            self._version = value
        elif lname == b"x-request-id":
            self._request_id = value
        self._lines.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # 1xx interim responses (e.g. 103) are dropped; the final response follows.
            self._informational = True
            return
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
        self._body_size += len(body)
        if self._body_size > self.upstream.limits.max_response_bytes:
            self._fail(BadResponse(f"response from {self.upstream.address} is too large"))
            self.close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._reset()
            return
        self._finish()

    # -- request/response ------------------------------------------------------------------

    def request(self, data: bytes, head_only: bool, timeout: float) -> asyncio.Future[Response]:
        """Send one request (already serialised); the future resolves to its response."""
        self._reset()
        self._head_only = head_only
        self.received = False
        waiter = self._loop.create_future()
        self._waiter = waiter
        self._timer = self._loop.call_later(timeout, self._on_timeout)
        assert self.transport is not None
        self.transport.write(data)
        return waiter

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = Response(
            self.parser.get_status_code(),
            self._reason,
            self._lines,
            body,
            self._version,
            self._request_id,
            self._content_length,
        )
        if self.keep_alive and not self.closed:
            self.upstream.release(self)
        else:
            self.close()
        waiter.set_result(response)

    def _fail(self, exc: UpstreamError) -> None:
        waiter = self._waiter
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _on_timeout(self) -> None:
        self._timer = None
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


class Upstream:
    """One upstream address with its pool of idle keep-alive connections.

    An upstream that refused a connection is ejected for ``eject_seconds``: routing skips
    it while another upstream is available (passive health checking).
    """

    __slots__ = ("address", "down_until", "host", "idle", "limits", "loop", "port", "retired")

    def __init__(
        self, host: str, port: int, limits: Limits, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.limits = limits
        self.loop = loop
        self.idle: list[UpstreamConnection] = []
        self.down_until = 0.0
        self.retired = False

    def __repr__(self) -> str:
        return f"Upstream({self.address})"

    async def connect(self) -> UpstreamConnection:
        """A connection: the most recently used idle one, else a new one."""
        idle = self.idle
        if idle:
            deadline = self.loop.time() - self.limits.idle_timeout
            while idle:
                conn = idle.pop()
                if not conn.closed and conn.idle_since > deadline:
                    conn.reused = True
                    return conn
                conn.close()
        return await self.open()

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
