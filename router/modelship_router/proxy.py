"""The HTTP/1.1 reverse proxy: parse with httptools, route, relay over pooled connections.

One :class:`ClientConnection` per client socket parses requests as they stream in (keep-
alive and pipelining supported; answers go out in order). Each request is buffered whole
(model requests are small, and a retry or a shadow copy needs the body again), routed by
the pure functions of :mod:`modelship_router.routing` against the current snapshot, and
relayed to an upstream over a pooled keep-alive connection. Paths are forwarded unchanged,
so ``/v1/models/<m>:predict`` and ``/v2/models/<m>/infer`` both work.

The router answers three paths itself (GET/HEAD only; other methods are proxied):
``/healthz``, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import httptools

from modelship_router.agreement import compare, is_prediction
from modelship_router.config import BUCKETS
from modelship_router.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    MIRROR_DROPPED,
    MIRROR_ERROR,
    MIRROR_HTTP_4XX,
    MIRROR_HTTP_5XX,
    MIRROR_OK,
    MIRROR_TIMEOUT,
    NO_VARIANT,
    RouterMetrics,
)
from modelship_router.routing import decide, mirror_target
from modelship_router.settings import RouterSettings
from modelship_router.state import RouterState, Snapshot, VariantRuntime
from modelship_router.upstream import (
    ConnectFailed,
    NoResponse,
    Response,
    Upstream,
    UpstreamError,
    UpstreamTimeout,
)

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
    }
)
_NO_BODY_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})
_LOCAL_PATHS = frozenset({b"/healthz", b"/readyz", b"/metrics"})
_NO_HEADERS: dict[str, str] = {}
_PIPELINE_LIMIT = 16
#: An upstream request: method, path, host, forwarded lines, request id, X-Forwarded-For,
#: the mirror mark, then Content-Length and the body (``_REQUEST``, for a GET without a
#: body: neither, and two empty arguments in their place).
_REQUEST_WITH_BODY = (
    b"%s %s HTTP/1.1\r\nhost: %s\r\n%sx-request-id: %s\r\nx-forwarded-for: %s\r\n%s"
    b"content-length: %d\r\n\r\n%s"
)
_REQUEST = b"%s %s HTTP/1.1\r\nhost: %s\r\n%sx-request-id: %s\r\nx-forwarded-for: %s\r\n%s\r\n%s%s"
_REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    417: b"Expectation Failed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class _Reject(Exception):
    """Raised from parser callbacks to answer with a 4xx and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One buffered client request, and the state of its exchange with an upstream.

    It is also the upstream response handler of its own exchange (``upstream_response``,
    ``upstream_failed``), so the common case needs no task, future or closure.
    """

    __slots__ = (
        "body",
        "body_parts",
        "body_size",
        "chosen",
        "conn",
        "data",
        "error",
        "expect_continue",
        "head_only",
        "host",
        "keep_alive",
        "lines",
        "method",
        "request_id",
        "snapshot",
        "started",
        "upstream",
        "url",
        "variant",
        "wanted",
        "xff",
    )

    def __init__(self) -> None:
        self.method = b"GET"
        self.url = b""
        #: Forwarded header lines as name, b": ", value, b"\r\n" pieces (joined once).
        self.lines: list[bytes] = []
        #: Header values routing decisions read (lowercase names), if any were sent.
        self.wanted: dict[str, str] | None = None
        self.body = b""
        #: Body chunks after the first (most bodies arrive in one piece).
        self.body_parts: list[bytes] | None = None
        self.body_size = 0
        self.request_id: bytes | None = None
        self.host: bytes | None = None
        self.xff: bytes | None = None
        self.keep_alive = True
        self.head_only = False
        self.expect_continue = False
        #: (status, message) when the request was refused while parsing.
        self.error: tuple[int, str] | None = None
        # Set when the request is routed.
        self.conn: ClientConnection | None = None
        self.snapshot: Snapshot | None = None
        self.chosen: VariantRuntime | None = None
        self.variant: VariantRuntime | None = None
        self.upstream: Upstream | None = None
        self.data = b""
        self.started = 0.0

    def upstream_response(self, response: Response) -> None:
        conn = self.conn
        assert conn is not None
        try:
            conn.proxy.complete(self, response)
        except Exception:
            conn.proxy.crashed(self)

    def upstream_failed(self, error: UpstreamError) -> None:
        conn = self.conn
        assert conn is not None
        try:
            conn.proxy.recover(self, error)
        except Exception:
            conn.proxy.crashed(self)

    def serialise(self, peer: bytes, default_host: str, mirror: bool = False) -> bytes:
        """The request as sent upstream: same method and path, cleaned headers, body."""
        body = self.body
        with_body = body or self.method not in _NO_BODY_METHODS
        return (_REQUEST_WITH_BODY if with_body else _REQUEST) % (
            self.method,
            self.url,
            self.host if self.host is not None else default_host.encode(),
            b"".join(self.lines),
            self.request_id or b"",
            self.xff + b", " + peer if self.xff else peer,
            b"x-modelship-mirror: 1\r\n" if mirror else b"",
            len(body) if with_body else b"",
            body,
        )


def _json_body(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


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
            if isinstance(reject, _Reject):
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
            raise _Reject(431, "request line and headers are too large")
        req.url = req.url + url if req.url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        req: Request = self._req  # type: ignore[assignment]  # set by on_url
        size = self._head_size + len(name) + len(value) + 4
        self._head_size = size
        if size > self._max_head:
            raise _Reject(431, "request line and headers are too large")
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
                    raise _Reject(417, "only 'Expect: 100-continue' is supported")
                req.expect_continue = True
            elif (
                lname == b"content-length"
                and len(value) >= self._max_body_digits
                and value.isdigit()
                and int(value) > self._max_body
            ):
                raise _Reject(413, "request body is too large")
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
            raise _Reject(413, "request body is too large")
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


class Proxy:
    """Routes and relays requests; owns metrics and shadow copies. No listening socket."""

    def __init__(
        self,
        settings: RouterSettings,
        state: RouterState,
        metrics: RouterMetrics,
        loop: asyncio.AbstractEventLoop,
        draw: Callable[[int], int] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.loop = loop
        #: Uniform draws in ``range(n)`` (tests may inject a deterministic one); by default
        #: the hot path draws inline from ``random.random`` instead of calling this.
        self.draw: Callable[[int], int] = draw if draw is not None else random.randrange
        self._random = random.random if draw is None else None
        self.timeout = settings.upstream_timeout
        self.max_body_bytes = settings.max_body_bytes
        self.max_header_bytes = settings.max_header_bytes
        self.connections: set[ClientConnection] = set()
        self.stopping = False
        #: A coarse clock (``loop.time()`` as of the last tick, see :meth:`tick`) for the
        #: idle bookkeeping of client connections, which needs no per-request clock read.
        self.clock = loop.time()
        self._mirrors: set[asyncio.Task[None]] = set()
        #: Request ids: a random per-process prefix (the top 64 bits) and a counter, as 32
        #: hex digits; cheaper than uuid4 per request, and as unique across routers.
        self._id_base = int.from_bytes(os.urandom(8), "big") << 64
        self._ids = itertools.count(1)
        #: Metric label for answers given before any configuration names the deployment.
        self.deployment = settings.deployment or ""

    def protocol(self) -> ClientConnection:
        return ClientConnection(self)

    # -- the hot path ----------------------------------------------------------------------

    def dispatch(self, conn: ClientConnection, req: Request) -> None:
        """Route ``req`` and send it upstream; ``conn.finished(req)`` follows its answer."""
        req.conn = conn
        try:
            snapshot = self.state.snapshot
            if (
                req.error is not None
                or snapshot is None
                or (req.method in (b"GET", b"HEAD") and req.url.partition(b"?")[0] in _LOCAL_PATHS)
            ):
                self._answer(conn, req)
                return
            if req.request_id is None:
                req.request_id = b"%032x" % (self._id_base + next(self._ids))
            now = self.loop.time()
            rand = self._random
            draw = int(rand() * BUCKETS) if rand is not None else self.draw(BUCKETS)
            by_bucket = snapshot.by_bucket
            if by_bucket is not None:
                chosen = variant = by_bucket[draw]
            else:
                decision = decide(snapshot.table, req.wanted or _NO_HEADERS, draw)
                chosen = variant = snapshot.variants[decision.variant]
            ups = variant.upstreams
            if len(ups) == 1 and ups[0].down_until <= now:
                upstream: Upstream | None = ups[0]  # one upstream: no round robin to advance
            else:
                upstream = variant.pick(now)
            if upstream is None:
                variant, upstream = self._fall_back(snapshot, variant, now)
                if upstream is None:
                    message = f"no ready upstream for variant {variant.name}"
                    self.write_error(conn, req, 503, message, variant)
                    self.metrics.count_request(snapshot.deployment, variant.name, 503)
                    conn.finished(req)
                    return
            req.snapshot = snapshot
            req.chosen = chosen
            req.variant = variant
            req.upstream = upstream
            req.started = now
            req.data = req.serialise(conn.peer, upstream.address)
            pooled = upstream.take_idle(now) if upstream.idle else None
            if pooled is not None:
                # The common case: plain callbacks, no task or future.
                pooled.send(req.data, req.head_only, now + self.timeout, req)
            else:
                self.loop.create_task(self._slow_path(req, None))
        except Exception:
            self.crashed(req)

    def _answer(self, conn: ClientConnection, req: Request) -> None:
        """Requests the router answers itself: refused ones, its own paths, no config yet."""
        if req.error is not None:
            self.write_error(conn, req, req.error[0], req.error[1], None)
        elif req.method in (b"GET", b"HEAD") and req.url.partition(b"?")[0] in _LOCAL_PATHS:
            self.local(conn, req)
        else:
            if req.request_id is None:
                req.request_id = b"%032x" % (self._id_base + next(self._ids))
            self.write_error(conn, req, 503, "no routing configuration applied yet", None)
        conn.finished(req)

    def complete(self, req: Request, response: Response) -> None:
        """The upstream answered: relay the response, count it, mirror, finish."""
        # Set by dispatch before the request went upstream (no cast(): a call per request).
        snapshot: Snapshot = req.snapshot  # type: ignore[assignment]
        variant: VariantRuntime = req.variant  # type: ignore[assignment]
        conn: ClientConnection = req.conn  # type: ignore[assignment]
        head = response.head
        if head.as_is and req.keep_alive and not req.head_only and not self.stopping:
            # The common case: the upstream's head, the attribution header, the body.
            transport = conn.transport
            if transport is not None and not transport.is_closing():
                transport.write(b"%s%s\r\n%s" % (head.head, variant.header_line, response.body))
        else:
            self.write_response(conn, req, response, variant)
        # Bookkeeping after the write: the client is not kept waiting for it.
        elapsed = self.loop.time() - req.started
        stats = variant.stats
        if stats is None:
            stats = variant.stats = self.metrics.variant_stats(snapshot.deployment, variant.name)
        histogram = stats.histogram
        histogram.counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        histogram.total += elapsed
        codes = stats.codes
        status = response.status
        codes[status] = codes.get(status, 0) + 1
        chosen = req.chosen
        if chosen is not None and chosen.falling_back and variant is chosen:
            chosen.falling_back = False
            log.info("variant %s is served by its own upstreams again", chosen.name)
        if snapshot.table.mirror_variant is not None:
            self._mirror(snapshot, req, variant.name, conn.peer, response)
        req.data = b""
        conn.finished(req)

    def recover(self, req: Request, error: UpstreamError) -> None:
        """The pooled exchange failed: retry (in a task) or answer the error."""
        if isinstance(error, ConnectFailed | NoResponse):
            self.loop.create_task(self._slow_path(req, error))
        else:
            self._fail(req, error)

    def crashed(self, req: Request) -> None:
        """A bug surfaced while handling ``req``: answer 500 and close the connection."""
        log.exception("unexpected error while proxying")
        req.keep_alive = False
        conn = req.conn
        if conn is not None:
            self.write_error(conn, req, 500, "internal router error", None)
            conn.finished(req)

    def _fail(self, req: Request, error: UpstreamError) -> None:
        snapshot, variant, conn = req.snapshot, req.variant, req.conn
        assert snapshot is not None and variant is not None and conn is not None
        if isinstance(error, UpstreamTimeout):
            status, message = 504, "upstream timed out"
        else:
            status, message = 502, str(error)
        log.warning("request %s to variant %s failed: %s", req.request_id, variant.name, message)
        self.metrics.observe_upstream(
            snapshot.deployment, variant.name, self.loop.time() - req.started
        )
        self.write_error(conn, req, status, message, variant)
        self.metrics.count_request(snapshot.deployment, variant.name, status)
        if snapshot.table.mirror_variant is not None:
            self._mirror(snapshot, req, variant.name, conn.peer, None)
        conn.finished(req)

    async def _slow_path(self, req: Request, error: UpstreamError | None) -> None:
        """New connections, stale pooled connections and retries, as a coroutine."""
        try:
            response = await self._exchange(req, error)
        except UpstreamError as exc:
            self._fail(req, exc)
        except Exception:
            self.crashed(req)
        else:
            try:
                self.complete(req, response)
            except Exception:
                self.crashed(req)

    def _fall_back(
        self, snapshot: Snapshot, variant: VariantRuntime, now: float
    ) -> tuple[VariantRuntime, Upstream | None]:
        """The chosen variant has no usable upstream: use stable, or anything at all."""
        fallback = snapshot.fallback
        if variant is not fallback:
            upstream = fallback.pick(now)
            if upstream is not None:
                self._note_fallback(snapshot, variant)
                return fallback, upstream
        # Every upstream is ejected after recent failures: try one anyway rather than 503.
        upstream = variant.pick_any()
        if upstream is not None:
            return variant, upstream
        upstream = fallback.pick_any()
        if upstream is not None and variant is not fallback:
            self._note_fallback(snapshot, variant)
        return (fallback, upstream) if upstream is not None else (variant, None)

    def _note_fallback(self, snapshot: Snapshot, variant: VariantRuntime) -> None:
        """Count a fallback; log only when the variant starts falling back."""
        self.metrics.count_fallback(snapshot.deployment, variant.name)
        if not variant.falling_back:
            variant.falling_back = True
            log.warning(
                "variant %s has no ready upstream: falling back to %s",
                variant.name,
                snapshot.fallback.name,
            )

    async def _exchange(self, req: Request, error: UpstreamError | None) -> Response:
        """Get a response for ``req``; after a connection failure, retry once elsewhere.

        ``error`` is how a pooled attempt already failed, if it did. A pooled connection
        that the upstream had closed is replaced by a fresh one to the same upstream first
        (that is staleness, not a failure of the upstream).
        """
        snapshot, variant, upstream = req.snapshot, req.variant, req.upstream
        assert snapshot is not None and variant is not None and upstream is not None
        try:
            if error is None:
                return await self._attempt(upstream, req.data, req.head_only, self.timeout)
            if isinstance(error, NoResponse) and error.reused:
                conn = await upstream.open()
                return await conn.request(req.data, req.head_only, self.timeout)
            raise error
        except (ConnectFailed, NoResponse) as exc:
            upstream.eject()
            now = self.loop.time()
            retry = variant.pick(now, exclude=upstream)
            if retry is None and variant is not snapshot.fallback:
                retry = snapshot.fallback.pick(now, exclude=upstream)
                if retry is not None:
                    self._note_fallback(snapshot, variant)
                    variant = req.variant = snapshot.fallback
            if retry is None:
                raise
            log.info("retrying on %s after: %s", retry.address, exc)
            self.metrics.count_retry(snapshot.deployment, variant.name)
            return await self._attempt(retry, req.data, req.head_only, self.timeout)

    @staticmethod
    async def _attempt(
        upstream: Upstream,
        data: bytes,
        head_only: bool,
        timeout: float,  # noqa: ASYNC109 - per-read deadline, not a whole-call timeout
    ) -> Response:
        """One exchange; a pooled connection the upstream had closed is replaced once."""
        conn = await upstream.connect()
        try:
            return await conn.request(data, head_only, timeout)
        except NoResponse:
            if not conn.reused:
                raise
        conn = await upstream.open()
        return await conn.request(data, head_only, timeout)

    # -- responses -------------------------------------------------------------------------

    def write_response(
        self, conn: ClientConnection, req: Request, resp: Response, variant: VariantRuntime
    ) -> None:
        head = resp.head
        parts = [head.head, variant.header_line]
        if not head.has_version:
            parts.append(b"x-model-version: " + variant.version_b + b"\r\n")
        if not head.has_request_id:
            parts.append(b"x-request-id: " + (req.request_id or b"") + b"\r\n")
        body = resp.body
        status = resp.status
        if not head.has_length and status != 204 and status != 304:
            if not req.head_only:
                parts.append(b"content-length: %d\r\n" % len(body))
            elif head.content_length is not None:
                parts.append(b"content-length: " + head.content_length + b"\r\n")
        if not req.keep_alive or self.stopping:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if body and not req.head_only:
            parts.append(body)
        conn.write(b"".join(parts))

    def write_error(
        self,
        conn: ClientConnection,
        req: Request,
        status: int,
        message: str,
        variant: VariantRuntime | None,
    ) -> None:
        """A JSON error answered by the router itself."""
        body = _json_body({"error": message, "status": status})
        extra = [b"content-type: application/json\r\n"]
        if variant is not None:
            extra.append(b"x-modelship-variant: " + variant.name_b + b"\r\n")
            extra.append(b"x-model-version: " + variant.version_b + b"\r\n")
        self._write_local(conn, req, status, body, extra)
        if variant is None:
            snapshot = self.state.snapshot
            deployment = snapshot.deployment if snapshot is not None else self.deployment
            self.metrics.count_request(deployment, NO_VARIANT, status)

    def _write_local(
        self,
        conn: ClientConnection,
        req: Request,
        status: int,
        body: bytes,
        extra: list[bytes],
    ) -> None:
        reason = _REASONS.get(status, b"OK" if status == 200 else b"")
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        parts.extend(extra)
        if req.request_id is not None:
            parts.append(b"x-request-id: " + req.request_id + b"\r\n")
        parts.append(b"content-length: %d\r\n" % len(body))
        if not req.keep_alive or self.stopping:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if not req.head_only:
            parts.append(body)
        conn.write(b"".join(parts))

    # -- the router's own endpoints ----------------------------------------------------------

    def local(self, conn: ClientConnection, req: Request) -> None:
        path = req.url.partition(b"?")[0]
        if path == b"/healthz":
            body = _json_body({"status": "ok"})
            self._write_local(conn, req, 200, body, [b"content-type: application/json\r\n"])
        elif path == b"/readyz":
            ready, detail = self.readiness()
            status = 200 if ready else 503
            body = _json_body(detail)
            self._write_local(conn, req, status, body, [b"content-type: application/json\r\n"])
        else:
            body = self.metrics.render()
            ctype = b"content-type: " + CONTENT_TYPE.encode() + b"\r\n"
            self._write_local(conn, req, 200, body, [ctype])

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: a configuration is applied and the fallback variant has an upstream."""
        snapshot = self.state.snapshot
        if self.stopping:
            return False, {"ready": False, "reason": "shutting down"}
        if snapshot is None:
            return False, {"ready": False, "reason": "no routing configuration applied yet"}
        weights = snapshot.config.weights()
        detail: dict[str, Any] = {
            "ready": snapshot.ready(),
            "deployment": snapshot.deployment,
            "generation": snapshot.generation,
            "variants": {
                name: {"weight": weights[name], "upstreams": len(v.upstreams)}
                for name, v in snapshot.variants.items()
            },
        }
        if not snapshot.ready():
            detail["reason"] = f"fallback variant {snapshot.fallback.name} has no upstream"
        return snapshot.ready(), detail

    # -- shadow copies -----------------------------------------------------------------------

    def _mirror(
        self,
        snapshot: Snapshot,
        req: Request,
        served: str,
        peer: bytes,
        primary: Response | None,
    ) -> None:
        """Send a copy of ``req`` to the shadow variant, if this request is drawn. For a
        prediction (POST to ``...:predict`` or ``.../infer``), the shadow's answer is compared
        with ``primary`` (what the client got; None: the client got an error) in the copy's
        own task."""
        target = mirror_target(snapshot.table, served, self.draw(BUCKETS))
        if target is None:
            return
        deployment = snapshot.deployment
        variant = self.state.mirror_snapshot.get(target)
        upstream = variant.pick(self.loop.time()) if variant is not None else None
        if upstream is None and variant is not None:
            upstream = variant.pick_any()
        if upstream is None or len(self._mirrors) >= self.settings.mirror_max_in_flight:
            self.metrics.count_mirror(deployment, target, MIRROR_DROPPED)
            return
        data = req.serialise(peer, upstream.address, mirror=True)
        compared = req.method == b"POST" and is_prediction(req.url)
        task = self.loop.create_task(
            self._send_mirror(deployment, target, upstream, data, compared, primary)
        )
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _send_mirror(
        self,
        deployment: str,
        variant: str,
        upstream: Upstream,
        data: bytes,
        compared: bool = False,
        primary: Response | None = None,
    ) -> None:
        resp: Response | None = None
        try:
            resp = await self._attempt(upstream, data, False, self.settings.mirror_timeout)
        except UpstreamTimeout:
            outcome = MIRROR_TIMEOUT
        except UpstreamError as exc:
            log.debug("mirror copy to %s failed: %s", upstream.address, exc)
            if isinstance(exc, ConnectFailed):
                upstream.eject()
            outcome = MIRROR_ERROR
        else:
            if resp.status >= 500:
                outcome = MIRROR_HTTP_5XX
            elif resp.status >= 400:
                outcome = MIRROR_HTTP_4XX
            else:
                outcome = MIRROR_OK
        self.metrics.count_mirror(deployment, variant, outcome)
        if compared:
            result = compare(
                primary.status if primary is not None else None,
                primary.body if primary is not None else b"",
                resp.status if resp is not None else None,
                resp.body if resp is not None else b"",
            )
            if result.incomparable is not None:
                self.metrics.count_shadow_incomparable(deployment, variant, result.incomparable)
            else:
                self.metrics.count_shadow_rows(deployment, variant, result.agree, result.disagree)

    # -- housekeeping ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance the coarse clock (called a few times per second)."""
        self.clock = now

    def sweep(self) -> None:
        """Close idle client and upstream connections past their timeouts."""
        now = self.clock = self.loop.time()
        deadline = now - self.settings.client_idle_timeout
        for conn in list(self.connections):
            if conn.idle and conn.last_active < deadline and conn.transport is not None:
                conn.transport.close()
        self.state.upstreams.sweep(now)
        self.state.mirror_upstreams.sweep(now)

    def close_idle_clients(self) -> None:
        for conn in list(self.connections):
            if conn.idle and conn.transport is not None:
                conn.transport.close()

    @property
    def busy(self) -> bool:
        """Whether a client request is in flight (shadow copies do not count)."""
        return any(not c.idle for c in self.connections)

    async def drain_mirrors(self) -> None:
        for task in list(self._mirrors):
            task.cancel()
        if self._mirrors:
            await asyncio.gather(*self._mirrors, return_exceptions=True)
