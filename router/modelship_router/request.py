"""One buffered client request: what the client sent, and the state of its exchange.

The parser (:mod:`modelship_router.connection`) fills it in; dispatch
(:mod:`modelship_router.dispatch`) routes it and sends :meth:`Request.serialise` upstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelship_router.state import Snapshot, VariantRuntime
from modelship_router.upstream import Response, Upstream, UpstreamError

if TYPE_CHECKING:
    from modelship_router.connection import ClientConnection

NO_BODY_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})
#: An upstream request: method, path, host, forwarded lines, request id, X-Forwarded-For,
#: the mirror mark, then Content-Length and the body (``REQUEST``, for a GET without a
#: body: neither, and two empty arguments in their place).
REQUEST_WITH_BODY = (
    b"%s %s HTTP/1.1\r\nhost: %s\r\n%sx-request-id: %s\r\nx-forwarded-for: %s\r\n%s"
    b"content-length: %d\r\n\r\n%s"
)
REQUEST = b"%s %s HTTP/1.1\r\nhost: %s\r\n%sx-request-id: %s\r\nx-forwarded-for: %s\r\n%s\r\n%s%s"


class Reject(Exception):
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
        "unit",
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
        #: The sticky unit (``x-modelship-unit``) of a request with a sticky key.
        self.unit: str | None = None
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
        with_body = body or self.method not in NO_BODY_METHODS
        return (REQUEST_WITH_BODY if with_body else REQUEST) % (
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
