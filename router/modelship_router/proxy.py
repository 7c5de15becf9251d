"""The HTTP/1.1 reverse proxy: parse with httptools, route, relay over pooled connections.

:class:`Proxy` is put together from one module per job:

- :mod:`~modelship_router.connection` and :mod:`~modelship_router.request`: client
  connections and request parsing;
- :mod:`~modelship_router.dispatch`: routing, the upstream exchange, completion;
- :mod:`~modelship_router.retry`: retries and fallback to the stable variant;
- :mod:`~modelship_router.writers`: the answers written to the client;
- :mod:`~modelship_router.local`: ``/healthz``, ``/readyz`` and ``/metrics`` (GET/HEAD);
- :mod:`~modelship_router.shadow`: shadow copies and their agreement counters.

This module keeps what ties them together: the shared state and the housekeeping.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from collections.abc import Callable

from modelship_router.access import AccessToken
from modelship_router.activate import Activator
from modelship_router.connection import ClientConnection
from modelship_router.dispatch import Dispatcher
from modelship_router.metrics import RouterMetrics
from modelship_router.request import Request
from modelship_router.settings import RouterSettings
from modelship_router.state import RouterState

__all__ = ["ClientConnection", "Proxy", "Request"]


class Proxy(Dispatcher):
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
        self.access = AccessToken(settings.token_file) if settings.token_file else None
        #: Set by the router once it runs (modelship_router.activate).
        self.activator: Activator | None = None

    def protocol(self) -> ClientConnection:
        return ClientConnection(self)

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
