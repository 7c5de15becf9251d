"""PromQL for the analysis: built-in metrics on the serving pods' own series, and templating of
custom queries. Pure: strings in, strings out.

Series are selected only by labels the processes export themselves (the serving series'
``deployment``, ``variant`` and ``version``, the router's ``deployment`` and ``variant``:
``modelship_serving.contract`` and ``modelship_router.contract``, whose names are imported
here) plus the namespace label every Kubernetes scrape sets, ``namespace`` unless the
operator's ``prometheusNamespaceLabel`` setting says otherwise (:func:`label_scheme`). No
relabelling of pod labels is assumed, so the Prometheus Operator's PodMonitors, the
prometheus-community chart's annotation scraping and a managed Prometheus all work as they
are. docs/metrics.md writes the contract down.

Only inference requests count (``handler`` ``v1_predict`` or ``v2_infer``): probes and
scrapes would pad the success rate and flatten the latency. Every built-in query aggregates
with ``sum`` so it returns one number however many pods a variant has, and divides counts
of the same window, so no traffic gives NaN or no series (Inconclusive), never a pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from modelship_router import contract as router
from modelship_serving import contract as serving

from modelship_operator.spec import BusinessMetric, MetricCheck, Variant

#: ``handler`` label values of inference requests on the model server, as a regex.
INFERENCE_ENDPOINTS: Final = "|".join(serving.INFERENCE_HANDLERS)
#: Labels a Kubernetes scrape attaches to every target (kubernetes_sd relabelling as the
#: Prometheus Operator and the prometheus-community chart write it). A process must not
#: export a label of this name: with ``honor_labels: false`` (their default) its own is
#: renamed ``exported_<name>``.
SCRAPE_TARGET_LABELS: Final = frozenset(
    {"namespace", "pod", "container", "endpoint", "service", "job", "instance", "node"}
)
#: The namespace label name unless configured.
DEFAULT_NAMESPACE_LABEL: Final = "namespace"
#: Placeholders a custom query may use, e.g. ``{{ variant }}``.
PLACEHOLDERS: Final = ("namespace", "name", "variant", "version", "interval")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class TemplateError(ValueError):
    """A custom query uses a placeholder that does not exist, or a stray ``{{``/``}}``."""


@dataclass(frozen=True)
class LabelScheme:
    """Label names that identify a ModelDeployment's series in Prometheus. Only
    ``namespace`` depends on the Prometheus (it is the scrape's); the rest are the
    processes' own, from their contracts."""

    namespace: str = DEFAULT_NAMESPACE_LABEL
    deployment: str = serving.DEPLOYMENT
    variant: str = serving.VARIANT
    version: str = serving.VERSION
    handler: str = serving.HANDLER
    #: The router's own label naming the ModelDeployment on ``modelship_router_*`` series.
    router_deployment: str = router.DEPLOYMENT
    router_variant: str = router.VARIANT


DEFAULT_LABELS: Final = LabelScheme()


def label_scheme(namespace_label: str = DEFAULT_NAMESPACE_LABEL) -> LabelScheme:
    """The labels for a Prometheus whose scrape puts the pod's namespace in NAMESPACE_LABEL
    (``namespace`` in kube-prometheus-stack, the prometheus-community chart and most
    managed services; e.g. ``kubernetes_namespace`` in older hand-written configs)."""
    return LabelScheme(namespace=namespace_label)


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
    return selector(scope, labels, f'{labels.handler}=~"{INFERENCE_ENDPOINTS}"', *extra)


_REQUESTS: Final = serving.total(serving.REQUESTS)
_DURATION_BUCKET: Final = serving.bucket(serving.REQUEST_DURATION_SECONDS)
_FEEDBACK: Final = serving.total(serving.FEEDBACK)
_FEEDBACK_CORRECT: Final = serving.total(serving.FEEDBACK_CORRECT)
_ABSOLUTE_ERROR_SUM: Final = serving.summed(serving.FEEDBACK_ABSOLUTE_ERROR)
_ERRORS_COUNTED: Final = serving.counted(serving.FEEDBACK_ABSOLUTE_ERROR)
_SQUARED_ERROR: Final = serving.total(serving.FEEDBACK_SQUARED_ERROR)
_CONFUSION: Final = serving.total(serving.FEEDBACK_CONFUSION)
_PREDICTIONS: Final = serving.total(serving.PREDICTIONS)
_PREDICTION_VALUE_BUCKET: Final = serving.bucket(serving.PREDICTION_VALUE)
_LOG_LOSS_SUM: Final = serving.summed(serving.FEEDBACK_LOG_LOSS)
_LOG_LOSS_ROWS: Final = serving.counted(serving.FEEDBACK_LOG_LOSS)
_SCORE_BUCKET: Final = serving.bucket(serving.FEEDBACK_SCORE)
_FEATURE_PSI: Final = serving.INPUT_FEATURE_PSI
_UNITS: Final = serving.total(serving.FEEDBACK_UNITS)
_UNITS_CORRECT: Final = serving.total(serving.FEEDBACK_UNITS_CORRECT)


def requests_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Inference requests the variant answered in the window (the minSamples count)."""
    sel = _inference(scope, labels)
    return f"sum(increase({_REQUESTS}{{{sel}}}[{duration(scope.interval)}]))"


def success_rate_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Percent of inference requests answered without a 5xx (4xx are the client's fault)."""
    window = duration(scope.interval)
    good = _inference(scope, labels, f'{serving.CODE}!~"5.."')
    every = _inference(scope, labels)
    return (
        f"100 * sum(increase({_REQUESTS}{{{good}}}[{window}]))"
        f" / sum(increase({_REQUESTS}{{{every}}}[{window}]))"
    )


def latency_p99_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """99th percentile of inference request duration in seconds, across all the variant's pods."""
    sel = _inference(scope, labels)
    return (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate({_DURATION_BUCKET}{{{sel}}}[{duration(scope.interval)}])))"
    )


def _increase(series: str, scope: Scope, labels: LabelScheme, *matchers: str) -> str:
    """The variant's ``series`` summed over its pods, increased over the window."""
    sel = selector(scope, labels, *matchers)
    return f"sum(increase({series}{{{sel}}}[{duration(scope.interval)}]))"


def accuracy_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Percent of predictions whose ground truth (feedback) matched, in the window."""
    correct, total = (_increase(s, scope, labels) for s in (_FEEDBACK_CORRECT, _FEEDBACK))
    return f"100 * {correct} / {total}"


def mae_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Mean absolute error of a regressor's predictions against feedback, in the window."""
    errors, rows = (_increase(s, scope, labels) for s in (_ABSOLUTE_ERROR_SUM, _ERRORS_COUNTED))
    return f"{errors} / {rows}"


def rmse_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Root mean squared error of a regressor's predictions against feedback, in the window."""
    squared, rows = (_increase(s, scope, labels) for s in (_SQUARED_ERROR, _ERRORS_COUNTED))
    return f"sqrt({squared} / {rows})"


def log_loss_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Mean log loss (cross-entropy) of a classifier's probabilities against feedback, in
    the window: the summed -ln p(true class) over the rows scored."""
    loss, rows = (_increase(s, scope, labels) for s in (_LOG_LOSS_SUM, _LOG_LOSS_ROWS))
    return f"{loss} / {rows}"


def score_histogram_query(
    scope: Scope, class_name: str, labels: LabelScheme = DEFAULT_LABELS
) -> str:
    """Cumulative buckets of CLASS_NAME's predicted probability on the feedback rows of the
    window, split by whether the truth was that class (``positive``): the two score
    distributions the ROC AUC ranks (:func:`..ranking.roc_auc`). A vector, not one number."""
    sel = selector(scope, labels, f"{serving.CLASS}={quote(class_name)}")
    window = duration(scope.interval)
    return f"sum by ({serving.POSITIVE}, le) (increase({_SCORE_BUCKET}{{{sel}}}[{window}]))"


def drift_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """The worst input feature's population stability index (PSI) against the reference
    profile saved with the model, on any pod of the variant. Each pod computes it over its
    recent window of rows (a gauge), so it needs no range."""
    return f"max({_FEATURE_PSI}{{{selector(scope, labels)}}})"


def class_query(
    name: str, scope: Scope, class_name: str, labels: LabelScheme = DEFAULT_LABELS
) -> str:
    """precision, recall or f1 (percent) of one class, from the confusion counts of the
    feedback in the window: true positives over predicted positives (precision), over
    actual positives (recall), or twice them over both (f1 = 2TP / (2TP + FP + FN))."""
    truth = f"{serving.TRUE_CLASS}={quote(class_name)}"
    predicted_as = f"{serving.CLASS}={quote(class_name)}"
    tp = _increase(_CONFUSION, scope, labels, truth, predicted_as)
    predicted = _increase(_CONFUSION, scope, labels, predicted_as)
    actual = _increase(_CONFUSION, scope, labels, truth)
    if name == "precision":
        return f"100 * {tp} / {predicted}"
    if name == "recall":
        return f"100 * {tp} / {actual}"
    if name == "f1":
        return f"100 * 2 * {tp} / ({predicted} + {actual})"
    raise ValueError(f"{name} is not a per-class metric")


BUILTIN_QUERIES: Final = {
    "success-rate": success_rate_query,
    "latency-p99": latency_p99_query,
    "accuracy": accuracy_query,
    "mae": mae_query,
    "rmse": rmse_query,
    "log-loss": log_loss_query,
    "drift": drift_query,
}
#: Built-in metrics whose query returns a distribution the operator reduces to one number.
VECTOR_METRICS: Final = frozenset({"roc-auc"})


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
    if check.name == "roc-auc" and check.class_name is not None:
        return score_histogram_query(scope, check.class_name, labels)
    if check.class_name is not None:
        return class_query(check.name, scope, check.class_name, labels)
    return BUILTIN_QUERIES[check.name](scope, labels)


# --- A/B test ------------------------------------------------------------------------------


def business_queries(
    metric: BusinessMetric, scope: Scope, labels: LabelScheme = DEFAULT_LABELS
) -> tuple[str, str]:
    """(successes, trials) of one variant since the test began; ``scope.interval`` is the
    time since then. Built in: online accuracy per unit of assignment, i.e. per user (the
    sticky key's) or per request without a key: each unit's first prediction with feedback,
    once, and whether it was right. A user's requests are not independent trials (they all
    go one way), so counting them would make the test surer than its data."""
    if metric.successes is not None and metric.trials is not None:
        return render_template(metric.successes, scope), render_template(metric.trials, scope)
    return _increase(_UNITS_CORRECT, scope, labels), _increase(_UNITS, scope, labels)


# --- shadow --------------------------------------------------------------------------------

#: The router's count of mirrored prediction rows compared with the primary's answer.
SHADOW_COMPARISON_METRIC: Final = router.total(router.SHADOW_PREDICTIONS)


def agreement_queries(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> tuple[str, str]:
    """(agreeing rows, compared rows) of the mirrored variant in the window, from the router."""
    window = duration(scope.interval)
    base = (
        f"{labels.namespace}={quote(scope.namespace)},"
        f"{labels.router_deployment}={quote(scope.name)},"
        f"{labels.router_variant}={quote(scope.variant)}"
    )
    metric, result = SHADOW_COMPARISON_METRIC, router.RESULT
    agree, both = router.AGREE, f"{router.AGREE}|{router.DISAGREE}"
    return (
        f'sum(increase({metric}{{{base},{result}="{agree}"}}[{window}]))',
        f'sum(increase({metric}{{{base},{result}=~"{both}"}}[{window}]))',
    )


def class_distribution_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Predicted rows per class of a classifier in the window (one series per class)."""
    sel = selector(scope, labels)
    return (
        f"sum by ({serving.CLASS}) (increase({_PREDICTIONS}{{{sel}}}[{duration(scope.interval)}]))"
    )


def value_distribution_query(scope: Scope, labels: LabelScheme = DEFAULT_LABELS) -> str:
    """Cumulative histogram buckets of a regressor's predicted values in the window."""
    sel = selector(scope, labels)
    return (
        f"sum by (le) (increase({_PREDICTION_VALUE_BUCKET}{{{sel}}}[{duration(scope.interval)}]))"
    )
