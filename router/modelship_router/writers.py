"""Answers written to the client: an upstream's response relayed, or the router's own."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from modelship_router.metrics import NO_VARIANT, RouterMetrics
from modelship_router.request import Request
from modelship_router.state import RouterState, VariantRuntime
from modelship_router.upstream import Response

if TYPE_CHECKING:
    from modelship_router.connection import ClientConnection

_REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
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


def json_body(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


class ResponseWriters:
    """Writing answers (a part of :class:`modelship_router.proxy.Proxy`)."""

    state: RouterState
    metrics: RouterMetrics
    stopping: bool
    deployment: str

    def write_response(
        self, conn: ClientConnection, req: Request, resp: Response, variant: VariantRuntime
    ) -> None:
        head = resp.head
        parts = [head.head, variant.header_line]
        if req.upstream is not None:
            parts.append(req.upstream.replica_line)
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
        body = json_body({"error": message, "status": status})
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
