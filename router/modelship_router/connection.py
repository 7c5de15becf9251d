"""A client's HTTP/1.1 connection: parse requests with httptools as they stream in.

Keep-alive and pipelining are supported; answers go out in order. Each request is
buffered whole (model requests are small, and a retry or a shadow copy needs the body
again) and handed to the proxy's dispatch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from modelship_router.request import Reject, Request

if TYPE_CHECKING:
    from modelship_router.proxy import Proxy

log = logging.getLogger(__name__)

#: Request headers the proxy consumes or rewrites instead of forwarding verbatim.
_REQUEST_SPECIAL = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
        b"host",
        b"x-request-id",
        b"x-forwarded-for",
        b"x-modelship-mirror",
        # Only the router says a request is pinned (a match rule decided it).
        b"x-modelship-pinned",
        # Nor what a request's unit is (its sticky key's hash, see routing.py).
        b"x-modelship-unit",
    }
)
_PIPELINE_LIMIT = 16


class ClientConnection(asyncio.Protocol):
    """A client's connection: parses requests and writes responses in order."""

    __slots__ = (
        "_busy",
        "_head_size",
        "_max_body",
        "_max_body_digits",
        "_max_head",
        "_paused",
        "_pending",
        "_req",
        "closing",
        "header_names",
        "last_active",
        "parser",
        "peer",
        "proxy",
        "transport",
    )

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = b"unknown"
        self._req: Request | None = None
        self._pending: deque[Request] = deque()
        self._busy = False
        self._paused = False
        self._head_size = 0
        self._max_head = proxy.max_header_bytes
        self._max_body = proxy.max_body_bytes
        # A shorter Content-Length value cannot exceed the limit: no int() needed.
        self._max_body_digits = len(str(proxy.max_body_bytes))
        self.header_names: frozenset[bytes] = frozenset()
        self.closing = False
        self.last_active = proxy.loop.time()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0]).encode()
        self.proxy.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.proxy.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.proxy.clock
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request itself was queued with a 501 in on_headers_complete.
            if self.transport is not None:
                self.transport.pause_reading()
        except httptools.HttpParserCallbackError as exc:
            reject = exc.__context__
            if isinstance(reject, Reject):
                self._refuse(reject.status, reject.message)
            else:
                log.exception("request parser callback failed")
                self._refuse(500, "internal error while reading the request")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks ---------------------------------------------------------------

    # These callbacks run for every request: no asserts, attributes read once, and no
    # on_message_begin (httptools calls only the callbacks a protocol defines; the URL
    # always comes first, so its callback starts the request).

    def on_url(self, url: bytes) -> None:
        req = self._req
        if req is None:
            req = self._req = Request()
            snapshot = self.proxy.state.snapshot
            self.header_names = snapshot.header_names if snapshot is not None else frozenset()
            size = len(url)
        else:
            size = self._head_size + len(url)
        self._head_size = size
        if size > self._max_head:
            raise Reject(431, "request line and headers are too large")
        req.url = req.url + url if req.url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        req: Request = self._req  # type: ignore[assignment]  # set by on_url
        size = self._head_size + len(name) + len(value) + 4
        self._head_size = size
        if size > self._max_head:
            raise Reject(431, "request line and headers are too large")
        lname = name.lower()
        if lname in _REQUEST_SPECIAL:
            if lname == b"host":
                req.host = value
            elif lname == b"x-request-id":
                req.request_id = value
            elif lname == b"x-forwarded-for":
                req.xff = value
            elif lname == b"expect":
                if value.lower() != b"100-continue":
                    raise Reject(417, "only 'Expect: 100-continue' is supported")
                req.expect_continue = True
            elif (
                lname == b"content-length"
                and len(value) >= self._max_body_digits
                and value.isdigit()
                and int(value) > self._max_body
            ):
                raise Reject(413, "request body is too large")
            return
        req.lines += (name, b": ", value, b"\r\n")
        if lname in self.header_names:
            wanted = req.wanted
            if wanted is None:
                wanted = req.wanted = {}
            wanted[lname.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        req: Request = self._req  # type: ignore[assignment]  # set by on_url
        parser = self.parser
        req.method = parser.get_method()
        req.keep_alive = parser.should_keep_alive()
        req.head_only = req.method == b"HEAD"
        if parser.should_upgrade():
            req.error = (501, "protocol upgrades (e.g. WebSocket) are not supported")
            req.keep_alive = False
        if req.expect_continue and self.transport is not None and not self._busy:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        req: Request = self._req  # type: ignore[assignment]  # set by on_url
        size = req.body_size + len(body)
        req.body_size = size
        if size > self._max_body:
            raise Reject(413, "request body is too large")
        if not req.body:
            req.body = body
        elif req.body_parts is None:
            req.body_parts = [req.body, body]
        else:
            req.body_parts.append(body)

    def on_message_complete(self) -> None:
        req: Request = self._req  # type: ignore[assignment]  # set by on_url
        self._req = None
        if req.body_parts is not None:
            req.body = b"".join(req.body_parts)
            req.body_parts = None
        if self._busy:
            self._enqueue(req)
        else:
            self._busy = True
            self.proxy.dispatch(self, req)

    # -- processing ------------------------------------------------------------------------

    def _enqueue(self, req: Request) -> None:
        if self._busy:
            self._pending.append(req)
            if len(self._pending) >= _PIPELINE_LIMIT and self.transport is not None:
                self.transport.pause_reading()
                self._paused = True
        else:
            self._busy = True
            self.proxy.dispatch(self, req)

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that could not be parsed, then close (in order)."""
        req = self._req or Request()
        self._req = None
        req.error = (status, message)
        req.keep_alive = False
        if self.transport is not None:
            self.transport.pause_reading()
        self._enqueue(req)

    def finished(self, req: Request) -> None:
        """``req`` has been answered: close, or go on with the next pipelined request."""
        transport = self.transport
        if not req.keep_alive or self.proxy.stopping:
            if transport is not None:
                transport.close()
            self._busy = False
            return
        self.last_active = self.proxy.clock
        if not self._pending:
            self._busy = False
            return
        following = self._pending.popleft()
        if self._paused and transport is not None and len(self._pending) < _PIPELINE_LIMIT:
            transport.resume_reading()
            self._paused = False
        self.proxy.dispatch(self, following)

    @property
    def idle(self) -> bool:
        return not self._busy and self._req is None

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
