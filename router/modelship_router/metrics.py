"""Prometheus metrics of the router, served on ``GET /metrics`` of the proxy port.

Labelled children are cached in dicts so the hot path does one dict lookup and one
increment per metric instead of prometheus-client's label resolution.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Label value when a request was answered before any variant was chosen (e.g. 503).
NO_VARIANT = "none"

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

# Mirror outcomes.
MIRROR_OK = "ok"  # the shadow answered 1xx-3xx
MIRROR_HTTP_4XX = "http_4xx"
MIRROR_HTTP_5XX = "http_5xx"
MIRROR_ERROR = "error"  # connection failed or the response was unusable
MIRROR_TIMEOUT = "timeout"
MIRROR_DROPPED = "dropped"  # not sent: too many copies in flight or no shadow upstream


class RouterMetrics:
    """The router's metric families, in their own registry (no process globals)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `*_created` series add nothing for a router and double the scrape size.
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "modelship_router_requests",
            "Client requests answered, by the variant that served them and status code.",
            ["deployment", "variant", "code"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "modelship_router_upstream_duration_seconds",
            "Time from sending a request upstream to its complete response (retries included).",
            ["deployment", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "modelship_router_retries",
            "Requests retried on another upstream after a connection failure.",
            ["deployment", "variant"],
            registry=r,
        )
        self.fallbacks = Counter(
            "modelship_router_fallbacks",
            "Requests sent to the fallback (stable) variant because theirs had no ready upstream.",
            ["deployment", "from_variant"],
            registry=r,
        )
        self.mirror_requests = Counter(
            "modelship_router_mirror_requests",
            "Shadow copies by outcome: ok, http_4xx, http_5xx, error, timeout, dropped.",
            ["deployment", "variant", "outcome"],
            registry=r,
        )
        self.config_generation = Gauge(
            "modelship_router_config_generation",
            "Generation of the routing configuration currently applied.",
            ["deployment"],
            registry=r,
        )
        self.config_errors = Counter(
            "modelship_router_config_errors",
            "Routing configurations refused as invalid (the previous one stays applied).",
            ["deployment"],
            registry=r,
        )
        self.upstreams = Gauge(
            "modelship_router_upstreams",
            "Upstreams currently known per variant (ready endpoints or static addresses).",
            ["deployment", "variant"],
            registry=r,
        )
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}

    def count_request(self, deployment: str, variant: str, code: int) -> None:
        key = (deployment, variant, code)
        child = self._requests.get(key)
        if child is None:
            child = self.requests.labels(deployment, variant, str(code))
            self._requests[key] = child
        child.inc()

    def observe_upstream(self, deployment: str, variant: str, seconds: float) -> None:
        key = (deployment, variant)
        child = self._durations.get(key)
        if child is None:
            child = self.upstream_duration.labels(deployment, variant)
            self._durations[key] = child
        child.observe(seconds)

    def count_retry(self, deployment: str, variant: str) -> None:
        self.retries.labels(deployment, variant).inc()

    def count_fallback(self, deployment: str, from_variant: str) -> None:
        self.fallbacks.labels(deployment, from_variant).inc()

    def count_mirror(self, deployment: str, variant: str, outcome: str) -> None:
        self.mirror_requests.labels(deployment, variant, outcome).inc()

    def set_generation(self, deployment: str, generation: int) -> None:
        self.config_generation.labels(deployment).set(generation)

    def count_config_error(self, deployment: str) -> None:
        self.config_errors.labels(deployment).inc()

    def set_upstreams(self, deployment: str, counts: dict[str, int]) -> None:
        for variant, count in counts.items():
            self.upstreams.labels(deployment, variant).set(count)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
