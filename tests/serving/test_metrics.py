"""Metric helpers: drift summary window and per-version labels."""

from __future__ import annotations

import numpy as np
from modelship_serving.drift import DriftSummary
from modelship_serving.metrics import LATENCY_BUCKETS, ServingMetrics
from prometheus_client import generate_latest


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


def test_every_series_carries_model_version_variant() -> None:
    metrics = ServingMetrics("churn", "1.5.0", "canary")
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
    assert 'modelship_predictions_total{class="yes",model="churn"' in text
    assert min(LATENCY_BUCKETS) <= 0.0001
    assert "_created" not in text
