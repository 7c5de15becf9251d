"""uvicorn's httptools protocol with the served model's small inference requests answered inside
the protocol itself.

Why: for a one-row prediction, the ASGI machinery around a request (a task per request, the
scope dict, an Event per request, the receive/send coroutines, per-header validation, and two
socket writes per response) costs more CPU than parsing, predicting and encoding together. This
lane skips it for exactly the requests it can finish synchronously, and writes each answer in
one ``write``:

- ``POST`` to one of the served model's exact inference paths (``ModelServerApp.fast_routes``);
- a ``Content-Length`` body (no chunked upload, no ``Expect: 100-continue``, no upgrade) small
  enough that it cannot hold more than ``inline_max_rows`` rows (larger batches go to a worker
  thread on the ASGI path, so probes stay responsive);
- no other request of the connection still in progress on the ASGI path (pipelining keeps its
  order), no access log and no concurrency limit configured.

Everything else (probes, metadata, docs, feedback, large batches) takes uvicorn's ordinary ASGI
path to the same ``ModelServerApp``, and both paths call the same ``DataPlane``, so answers are
identical. The lane relies on uvicorn's ``HttpToolsProtocol`` internals (its parser callbacks,
``cycle``, ``flow`` and ``on_response_complete``), hence the upper bound on uvicorn in
pyproject.toml; the integration tests exercise both paths.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

if TYPE_CHECKING:
    from .app import FastRoute, ModelServerApp


class FastLaneProtocol(HttpToolsProtocol):
    """One client connection (see module docstring). ``model_server`` is set by
    :func:`fast_lane_protocol`."""

    model_server: ModelServerApp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lane: FastRoute | None = None
        self._lane_body: list[bytes] = []
        self._lane_started = 0.0
        self._lane_keep_alive = True
        self._lane_close_after = False
        self._lane_paused_reading = False

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._lane = None
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        route = self._lane_route()
        if route is None:
            super().on_headers_complete()
            return
        self._lane = route
        self._lane_body = []
        self._lane_started = time.perf_counter()
        self._lane_keep_alive = (
            self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        )

    def _lane_route(self) -> FastRoute | None:
        routes = self.model_server.fast_routes
        if not routes or self.parser.get_method() != b"POST":
            return None
        route = routes.get(self.url)
        if route is None:
            return None
        if (
            self.expect_100_continue
            or self.access_log
            or self.limit_concurrency is not None
            or self.parser.should_upgrade()
            or (self.cycle is not None and not self.cycle.response_complete)
        ):
            return None
        length = 0
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return None
            elif name == b"transfer-encoding" or name == b"inference-header-content-length":
                return None  # chunked uploads and binary tensors take the ASGI path
        return route if length <= route.max_body else None

    def on_body(self, body: bytes) -> None:
        if self._lane is not None:
            self._lane_body.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        route = self._lane
        if route is None:
            super().on_message_complete()
            return
        self._lane = None
        body = self._lane_body[0] if len(self._lane_body) == 1 else b"".join(self._lane_body)
        self._lane_body = []
        status, head, payload = self.model_server.answer_now(route, body, self.headers)
        parts = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        keep_alive = self._lane_keep_alive and not self._lane_close_after
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (head, payload)
        self.transport.write(b"".join(parts))
        self.model_server.metrics.observe_request(
            route.endpoint, status, time.perf_counter() - self._lane_started
        )
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # counts the request; arms keep-alive or the next request
        if keep_alive and self.flow.write_paused:
            # The client is not reading its answers: stop reading its requests until it does.
            self.flow.pause_reading()
            self._lane_paused_reading = True

    # -- connection events ---------------------------------------------------------------------

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._lane_paused_reading:
            self._lane_paused_reading = False
            self.flow.resume_reading()

    def shutdown(self) -> None:
        if self._lane is not None:  # a request is still arriving: answer it, then close
            self._lane_close_after = True
            return
        super().shutdown()


def fast_lane_protocol(app: ModelServerApp) -> type[FastLaneProtocol]:
    """The protocol class to give uvicorn (``uvicorn.Config(http=...)``) for ``app``."""
    return type("ModelServerProtocol", (FastLaneProtocol,), {"model_server": app})
