"""Built-in PromQL and custom query templating (pure; the queries run against a real
Prometheus in test_analysis_runner.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from modelship_operator.analysis.queries import (
    BUILTIN_QUERIES,
    SCRAPE_TARGET_LABELS,
    VECTOR_METRICS,
    LabelScheme,
    Scope,
    TemplateError,
    agreement_queries,
    business_queries,
    duration,
    label_scheme,
    metric_query,
    render_template,
    requests_query,
    selector,
    template_problems,
)
from modelship_operator.spec import BUILTIN_METRICS, CLASS_METRICS, BusinessMetric, MetricCheck
from modelship_router import contract as router_contract
from modelship_serving import contract as serving_contract

CANARY = Scope("ml", "churn", "canary", timedelta(seconds=30), "1.5.0")


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=1, seconds=30), "90s"),
        (timedelta(hours=2), "7200s"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(0), "1ms"),  # PromQL refuses a zero range
    ],
)
def test_duration(delta: timedelta, text: str) -> None:
    assert duration(delta) == text


def test_every_builtin_metric_has_a_query() -> None:
    assert set(BUILTIN_QUERIES) | CLASS_METRICS == set(BUILTIN_METRICS)
    assert not set(BUILTIN_QUERIES) & CLASS_METRICS


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("precision", "100 * {tp} / {predicted}"),
        ("recall", "100 * {tp} / {actual}"),
        ("f1", "100 * 2 * {tp} / ({predicted} + {actual})"),
    ],
)
def test_per_class_queries(name: str, expected: str) -> None:
    sel = 'namespace="ml",deployment="churn",variant="canary",version="1.5.0"'
    parts = {
        "tp": f'sum(increase(modelship_feedback_confusion_total{{{sel},true_class="yes",'
        'class="yes"}[30s]))',
        "predicted": f'sum(increase(modelship_feedback_confusion_total{{{sel},class="yes"}}[30s]))',
        "actual": f'sum(increase(modelship_feedback_confusion_total{{{sel},true_class="yes"}}'
        "[30s]))",
    }
    check = MetricCheck(name=name, class_name="yes", min=80)
    assert metric_query(check, CANARY) == expected.format(**parts)


def test_selector_names_namespace_deployment_variant_and_version() -> None:
    assert selector(CANARY) == (
        'namespace="ml",deployment="churn",variant="canary",version="1.5.0"'
    )
    no_version = Scope("ml", "churn", "stable", timedelta(seconds=30))
    assert "version" not in selector(no_version)
    other = label_scheme("kubernetes_namespace")
    assert selector(CANARY, other).startswith('kubernetes_namespace="ml",deployment="churn"')


def test_only_the_namespace_label_depends_on_the_prometheus() -> None:
    """Every other label a built-in query selects by is one the processes export
    themselves, named by their contracts."""
    scheme = label_scheme("ns")
    assert scheme == LabelScheme(namespace="ns")
    own = {scheme.deployment, scheme.variant, scheme.version, scheme.handler}
    assert own <= set(serving_contract.BASE_LABELS) | {serving_contract.HANDLER}
    assert {scheme.router_deployment, scheme.router_variant} == {
        router_contract.DEPLOYMENT,
        router_contract.VARIANT,
    }
    for check in ("success-rate", "latency-p99", "accuracy", "mae", "rmse"):
        query = metric_query(MetricCheck(name=check, max=1), CANARY, scheme)
        assert "modelship_io" not in query and 'ns="ml"' in query
        assert 'namespace="ml"' not in query


def test_no_contract_label_clashes_with_a_scrape_target_label() -> None:
    """A process label named like a target label (``endpoint``, ``pod``, ...) is renamed
    ``exported_<name>`` by a scrape with honor_labels false, and queries miss it."""
    labels = {
        v
        for k, v in vars(serving_contract).items()
        if k.isupper()
        and k != "DEPLOYMENT_ENV"
        and isinstance(v, str)
        and not v.startswith(("modelship_", "v1_", "v2_"))
    }
    labels |= {getattr(router_contract, k) for k in ("DEPLOYMENT", "VARIANT", "CODE",
               "FROM_VARIANT", "OUTCOME", "RESULT", "REASON")}  # fmt: skip
    assert "handler" in labels and "deployment" in labels
    assert not labels & SCRAPE_TARGET_LABELS


def test_label_values_are_escaped() -> None:
    odd = Scope('a"b', "c\\d", "canary", timedelta(seconds=1))
    assert 'namespace="a\\"b"' in selector(odd)
    assert 'deployment="c\\\\d"' in selector(odd)


@pytest.mark.parametrize(
    ("name", "pieces"),
    [
        ("success-rate", ['code!~"5.."', "100 * sum(increase(", "[30s]", "v1_predict|v2_infer"]),
        ("latency-p99", ["histogram_quantile(0.99, sum by (le)", "_bucket{", "rate("]),
        ("accuracy", ["modelship_feedback_correct_total", "/ sum(increase(modelship_feedback_"]),
        (
            "mae",
            [
                "sum(increase(modelship_feedback_absolute_error_sum{",
                "/ sum(increase(modelship_feedback_absolute_error_count{",
            ],
        ),
        (
            "rmse",
            [
                "sqrt(sum(increase(modelship_feedback_squared_error_total{",
                "/ sum(increase(modelship_feedback_absolute_error_count{",
            ],
        ),
    ],
)
def test_builtin_queries(name: str, pieces: list[str]) -> None:
    check = (
        MetricCheck(name=name, min=0) if name != "latency-p99" else MetricCheck(name=name, max=1)
    )
    query = metric_query(check, CANARY)
    for piece in pieces:
        assert piece in query
    assert 'variant="canary"' in query and 'version="1.5.0"' in query


def test_log_loss_divides_the_summed_loss_by_the_rows_scored() -> None:
    sel = 'namespace="ml",deployment="churn",variant="canary",version="1.5.0"'
    assert metric_query(MetricCheck(name="log-loss", max=0.5), CANARY) == (
        f"sum(increase(modelship_feedback_log_loss_sum{{{sel}}}[30s]))"
        f" / sum(increase(modelship_feedback_log_loss_count{{{sel}}}[30s]))"
    )


def test_roc_auc_asks_for_the_classes_score_histograms_by_side() -> None:
    check = MetricCheck(name="roc-auc", class_name="yes", min=0.9)
    assert metric_query(check, CANARY) == (
        'sum by (positive, le) (increase(modelship_feedback_score_bucket{namespace="ml",'
        'deployment="churn",variant="canary",version="1.5.0",class="yes"}[30s]))'
    )
    assert {"roc-auc"} == VECTOR_METRICS


def test_drift_is_the_worst_features_psi_on_any_pod() -> None:
    assert metric_query(MetricCheck(name="drift", max=0.25), CANARY) == (
        'max(modelship_input_feature_psi{namespace="ml",deployment="churn",variant="canary",'
        'version="1.5.0"})'
    )


def test_requests_count_only_inference() -> None:
    assert requests_query(CANARY) == (
        'sum(increase(modelship_requests_total{namespace="ml",deployment="churn",'
        'variant="canary",version="1.5.0",handler=~"v1_predict|v2_infer|grpc_infer"}[30s]))'
    )


def test_custom_template_fills_every_placeholder() -> None:
    template = (
        'sum(rate(errors_total{ns="{{namespace}}",app="{{ name }}",v="{{  variant }}",'
        'ver="{{ version }}"}[{{ interval }}]))'
    )
    assert render_template(template, CANARY) == (
        'sum(rate(errors_total{ns="ml",app="churn",v="canary",ver="1.5.0"}[30s]))'
    )
    check = MetricCheck(name="errors", query=template, max=1)
    assert metric_query(check, CANARY.with_variant("stable", "1.4.0")).count('"stable"') == 1


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("up{job='{{ target }}'}", "unknown placeholder '{{ target }}'"),
        ("rate(x[{{interval}}]) + {{ Namespace }}", "unknown placeholder '{{ Namespace }}'"),
        ("up{job='{{ name }'}", "unbalanced"),
        ("up{job='{{ }}'}", "unknown placeholder '{{ }}'"),
    ],
)
def test_unknown_placeholders_are_refused(template: str, words: str) -> None:
    assert any(words in p for p in template_problems(template))
    with pytest.raises(TemplateError, match=r"placeholder|unbalanced") as info:
        render_template(template, CANARY)
    assert "{{ namespace }}" in str(info.value) or "unbalanced" in str(info.value)


def test_plain_promql_braces_are_not_placeholders() -> None:
    query = 'sum(x{a="b"}) / on() group_left sum(y{c=~"d{1,2}"})'
    assert template_problems(query) == []
    assert render_template(query, CANARY) == query


def test_business_metric_queries() -> None:
    since = CANARY.with_interval(timedelta(minutes=20))
    successes, trials = business_queries(BusinessMetric(), since)
    # One trial per user (or per request without the sticky key), not per row.
    assert "modelship_feedback_units_correct_total" in successes and "[1200s]" in successes
    assert "modelship_feedback_units_total" in trials
    custom = BusinessMetric(
        name="conversion",
        successes='sum(increase(buys_total{v="{{ variant }}"}[{{ interval }}]))',
        trials='sum(increase(visits_total{v="{{ variant }}"}[{{ interval }}]))',
    )
    assert business_queries(custom, since) == (
        'sum(increase(buys_total{v="canary"}[1200s]))',
        'sum(increase(visits_total{v="canary"}[1200s]))',
    )


def test_agreement_queries_use_the_router_deployment_label() -> None:
    agree, total = agreement_queries(CANARY)
    assert 'deployment="churn"' in agree and 'result="agree"' in agree
    assert 'result=~"agree|disagree"' in total
