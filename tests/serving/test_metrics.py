"""Metric helpers: drift summary window and per-version labels."""

from __future__ import annotations

import numpy as np
import pytest
from modelship_serving import contract
from modelship_serving.drift import DriftSummary
from modelship_serving.metrics import LATENCY_BUCKETS, ServingMetrics
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def test_drift_window_keeps_only_recent_rows_across_wraparound() -> None:
    drift = DriftSummary({"model": "m", "version": "1", "variant": "stable"}, ["a", "b"], 16)
    drift.observe(np.full((10, 3), 100.0))  # the third feature is beyond max_features
    for _ in range(4):
        drift.observe(np.ones((5, 3)))  # 20 rows of ones push the hundreds out
    families = {f.name: f for f in drift.collect()}
    assert families["modelship_input_rows"].samples[0].value == 30
    sums = {s.labels["feature"]: s.value for s in families["modelship_input_feature_sum"].samples}
    assert sums == {"a": 1020.0, "b": 1020.0}
    means = [s.value for s in families["modelship_input_feature_window_mean"].samples]
    assert means == [1.0, 1.0]
    quantiles = families["modelship_input_feature_window_quantile"].samples
    assert len(quantiles) == 2 * 5 and all(s.value == 1.0 for s in quantiles)


def loaded(metrics: ServingMetrics, classes: list[str] | None = None) -> ServingMetrics:
    metrics.model_loaded(
        sha256="ab" * 32,
        sklearn_version="1.9",
        sklearn_saved_version="1.9",
        inference_path="sklearn",
        estimator="x.Y",
        load_seconds=0.5,
        classes=classes,
        feature_names=["f0"],
        drift_window=16,
    )
    metrics.observe_request("v1_predict", 200, 0.0002)
    metrics.observe_request("health", 200, 0.0001)
    metrics.feedback_total.inc()
    metrics.feedback_correct.inc()
    metrics.feedback_unknown.inc()
    metrics.feedback_error.observe(0.1)
    if classes is None:
        metrics.observe_value(1.5)
    assert metrics.drift is not None
    metrics.drift.observe(np.array([[2.0]]))
    return metrics


def contract_names() -> tuple[set[str], set[str]]:
    """(family names, label names) that the contract module declares."""
    constants = {k: v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str)}
    families = {v for v in constants.values() if v.startswith("modelship_")}
    labels = {v for k, v in constants.items() if v not in families and k != "DEPLOYMENT_ENV"}
    labels -= set(contract.INFERENCE_HANDLERS)
    return families, labels


@pytest.mark.parametrize("classes", [["no", "yes"], None], ids=["classifier", "regressor"])
def test_every_exported_name_is_the_contracts(classes: list[str] | None) -> None:
    """What /metrics exports is exactly what the contract names: a series or label added
    without it would be one the operator's queries and the chart's rules cannot rely on."""
    metrics = loaded(ServingMetrics("churn", "1.5.0", "canary", deployment="churn"), classes)
    text = generate_latest(metrics.registry).decode()
    families, labels = contract_names()
    seen_labels: set[str] = set()
    for family in text_string_to_metric_families(text):
        assert family.name in families, family.name
        kind = "counter" if family.name in contract.COUNTERS else None
        kind = "histogram" if family.name in contract.HISTOGRAMS else kind
        if kind is not None:
            assert family.type == kind, family.name
        for sample in family.samples:
            seen_labels |= set(sample.labels) - {"le"}
    info_labels = {"sha256", "sklearn_version", "sklearn_saved_version", "inference_path",
                   "estimator"}  # fmt: skip
    assert seen_labels - info_labels <= labels
    assert set(contract.BASE_LABELS) | {contract.HANDLER, contract.CODE} <= seen_labels
    assert f'{contract.total(contract.REQUESTS)}{{code="200",deployment="churn",' in text


def test_the_deployment_label_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(contract.DEPLOYMENT_ENV, "churn-prod")
    assert ServingMetrics("churn", "1", "stable").base["deployment"] == "churn-prod"
    assert ServingMetrics("churn", "1", "stable", deployment="x").base["deployment"] == "x"
    monkeypatch.delenv(contract.DEPLOYMENT_ENV)
    assert ServingMetrics("churn", "1", "stable").base["deployment"] == ""


def test_every_series_carries_deployment_model_version_variant() -> None:
    metrics = ServingMetrics("churn", "1.5.0", "canary", deployment="churn-prod")
    metrics.model_loaded(
        sha256="ab" * 32,
        sklearn_version="1.9",
        sklearn_saved_version="1.9",
        inference_path="sklearn",
        estimator="x.Y",
        load_seconds=0.5,
        classes=["no", "yes"],
        feature_names=["f0"],
        drift_window=16,
    )
    metrics.observe_request("v1_predict", 200, 0.0002)
    metrics.observe_classes(np.array([1, 1, 0]))
    metrics.drift.observe(np.array([[2.0]]))
    text = generate_latest(metrics.registry).decode()
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert series
    for line in series:
        assert 'model="churn"' in line and 'version="1.5.0"' in line and 'variant="canary"' in line
        assert 'deployment="churn-prod"' in line
    assert 'modelship_predictions_total{class="yes",deployment="churn-prod",model="churn"' in text
    assert min(LATENCY_BUCKETS) <= 0.0001
    assert "_created" not in text
