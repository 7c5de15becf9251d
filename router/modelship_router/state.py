"""The router's live state: an immutable snapshot swapped whenever config or endpoints change.

Requests read ``RouterState.snapshot`` once and use it to the end, so a change never
disturbs a request in flight. Upstream objects (and their pooled connections) outlive
snapshots: an address present before and after a change keeps its warm connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from modelship_router.config import BUCKETS, RoutingConfig
from modelship_router.endpoints import Address, EndpointSource
from modelship_router.metrics import VariantStats
from modelship_router.replica import REPLICA_HEADER, rendezvous
from modelship_router.routing import RoutingTable, build_table
from modelship_router.upstream import Limits, Upstream

log = logging.getLogger(__name__)


class VariantRuntime:
    """One variant inside a snapshot: its upstreams and round-robin position."""

    __slots__ = (
        "_next",
        "falling_back",
        "header_line",
        "name",
        "name_b",
        "scale_target",
        "stats",
        "upstreams",
        "version_b",
    )

    def __init__(
        self,
        name: str,
        version: str,
        upstreams: list[Upstream],
        scale_target: str | None = None,
    ) -> None:
        self.name = name
        self.name_b = name.encode()
        self.version_b = version.encode()
        #: The attribution header added to every response this variant serves.
        self.header_line = b"x-modelship-variant: " + self.name_b + b"\r\n"
        self.upstreams = upstreams
        self._next = 0
        #: Set while requests for this variant fall back to stable (logged on change).
        self.falling_back = False
        #: This variant's metric counters, attached by the proxy on first use.
        self.stats: VariantStats | None = None
        #: The Deployment to scale from zero when it has no upstream (None: it never is).
        self.scale_target = scale_target

    def pick(self, now: float, exclude: Upstream | None = None) -> Upstream | None:
        """Next upstream in round-robin order that is not ejected (and not ``exclude``)."""
        ups = self.upstreams
        n = len(ups)
        for _ in range(n):
            i = self._next
            self._next = i + 1 if i + 1 < n else 0
            up = ups[i]
            if up.down_until <= now and up is not exclude:
                return up
        return None

    def pick_for(
        self, unit: str | None, now: float, exclude: Upstream | None = None
    ) -> Upstream | None:
        """The unit's upstream by rendezvous hashing (no unit: :meth:`pick`, round robin)."""
        if unit is None:
            return self.pick(now, exclude)
        return rendezvous(self.upstreams, unit, now, exclude)

    def pick_any(self, exclude: Upstream | None = None) -> Upstream | None:
        """Any upstream, ejected or not: the last resort before answering 503."""
        for up in self.upstreams:
            if up is not exclude:
                return up
        return None


class Snapshot:
    """Everything one request needs, consistent with one configuration generation."""

    __slots__ = (
        "by_bucket",
        "config",
        "deployment",
        "fallback",
        "generation",
        "header_names",
        "table",
        "variants",
    )

    def __init__(
        self,
        config: RoutingConfig,
        table: RoutingTable,
        variants: dict[str, VariantRuntime],
    ) -> None:
        self.config = config
        self.table = table
        self.deployment = config.deployment
        self.generation = config.generation
        self.variants = variants
        self.fallback = variants[config.fallback]
        #: Request header names (lowercase bytes) routing decisions read.
        #: The replica header is always read: feedback goes back to the predicting pod.
        self.header_names = frozenset(n.encode() for n in table.header_names | {REPLICA_HEADER})
        #: When only the weights decide (no match rule, no sticky key): the variant owning
        #: each bucket, so a request's choice is one index with its random draw.
        self.by_bucket: tuple[VariantRuntime, ...] | None = None
        if not table.rules and table.sticky_header is None and table.sticky_cookie is None:
            owners: list[VariantRuntime] = []
            for upper, name in table.ranges:
                owners.extend([variants[name]] * (upper - len(owners)))
            owners.extend([self.fallback] * (BUCKETS - len(owners)))
            self.by_bucket = tuple(owners)

    def ready(self) -> bool:
        """Whether the fallback (stable) variant has at least one upstream, or may be
        scaled to zero (its requests are held while the router wakes it)."""
        fallback = self.fallback
        return bool(fallback.upstreams) or fallback.scale_target is not None


class UpstreamRegistry:
    """Upstream objects by address, kept across snapshots to keep their connections."""

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self.loop = loop
        self.by_address: dict[Address, Upstream] = {}

    def get(self, address: Address) -> Upstream:
        up = self.by_address.get(address)
        if up is None:
            up = Upstream(address[0], address[1], self.limits, self.loop)
            self.by_address[address] = up
        return up

    def keep_only(self, addresses: set[Address]) -> None:
        """Retire upstreams whose address is no longer used."""
        for address in list(self.by_address):
            if address not in addresses:
                self.by_address.pop(address).retire()

    def sweep(self, now: float) -> None:
        for up in self.by_address.values():
            up.sweep(now)

    def close(self) -> None:
        self.keep_only(set())


class RouterState:
    """Holds the applied configuration and builds snapshots from it and the endpoints."""

    def __init__(
        self,
        endpoints: EndpointSource,
        limits: Limits,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.endpoints = endpoints
        self.snapshot: Snapshot | None = None
        self.config: RoutingConfig | None = None
        self.upstreams = UpstreamRegistry(limits, loop)
        #: Separate pools for shadow copies, so mirroring never takes a client's connection.
        self.mirror_upstreams = UpstreamRegistry(limits, loop)
        self.mirror_snapshot: dict[str, VariantRuntime] = {}
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._empty: set[str] = set()
        endpoints.subscribe(self.rebuild)

    def subscribe(self, callback: Callable[[Snapshot], None]) -> None:
        """Call ``callback`` with every new snapshot."""
        self._listeners.append(callback)

    def apply(self, config: RoutingConfig) -> None:
        """Apply a new configuration (takes effect for requests that start after this)."""
        self.config = config
        self.endpoints.watch(config)
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute the snapshot from the current config and endpoints."""
        config = self.config
        if config is None:
            return
        variants: dict[str, VariantRuntime] = {}
        mirrors: dict[str, VariantRuntime] = {}
        used: set[Address] = set()
        for variant in config.variants:
            addresses = self.endpoints.addresses(variant)
            used.update(addresses)
            ups = [self.upstreams.get(a) for a in addresses]
            variants[variant.name] = VariantRuntime(
                variant.name, variant.model_version, ups, variant.scale_target
            )
        mirror = config.mirror
        mirror_used: set[Address] = set()
        if mirror is not None:
            variant = config.variant(mirror.variant)
            addresses = self.endpoints.addresses(variant)
            mirror_used.update(addresses)
            ups = [self.mirror_upstreams.get(a) for a in addresses]
            mirrors[variant.name] = VariantRuntime(variant.name, variant.model_version, ups)
        self.upstreams.keep_only(used)
        self.mirror_upstreams.keep_only(mirror_used)
        snapshot = Snapshot(config, build_table(config), variants)
        self._log_empty(snapshot)
        self.snapshot = snapshot
        self.mirror_snapshot = mirrors
        for callback in self._listeners:
            callback(snapshot)

    def _log_empty(self, snapshot: Snapshot) -> None:
        empty = {name for name, v in snapshot.variants.items() if not v.upstreams}
        for name in sorted(empty - self._empty):
            if snapshot.variants[name].scale_target is not None:
                log.info("variant %s has no ready upstream: requests for it wake it", name)
            elif name == snapshot.config.fallback:
                log.error("fallback variant %s has no ready upstream: answering 503", name)
            else:
                log.warning(
                    "variant %s has no ready upstream: its traffic falls back to %s",
                    name,
                    snapshot.config.fallback,
                )
        for name in sorted(self._empty - empty):
            log.info("variant %s has ready upstreams again", name)
        self._empty = empty

    def close(self) -> None:
        self.upstreams.close()
        self.mirror_upstreams.close()
