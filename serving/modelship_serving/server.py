"""uvicorn with a Kubernetes-friendly shutdown: on SIGTERM readiness turns false at once, the
server keeps serving for ``drain_seconds`` (endpoints need time to drop the pod), then stops
accepting connections, lets in-flight requests finish and exits 0. A second signal skips the
remaining drain delay; a third exits immediately.
"""

from __future__ import annotations

import logging
import socket
import time
from types import FrameType

import uvicorn

from .app import ModelServerApp
from .grpc_server import start_grpc
from .protocol import fast_lane_protocol

log = logging.getLogger("modelship.serving")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first signal starts a drain instead of an immediate shutdown."""

    def __init__(self, config: uvicorn.Config, app: ModelServerApp) -> None:
        super().__init__(config)
        self.modelship = app
        self._signals = 0
        self._deadline: float | None = None
        self.exit_code = 0
        app.lifecycle.on_load_failure = self._fatal

    def _fatal(self, reason: str) -> None:
        self.exit_code = 1
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: after a clean drain the process exits 0 instead of
        # re-raising the signal.
        self._signals += 1
        if self._signals == 1:
            self.modelship.lifecycle.begin_drain()
            delay = self.modelship.settings.drain_seconds
            self._deadline = time.monotonic() + delay
            log.info("signal %s: readiness false, serving %.1fs more, then draining", sig, delay)
        elif self._signals == 2:
            self.should_exit = True
        else:
            self.should_exit = True
            self.force_exit = True

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's serve, with the gRPC service listening in the same loop while it runs."""
        settings = self.modelship.settings
        grpc_server = await start_grpc(self.modelship) if settings.grpc_port else None
        try:
            await super().serve(sockets)
        finally:
            if grpc_server is not None:
                # HTTP has finished its in-flight requests; gRPC gets the same grace.
                await grpc_server.stop(settings.graceful_timeout_seconds)

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(app: ModelServerApp) -> int:
    """Run until drained or the model fails to load; returns the process exit code."""
    settings = app.settings
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=fast_lane_protocol(app),
        lifespan="on",
        access_log=settings.access_log,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
        server_header=False,
        proxy_headers=False,  # the client address is not used; skip the middleware
    )
    server = DrainingServer(config, app)
    server.run()
    if server.exit_code == 0 and not server.started:
        return 1
    return server.exit_code
