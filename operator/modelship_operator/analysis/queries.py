"""PromQL for the analysis: built-in metrics on the serving pods' own series, and templating of
custom queries. Pure: strings in, strings out.

Series are selected by where they come from, with the label names the local cluster's
Prometheus produces (``cluster/modelship_cluster/prometheus.py``): ``namespace`` from the pod's
namespace and ``modelship_io_deployment`` from its ``modelship.io/deployment`` label; plus the
serving series' own ``variant`` and ``version`` labels. A Prometheus with another relabelling
passes a different :class:`LabelScheme`.

Only inference requests count (``endpoint`` ``v1_predict`` or ``v2_infer``): probes and
scrapes would pad the success rate and flatten the latency. Every built-in query aggregates
with ``sum`` so it returns one number however many pods a variant has, and divides counts
of the same window, so no traffic gives NaN or no series (Inconclusive), never a pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from modelship_operator.spec import BusinessMetric, MetricCheck, Variant

#: Endpoint label values of inference requests on the model server.
INFERENCE_ENDPOINTS: Final = "v1_predict|v2_infer"
#: Placeholders a custom query may use, e.g. ``{{ variant }}``.
PLACEHOLDERS: Final = ("namespace", "name", "variant", "version", "interval")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class TemplateError(ValueError):
    """A custom query uses a placeholder that does not exist, or a stray ``{{``/``}}``."""


@dataclass(frozen=True)
class LabelScheme:
    """Label names that identify a ModelDeployment's series in Prometheus."""

    namespace: str = "namespace"
    deployment: str = "modelship_io_deployment"
    variant: str = "variant"
    version: str = "version"
    #: The router's own label naming the ModelDeployment on ``modelship_router_*`` series.
    router_deployment: str = "deployment"


DEFAULT_LABELS: Final = LabelScheme()


@dataclass(frozen=True)
class Scope:
    """Whose series, over which window: what one query of one variant is about."""

    namespace: str
    name: str
    variant: Variant
    interval: timedelta
    version: str | None = None

    def with_variant(self, variant: Variant, version: str | None) -> Scope:
        return Scope(self.namespace, self.name, variant, self.interval, version)

    def with_interval(self, interval: timedelta) -> Scope:
        return Scope(self.namespace, self.name, self.variant, interval, self.version)


def duration(delta: timedelta) -> str:
    """A PromQL range duration: whole seconds as ``90s``, otherwise milliseconds (>= 1ms)."""
    ms = max(1, round(delta.total_seconds() * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def quote(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(scope: Scope, labels: LabelScheme = DEFAULT_LABELS, *extra: str) -> str:
    """Label matchers (without braces) for one variant of one ModelDeployment."""
    parts = [
        f"{labels.namespace}={quote(scope.namespace)}",
        f"{labels.deployment}={quote(scope.name)}",
        f"{labels.variant}={quote(scope.variant)}",
    ]
    if scope.version is not None:
        parts.append(f"{labels.version}={quote(scope.version)}")
    return ",".join([*parts, *extra])


def _inference(scope: Scope, labels: LabelScheme, *extra: str) -> str:
    return selector(scope, labels, f'endpoint=~"{INFERENCE_ENDPOINTS}"', *extra)


def requests_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Inference requests the variant answered in the window (the minSamples count)."""
    sel = _inference(scope, labels)
    return f"sum(increase(modelship_requests_total{{{sel}}}[{duration(scope.interval)}]))"


def success_rate_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Percent of inference requests answered without a 5xx (4xx are the client's fault)."""
    window = duration(scope.interval)
    good = _inference(scope, labels, 'code!~"5.."')
    every = _inference(scope, labels)
    return (
        f"100 * sum(increase(modelship_requests_total{{{good}}}[{window}]))"
        f" / sum(increase(modelship_requests_total{{{every}}}[{window}]))"
    )


def latency_p99_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """99th percentile of inference request duration in seconds, across all the variant's pods."""
    sel = _inference(scope, labels)
    return (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(modelship_request_duration_seconds_bucket{{{sel}}}[{duration(scope.interval)}])))"
    )


def accuracy_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Percent of predictions whose ground truth (feedback) matched, in the window."""
    window = duration(scope.interval)
    sel = selector(scope, labels)
    return (
        f"100 * sum(increase(modelship_feedback_correct_total{{{sel}}}[{window}]))"
        f" / sum(increase(modelship_feedback_total{{{sel}}}[{window}]))"
    )


BUILTIN_QUERIES: Final = {
    "success-rate": success_rate_query,
    "latency-p99": latency_p99_query,
    "accuracy": accuracy_query,
}


def template_problems(template: str) -> list[str]:
    """What is wrong with a custom query's placeholders (empty: nothing)."""
    problems = []
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in PLACEHOLDERS:
            known = ", ".join("{{ " + p + " }}" for p in PLACEHOLDERS)
            problems.append(f"unknown placeholder {match.group(0)!r}; known: {known}")
    rest = _PLACEHOLDER.sub("", template)
    if "{{" in rest or "}}" in rest:
        problems.append("unbalanced '{{' or '}}' (a placeholder is written {{ name }})")
    return problems


def render_template(template: str, scope: Scope) -> str:
    """A custom query with its placeholders filled in; :class:`TemplateError` if it has
    placeholders that do not exist. Values are inserted bare (they are label values or a
    duration); write them inside quotes in the query, e.g. ``variant="{{ variant }}"``."""
    problems = template_problems(template)
    if problems:
        raise TemplateError("; ".join(problems))
    values = {
        "namespace": scope.namespace,
        "name": scope.name,
        "variant": scope.variant,
        "version": scope.version or "",
        "interval": duration(scope.interval),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def metric_query(check: MetricCheck, scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """The query of one metric check for one variant (raises :class:`TemplateError`)."""
    if check.query is not None:
        return render_template(check.query, scope)
    return BUILTIN_QUERIES[check.name](scope, labels)


# --- A/B test ------------------------------------------------------------------------------


def business_queries(
    metric: BusinessMetric, scope: Scope, labels: LabelScheme = DEFAULT_LABELS
) -> tuple[str, str]:
    """(successes, trials) of one variant since the test began; ``scope.interval`` is the
    time since then. Built in: correct feedback and all feedback (online accuracy)."""
    if metric.successes is not None and metric.trials is not None:
        return render_template(metric.successes, scope), render_template(metric.trials, scope)
    window = duration(scope.interval)
    sel = selector(scope, labels)
    return (
        f"sum(increase(modelship_feedback_correct_total{{{sel}}}[{window}]))",
        f"sum(increase(modelship_feedback_total{{{sel}}}[{window}]))",
    )


# --- shadow --------------------------------------------------------------------------------

#: The router's count of mirrored prediction rows compared with the primary's answer.
#: Proposed for the router (see docs/analysis.md); until it exists the analysis falls back
#: to comparing prediction distributions.
SHADOW_COMPARISON_METRIC: Final = "modelship_router_shadow_predictions_total"


def agreement_queries(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> tuple[str, str]:
    """(agreeing rows, compared rows) of the mirrored variant in the window, from the router."""
    window = duration(scope.interval)
    base = (
        f"{labels.namespace}={quote(scope.namespace)},"
        f"{labels.router_deployment}={quote(scope.name)},variant={quote(scope.variant)}"
    )
    metric = SHADOW_COMPARISON_METRIC
    return (
        f'sum(increase({metric}{{{base},result="agree"}}[{window}]))',
        f'sum(increase({metric}{{{base},result=~"agree|disagree"}}[{window}]))',
    )


def class_distribution_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Predicted rows per class of a classifier in the window (one series per class)."""
    sel = selector(scope, labels)
    return (
        f"sum by (class) (increase(modelship_predictions_total{{{sel}}}"
        f"[{duration(scope.interval)}]))"
    )


def value_distribution_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Cumulative histogram buckets of a regressor's predicted values in the window."""
    sel = selector(scope, labels)
    return (
        f"sum by (le) (increase(modelship_prediction_value_bucket{{{sel}}}"
        f"[{duration(scope.interval)}]))"
    )
