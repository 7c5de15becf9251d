"""Prometheus metrics of the router, served on ``GET /metrics`` of the proxy port.

The hot path only bumps plain integers (no locks: everything runs on the event loop
thread) in a :class:`VariantStats` the proxy keeps on each variant, so a request costs no
label lookup at all; a custom collector turns the counts into metric families when
Prometheus scrapes. This keeps per-request metric cost well under a microsecond instead of
prometheus-client's labelled-child lookups and locks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from modelship_router import contract as c

# Names and label values are the metrics contract's (modelship_router.contract).
from modelship_router.contract import (
    MIRROR_DROPPED,
    MIRROR_ERROR,
    MIRROR_HTTP_4XX,
    MIRROR_HTTP_5XX,
    MIRROR_OK,
    MIRROR_TIMEOUT,
    NO_VARIANT,
)

__all__ = ["CONTENT_TYPE", "MIRROR_DROPPED", "MIRROR_ERROR", "MIRROR_HTTP_4XX",
           "MIRROR_HTTP_5XX", "MIRROR_OK", "MIRROR_TIMEOUT", "NO_VARIANT", "RouterMetrics",
           "VariantStats"]  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST

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


# prometheus_client ships this helper without annotations.
_BOUNDS = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]


class _Histogram:
    """Bucket counts of one label set (non-cumulative; cumulated at scrape time)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value


class VariantStats:
    """The per-request counters of one (deployment, variant): status codes and latency."""

    __slots__ = ("codes", "histogram")

    def __init__(self) -> None:
        #: Requests answered, by status code.
        self.codes: dict[int, int] = {}
        #: Upstream latency.
        self.histogram = _Histogram()


class RouterMetrics:
    """The router's metric families, registered in their own registry (no globals)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        #: Requests by status code and upstream latency, per (deployment, variant).
        self.stats: dict[tuple[str, str], VariantStats] = {}
        self.retries: dict[tuple[str, str], int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}
        self.mirror_requests: dict[tuple[str, str, str], int] = {}
        self.shadow_predictions: dict[tuple[str, str, str], int] = {}
        self.shadow_incomparable: dict[tuple[str, str, str], int] = {}
        self.generation: dict[str, int] = {}
        self.config_errors: dict[str, int] = {}
        self.upstreams: dict[tuple[str, str], int] = {}
        self.activations: dict[tuple[str, str, str], int] = {}
        self.activation_waits: dict[tuple[str, str], _Histogram] = {}
        self.registry.register(self)

    # -- hot path --------------------------------------------------------------------------

    def variant_stats(self, deployment: str, variant: str) -> VariantStats:
        """The counters of one variant (created on first use; the proxy keeps a reference)."""
        key = (deployment, variant)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = VariantStats()
        return stats

    def count_request(self, deployment: str, variant: str, code: int) -> None:
        codes = self.variant_stats(deployment, variant).codes
        codes[code] = codes.get(code, 0) + 1

    def observe_upstream(self, deployment: str, variant: str, seconds: float) -> None:
        self.variant_stats(deployment, variant).histogram.observe(seconds)

    # -- rarer events ----------------------------------------------------------------------

    def count_retry(self, deployment: str, variant: str) -> None:
        key = (deployment, variant)
        self.retries[key] = self.retries.get(key, 0) + 1

    def count_fallback(self, deployment: str, from_variant: str) -> None:
        key = (deployment, from_variant)
        self.fallbacks[key] = self.fallbacks.get(key, 0) + 1

    def count_mirror(self, deployment: str, variant: str, outcome: str) -> None:
        key = (deployment, variant, outcome)
        self.mirror_requests[key] = self.mirror_requests.get(key, 0) + 1

    def count_shadow_rows(self, deployment: str, variant: str, agree: int, disagree: int) -> None:
        """Prediction rows of a shadow copy compared with the client's answer."""
        for result, rows in ((c.AGREE, agree), (c.DISAGREE, disagree)):
            key = (deployment, variant, result)
            self.shadow_predictions[key] = self.shadow_predictions.get(key, 0) + rows

    def expect_shadow(self, deployment: str, variant: str) -> None:
        """Publish the shadow comparison counters at zero as soon as ``variant`` is mirrored.

        The analysis takes ``increase()`` over a window: a series whose first sample lands
        inside the window has no increase there, so counters born with the first comparison
        would hide the first interval's (dis)agreement."""
        for result in (c.AGREE, c.DISAGREE):
            self.shadow_predictions.setdefault((deployment, variant, result), 0)

    def count_shadow_incomparable(self, deployment: str, variant: str, reason: str) -> None:
        key = (deployment, variant, reason)
        self.shadow_incomparable[key] = self.shadow_incomparable.get(key, 0) + 1

    def count_activation(self, deployment: str, variant: str, outcome: str, waited: float) -> None:
        """A request held for a variant scaled to zero ended (``outcome``) after ``waited``."""
        key = (deployment, variant, outcome)
        self.activations[key] = self.activations.get(key, 0) + 1
        waits = self.activation_waits.get((deployment, variant))
        if waits is None:
            waits = self.activation_waits[(deployment, variant)] = _Histogram()
        waits.observe(waited)

    def set_generation(self, deployment: str, generation: int) -> None:
        self.generation[deployment] = generation

    def count_config_error(self, deployment: str) -> None:
        self.config_errors[deployment] = self.config_errors.get(deployment, 0) + 1

    def set_upstreams(self, deployment: str, counts: dict[str, int]) -> None:
        for variant, count in counts.items():
            self.upstreams[(deployment, variant)] = count

    # -- exposition ------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Build the metric families from the current counts (called at scrape time)."""
        requests = CounterMetricFamily(
            c.REQUESTS,
            "Client requests answered, by the variant that served them and status code.",
            labels=[c.DEPLOYMENT, c.VARIANT, c.CODE],
        )
        stats = list(self.stats.items())
        for (deployment, variant), counters in stats:
            for code, count in list(counters.codes.items()):
                requests.add_metric([deployment, variant, str(code)], count)
        yield requests

        durations = HistogramMetricFamily(
            c.UPSTREAM_DURATION_SECONDS,
            "Time from sending a request upstream to its complete response (retries included).",
            labels=[c.DEPLOYMENT, c.VARIANT],
        )
        for (deployment, variant), counters in stats:
            histogram = counters.histogram
            if not histogram.total and not any(histogram.counts):
                continue  # answered without an upstream exchange (e.g. 503): no latency
            durations.add_metric([deployment, variant], _buckets(histogram), histogram.total)
        yield durations

        yield _counter(
            c.ACTIVATIONS,
            "Requests held for a variant scaled to zero, by outcome: activated (sent to its "
            "first ready pod), timeout (answered 503).",
            [c.DEPLOYMENT, c.VARIANT, c.OUTCOME],
            self.activations,
        )
        waits = HistogramMetricFamily(
            c.ACTIVATION_WAIT_SECONDS,
            "Time a request for a variant scaled to zero waited for its first ready pod.",
            labels=[c.DEPLOYMENT, c.VARIANT],
        )
        for (deployment, variant), histogram in list(self.activation_waits.items()):
            waits.add_metric([deployment, variant], _buckets(histogram), histogram.total)
        yield waits
        yield _counter(
            c.RETRIES,
            "Requests retried on another upstream after a connection failure.",
            [c.DEPLOYMENT, c.VARIANT],
            self.retries,
        )
        yield _counter(
            c.FALLBACKS,
            "Requests sent to the fallback (stable) variant because theirs had no ready upstream.",
            [c.DEPLOYMENT, c.FROM_VARIANT],
            self.fallbacks,
        )
        yield _counter(
            c.MIRROR_REQUESTS,
            "Shadow copies by outcome: ok, http_4xx, http_5xx, error, timeout, dropped.",
            [c.DEPLOYMENT, c.VARIANT, c.OUTCOME],
            self.mirror_requests,
        )
        yield _counter(
            c.SHADOW_PREDICTIONS,
            "Prediction rows of shadow copies compared with the answer the client got, by "
            "result: agree, disagree (floats within 1e-6 relative).",
            [c.DEPLOYMENT, c.VARIANT, c.RESULT],
            self.shadow_predictions,
        )
        yield _counter(
            c.SHADOW_INCOMPARABLE,
            "Shadow copies whose answer could not be compared with the client's, by reason: "
            "primary_error, shadow_error, not_json, no_predictions.",
            [c.DEPLOYMENT, c.VARIANT, c.REASON],
            self.shadow_incomparable,
        )
        generation = GaugeMetricFamily(
            c.CONFIG_GENERATION,
            "Generation of the routing configuration currently applied.",
            labels=[c.DEPLOYMENT],
        )
        for deployment, value in list(self.generation.items()):
            generation.add_metric([deployment], value)
        yield generation
        yield _counter(
            c.CONFIG_ERRORS,
            "Routing configurations refused as invalid (the previous one stays applied).",
            [c.DEPLOYMENT],
            {(k,): v for k, v in self.config_errors.items()},
        )
        upstreams = GaugeMetricFamily(
            c.UPSTREAMS,
            "Upstreams currently known per variant (ready endpoints or static addresses).",
            labels=[c.DEPLOYMENT, c.VARIANT],
        )
        for (deployment, variant), count in list(self.upstreams.items()):
            upstreams.add_metric([deployment, variant], count)
        yield upstreams

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


def _buckets(histogram: _Histogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of ``histogram``, +Inf last."""
    cumulative, buckets = 0, []
    for bound, count in zip(_BOUNDS, histogram.counts, strict=True):
        cumulative += count
        buckets.append((bound, float(cumulative)))
    return buckets


def _counter(
    name: str, documentation: str, labels: list[str], values: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, count in list(values.items()):
        family.add_metric(list(key), count)
    return family
