"""Wiring: settings + a config source + an endpoint source -> a listening router.

``Router`` holds no process globals, so tests can run several in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from modelship_router.activate import Activator, NoWaker, Waker
from modelship_router.config import RoutingConfig
from modelship_router.endpoints import EndpointSource, StaticEndpointSource
from modelship_router.metrics import RouterMetrics
from modelship_router.proxy import Proxy
from modelship_router.settings import RouterSettings
from modelship_router.sources import ConfigSource, FileConfigSource
from modelship_router.state import RouterState, Snapshot
from modelship_router.upstream import Limits

log = logging.getLogger(__name__)

#: Upstream deadlines are checked this often (the precision of upstream timeouts).
_TICK = 0.05
#: Idle connections are swept every this many ticks (1 s).
_SWEEP_EVERY = 20


class Router:
    """A running router: listening socket, live state, configuration and endpoint watches."""

    def __init__(
        self,
        settings: RouterSettings,
        config_source: ConfigSource,
        endpoints: EndpointSource,
        metrics: RouterMetrics | None = None,
        waker: Waker | None = None,
    ) -> None:
        self.settings = settings
        self.config_source = config_source
        self.endpoints = endpoints
        #: Scales variants from zero (the Kubernetes API's scale subresource, or nothing).
        self.waker = waker if waker is not None else NoWaker()
        self.metrics = metrics if metrics is not None else RouterMetrics()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._deployment = settings.deployment or ""
        self.state: RouterState
        self.proxy: Proxy

    async def start(self) -> None:
        """Start watching and listening; returns once the socket is bound."""
        loop = asyncio.get_running_loop()
        s = self.settings
        limits = Limits(
            connect_timeout=s.connect_timeout,
            idle_timeout=s.upstream_idle_timeout,
            max_idle=s.max_idle_per_upstream,
            eject_seconds=s.eject_seconds,
            max_response_bytes=s.max_response_bytes,
        )
        self.limits = limits
        self.state = RouterState(self.endpoints, limits, loop)
        self.state.subscribe(self._on_snapshot)
        self.proxy = Proxy(s, self.state, self.metrics, loop)
        self.proxy.activator = Activator(self.state, self.waker, loop)
        await self.endpoints.start()
        self._tasks.append(loop.create_task(self._watch_config()))
        self._tasks.append(loop.create_task(self._timers()))
        self._server = await loop.create_server(
            self.proxy.protocol, s.host, s.port, reuse_address=True, backlog=2048
        )
        log.info("modelship-router listening on %s:%d", s.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        sock: socket.socket = self._server.sockets[0]
        return int(sock.getsockname()[1])

    def apply_config(self, config: RoutingConfig) -> None:
        """Apply a valid configuration now; requests already in flight are unaffected."""
        previous = self.state.config
        self._deployment = config.deployment
        self.state.apply(config)
        self.metrics.set_generation(config.deployment, config.generation)
        if config.mirror is not None:
            self.metrics.expect_shadow(config.deployment, config.mirror.variant)
        if previous is None or previous != config:
            weights = ", ".join(f"{k}={v:g}%" for k, v in config.weights().items())
            log.info(
                "applied routing generation %d for %s: %s",
                config.generation,
                config.deployment,
                weights,
            )

    def reject_config(self, reason: str) -> None:
        """Keep the current configuration and say why the new one was refused."""
        self.metrics.count_config_error(self._deployment)
        log.error("routing configuration refused (keeping the current one): %s", reason)

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        counts = {name: len(v.upstreams) for name, v in snapshot.variants.items()}
        self.metrics.set_upstreams(snapshot.deployment, counts)

    async def _watch_config(self) -> None:
        try:
            await self.config_source.run(self.apply_config, self.reject_config)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("configuration watch stopped")
            raise

    async def _timers(self) -> None:
        """Upstream deadlines (coarse, instead of a timer per request) and idle sweeps."""
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            await asyncio.sleep(_TICK)
            now = loop.time()
            self.proxy.tick(now)
            self.limits.expire(now)
            ticks += 1
            if ticks % _SWEEP_EVERY == 0:
                self.proxy.sweep()

    async def drain(self, seconds: float, skip: asyncio.Event | None = None) -> None:
        """Keep listening and answering for SECONDS (or until SKIP is set) with readiness
        false and every answer closing its connection: Kubernetes takes the pod out of its
        endpoints meanwhile, and a client sent here late is still answered, not refused."""
        # Idle keep-alive connections stay open: a client sending on one is answered with
        # Connection: close and reconnects to a ready pod; closing them now would race it.
        self.proxy.stopping = True
        waiter = asyncio.Event() if skip is None else skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout=seconds)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` s), close all."""
        proxy = self.proxy
        proxy.stopping = True
        if self._server is not None:
            self._server.close()
        proxy.close_idle_clients()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while proxy.busy and loop.time() < deadline:
            await asyncio.sleep(0.05)
            proxy.close_idle_clients()
        await proxy.drain_mirrors()
        if proxy.activator is not None:
            await proxy.activator.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.endpoints.close()
        self.state.close()
        for conn in list(proxy.connections):
            if conn.transport is not None:
                conn.transport.close()


def create_router(settings: RouterSettings) -> Router:
    """A router for the mode the settings select: static file, or Kubernetes watches."""
    if settings.config is not None:
        return Router(
            settings,
            FileConfigSource(settings.config, settings.config_poll_interval),
            StaticEndpointSource(),
        )
    from modelship_router.kube_sources import kubernetes_sources

    config_source, endpoints, waker = kubernetes_sources(settings)
    return Router(settings, config_source, endpoints, waker=waker)
