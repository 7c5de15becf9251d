"""The paths the router answers itself: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelship_router.metrics import CONTENT_TYPE
from modelship_router.request import Request
from modelship_router.writers import ResponseWriters, json_body

if TYPE_CHECKING:
    from modelship_router.connection import ClientConnection

#: Answered by the router for GET and HEAD (other methods are proxied).
LOCAL_PATHS = frozenset({b"/healthz", b"/readyz", b"/metrics"})


class LocalEndpoints(ResponseWriters):
    """The router's own endpoints (a part of :class:`modelship_router.proxy.Proxy`)."""

    def local(self, conn: ClientConnection, req: Request) -> None:
        path = req.url.partition(b"?")[0]
        if path == b"/healthz":
            body = json_body({"status": "ok"})
            self._write_local(conn, req, 200, body, [b"content-type: application/json\r\n"])
        elif path == b"/readyz":
            ready, detail = self.readiness()
            status = 200 if ready else 503
            body = json_body(detail)
            self._write_local(conn, req, status, body, [b"content-type: application/json\r\n"])
        else:
            body = self.metrics.render()
            ctype = b"content-type: " + CONTENT_TYPE.encode() + b"\r\n"
            self._write_local(conn, req, 200, body, [ctype])

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: a configuration is applied and the fallback variant has an upstream (or
        may be scaled to zero: the router wakes it on demand)."""
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
