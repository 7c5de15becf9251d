"""Where each variant's upstream addresses come from: the seam between routing and discovery.

:class:`StaticEndpointSource` uses the addresses written in the routing configuration;
the Kubernetes source (``modelship_router.kube_sources``) watches each variant's
EndpointSlices. The router only ever asks "which addresses serve this variant now?" and
is told when the answer may have changed.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

from modelship_router.config import RoutingConfig, Variant, parse_address

log = logging.getLogger(__name__)

Address = tuple[str, int]


class EndpointSource(ABC):
    """Ready upstream addresses per variant, with change notifications."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop) whenever addresses may have changed."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Begin discovery (no-op for static addresses)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop discovery."""

    @abstractmethod
    def watch(self, config: RoutingConfig) -> None:
        """Track the variants of a newly applied configuration."""

    @abstractmethod
    def addresses(self, variant: Variant) -> list[Address]:
        """Addresses of ``variant``'s ready upstreams, right now."""


class StaticEndpointSource(EndpointSource):
    """Addresses listed in the configuration (``upstreams``), for files and tests."""

    def __init__(self) -> None:
        super().__init__()
        self._warned: set[str] = set()

    def watch(self, config: RoutingConfig) -> None:
        for variant in config.variants:
            if variant.service is not None and variant.name not in self._warned:
                self._warned.add(variant.name)
                log.warning(
                    "variant %s names Service %s, but the router runs without Kubernetes: "
                    "it has no upstreams (list them under 'upstreams')",
                    variant.name,
                    variant.service,
                )

    def addresses(self, variant: Variant) -> list[Address]:
        return [parse_address(a) for a in variant.upstreams]
