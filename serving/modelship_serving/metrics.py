"""Prometheus series for one served model; every series carries model, version and variant.

Each app gets its own registry (no module globals), and labelled children are bound once and
cached, so the hot path pays a dict lookup instead of prometheus_client's label resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    disable_created_metrics,
)

from .drift import DriftSummary

BASE_LABELS = ("model", "version", "variant")
# Fine enough for sub-millisecond requests, wide enough for a slow batch.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.0075,
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
)


def _one_two_five(low: float, high: float) -> list[float]:
    out: list[float] = []
    decade = low
    while decade <= high:
        out.extend(decade * m for m in (1, 2, 5))
        decade *= 10
    return [round(v, 10) for v in out if v <= high]


_POSITIVE = _one_two_five(0.01, 1e6)
PREDICTION_BUCKETS = (*(-v for v in reversed(_POSITIVE)), 0.0, *_POSITIVE)


class ServingMetrics:
    """All series of one server process."""

    def __init__(self, model: str, version: str, variant: str) -> None:
        disable_created_metrics()  # *_created series double the scrape size for no use here
        self.registry = CollectorRegistry(auto_describe=True)
        self.base = {"model": model, "version": version, "variant": variant}
        base = list(BASE_LABELS)
        values = (model, version, variant)
        self._values = values
        r = self.registry
        self.requests = Counter(
            "modelship_requests",
            "HTTP requests by endpoint and status code.",
            [*base, "endpoint", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "modelship_request_duration_seconds",
            "Time from request start to the end of the response, by endpoint.",
            [*base, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "modelship_requests_in_flight", "Requests being served now.", base, registry=r
        ).labels(*values)
        self.predictions = Counter(
            "modelship_predictions",
            "Predicted rows by class (classifiers).",
            [*base, "class"],
            registry=r,
        )
        self.prediction_value = Histogram(
            "modelship_prediction_value",
            "Predicted values (regressors).",
            base,
            buckets=PREDICTION_BUCKETS,
            registry=r,
        ).labels(*values)
        self.feedback_total = Counter(
            "modelship_feedback",
            "Predicted rows for which ground truth arrived.",
            base,
            registry=r,
        ).labels(*values)
        self.feedback_correct = Counter(
            "modelship_feedback_correct",
            "Predicted rows whose class matched the ground truth (classifiers).",
            base,
            registry=r,
        ).labels(*values)
        self.feedback_error = Summary(
            "modelship_feedback_absolute_error",
            "Absolute error of predictions against ground truth (regressors).",
            base,
            registry=r,
        ).labels(*values)
        self.feedback_unknown = Counter(
            "modelship_feedback_unknown",
            "Feedback for request ids that were unknown or had expired.",
            base,
            registry=r,
        ).labels(*values)
        self.load_seconds = Gauge(
            "modelship_model_load_seconds",
            "Seconds spent fetching, verifying and loading the model.",
            base,
            registry=r,
        ).labels(*values)
        self.ready = Gauge(
            "modelship_ready", "1 while the server accepts traffic.", base, registry=r
        ).labels(*values)
        self._info = Gauge(
            "modelship_model_info",
            "The served model (always 1); labels describe the artifact and inference path.",
            [
                *base,
                "sha256",
                "sklearn_version",
                "sklearn_saved_version",
                "inference_path",
                "estimator",
            ],
            registry=r,
        )
        self._request_children: dict[tuple[str, int], Any] = {}
        self._duration_children: dict[str, Any] = {}
        self._class_children: list[Any] = []

    def model_loaded(
        self,
        *,
        sha256: str,
        sklearn_version: str,
        sklearn_saved_version: str,
        inference_path: str,
        estimator: str,
        load_seconds: float,
        classes: Sequence[Any] | None,
        feature_names: Sequence[str],
        drift_window: int,
    ) -> None:
        """Publish what was loaded and bind the per-class and drift series."""
        self._info.labels(
            *self._values,
            sha256,
            sklearn_version,
            sklearn_saved_version,
            inference_path,
            estimator,
        ).set(1)
        self.load_seconds.set(load_seconds)
        if classes is not None:
            self._class_children = [self.predictions.labels(*self._values, str(c)) for c in classes]
        self.drift = DriftSummary(self.base, feature_names, drift_window)
        self.registry.register(self.drift)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        key = (endpoint, code)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(*self._values, endpoint, str(code))
            self._request_children[key] = child
        child.inc()
        duration = self._duration_children.get(endpoint)
        if duration is None:
            duration = self.duration.labels(*self._values, endpoint)
            self._duration_children[endpoint] = duration
        duration.observe(seconds)

    def observe_classes(self, class_indices: np.ndarray) -> None:
        """Count predicted rows per class, given indices into ``classes_``."""
        children = self._class_children
        if len(class_indices) == 1:
            children[int(class_indices[0])].inc()
            return
        for index, count in enumerate(np.bincount(class_indices, minlength=len(children))):
            if count:
                children[index].inc(int(count))

    def observe_values(self, values: np.ndarray) -> None:
        for value in values.reshape(-1).tolist():
            self.prediction_value.observe(value)
