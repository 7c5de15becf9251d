"""Prometheus series for one served model; every series carries deployment, model, version
and variant. Metric and label names come from :mod:`.contract`, which the operator's queries
import too.

Each app gets its own registry (no module globals). The series touched on every request
(requests, latency, predictions, in-flight) are plain Python numbers updated by the event loop,
which owns them, and turned into Prometheus families only when /metrics is scraped: that costs a
fraction of prometheus_client's locked counters on the hot path. Everything else uses
prometheus_client directly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
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
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from . import contract as c
from .drift import DriftSummary
from .feedback import UNJOINED_REASONS
from .quality import OFF, QualityPlan

BASE_LABELS = c.BASE_LABELS
INFERENCE_ENDPOINTS = c.INFERENCE_HANDLERS
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


class FastHistogram:
    """Bucket counts and a sum, updated without locks by the one thread that owns it."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            out.append((floatToGoString(bound), float(running)))  # type: ignore[no-untyped-call]
        return out


class HotSeries:
    """Collector for the per-request series (see module docstring)."""

    def __init__(self, base_values: tuple[str, ...]) -> None:
        self.base = list(base_values)
        self.requests: dict[tuple[str, int], int] = {}
        self.durations: dict[str, FastHistogram] = {}
        self.classes: list[str] = []
        self.class_counts: list[int] = []
        self.values: FastHistogram | None = None
        self.in_flight = 0

    def collect(self) -> Iterator[Metric]:
        labels = list(BASE_LABELS)
        requests = CounterMetricFamily(
            c.REQUESTS,
            "Requests (HTTP, and gRPC by the HTTP code of the same answer) by handler and code.",
            labels=[*labels, c.HANDLER, c.CODE],
        )
        for (endpoint, code), count in list(self.requests.items()):
            requests.add_metric([*self.base, endpoint, str(code)], float(count))
        yield requests
        duration = HistogramMetricFamily(
            c.REQUEST_DURATION_SECONDS,
            "Time from request start to the end of the response, by handler.",
            labels=[*labels, c.HANDLER],
        )
        for endpoint, histogram in list(self.durations.items()):
            duration.add_metric([*self.base, endpoint], histogram.buckets(), histogram.total)
        yield duration
        in_flight = GaugeMetricFamily(
            c.REQUESTS_IN_FLIGHT, "Requests being served now.", labels=labels
        )
        in_flight.add_metric(self.base, float(self.in_flight))
        yield in_flight
        predictions = CounterMetricFamily(
            c.PREDICTIONS,
            "Predicted rows by class (classifiers).",
            labels=[*labels, c.CLASS],
        )
        for name, count in zip(self.classes, self.class_counts, strict=True):
            predictions.add_metric([*self.base, name], float(count))
        yield predictions
        if self.values is not None:
            values = HistogramMetricFamily(
                c.PREDICTION_VALUE, "Predicted values (regressors).", labels=labels
            )
            buckets = self.values.buckets()
            values.add_metric(self.base, buckets, self.values.total)
            if not any(s.name.endswith("_count") for s in values.samples):
                # prometheus_client leaves out _count/_sum when buckets are negative; the mean
                # prediction (sum / count) is what output-drift alerts want, so keep them.
                labels_map = dict(zip(labels, self.base, strict=True))
                values.samples.append(
                    Sample(f"{c.PREDICTION_VALUE}_count", labels_map, buckets[-1][1])
                )
                values.samples.append(
                    Sample(f"{c.PREDICTION_VALUE}_sum", labels_map, self.values.total)
                )
            yield values


class ServingMetrics:
    """All series of one server process.

    ``deployment`` names the ModelDeployment; None takes it from ``MODELSHIP_DEPLOYMENT``
    (which the operator sets on every serving pod), "" outside one.
    """

    def __init__(
        self, model: str, version: str, variant: str, deployment: str | None = None
    ) -> None:
        # *_created series double the scrape size for no use here
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        if deployment is None:
            deployment = c.deployment_from_env()
        values = (deployment, model, version, variant)
        self.base = dict(zip(BASE_LABELS, values, strict=True))
        base = list(BASE_LABELS)
        self._values = values
        r = self.registry
        self.hot = HotSeries(values)
        r.register(self.hot)
        self.feedback_total = Counter(
            c.FEEDBACK,
            "Predicted rows for which ground truth arrived.",
            base,
            registry=r,
        ).labels(*values)
        self.feedback_correct = Counter(
            c.FEEDBACK_CORRECT,
            "Predicted rows whose class matched the ground truth (classifiers).",
            base,
            registry=r,
        ).labels(*values)
        self.feedback_error = Summary(
            c.FEEDBACK_ABSOLUTE_ERROR,
            "Absolute error of predictions against ground truth (regressors).",
            base,
            registry=r,
        ).labels(*values)
        self.feedback_squared_error = Counter(
            c.FEEDBACK_SQUARED_ERROR,
            "Sum of squared errors of predictions against ground truth (regressors); with "
            "the absolute error's count it gives the RMSE.",
            base,
            registry=r,
        ).labels(*values)
        confusion = Counter(
            c.FEEDBACK_CONFUSION,
            "Predicted rows with ground truth, by the true class and the predicted class "
            "(classifiers; true_class other: a label that is none of the model's classes).",
            [*base, c.TRUE_CLASS, c.CLASS],
            registry=r,
        )
        self._confusion = confusion
        self._confusion_values = values
        self.feedback_pinned = Counter(
            c.FEEDBACK_PINNED,
            "Predicted rows of pinned requests (testers a routing match rule sent to this "
            "variant) for which ground truth arrived; kept out of the other feedback series.",
            base,
            registry=r,
        ).labels(*values)
        self.feedback_unknown = Counter(
            c.FEEDBACK_UNKNOWN,
            "Feedback for request ids that were unknown or had expired.",
            base,
            registry=r,
        ).labels(*values)
        unjoined = Counter(
            c.FEEDBACK_UNJOINED,
            "Feedback request ids not joined to a prediction, by reason: expired (the "
            "prediction's window passed) or unknown (this pod never predicted it).",
            [*base, c.REASON],
            registry=r,
        )
        self.feedback_unjoined = {
            reason: unjoined.labels(*values, reason) for reason in UNJOINED_REASONS
        }
        self.feedback_units = Counter(
            c.FEEDBACK_UNITS,
            "Units (users by the router's x-modelship-unit; a request without one is its own "
            "unit) whose first unpinned feedback this pod joined, each counted once.",
            base,
            registry=r,
        ).labels(*values)
        self.feedback_units_correct = Counter(
            c.FEEDBACK_UNITS_CORRECT,
            "Counted units whose feedback's first row matched the prediction (classifiers).",
            base,
            registry=r,
        ).labels(*values)
        self.load_seconds = Gauge(
            c.MODEL_LOAD_SECONDS,
            "Seconds spent fetching, verifying and loading the model.",
            base,
            registry=r,
        ).labels(*values)
        self.ready = Gauge(c.READY, "1 while the server accepts traffic.", base, registry=r).labels(
            *values
        )
        self._info = Gauge(
            c.MODEL_INFO,
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
        self.drift: DriftSummary | None = None
        # Bound in model_loaded when the model and the settings give them (quality.py).
        self.feedback_log_loss: Any = None
        self.feedback_scores: dict[tuple[str, bool], Any] = {}

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
        quality: QualityPlan = OFF,
    ) -> None:
        """Publish what was loaded and bind the per-class, output, drift and (as ``quality``
        says) log-loss and score series."""
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
            self.hot.classes = [str(c) for c in classes]
            self.hot.class_counts = [0] * len(classes)
        else:
            self.hot.values = FastHistogram(PREDICTION_BUCKETS)
        self.drift = DriftSummary(self.base, feature_names, drift_window)
        self.registry.register(self.drift)
        # Success rate and latency are judged by increase()/rate() over a window: a series
        # whose first sample lands inside the window shows no increase there, so the first
        # failures of a new version would go unseen for an interval. Publish the inference
        # series at zero from the start.
        for endpoint in INFERENCE_ENDPOINTS:
            for code in (200, 500):
                self.hot.requests.setdefault((endpoint, code), 0)
            self.hot.durations.setdefault(endpoint, FastHistogram(LATENCY_BUCKETS))
        self._bind_quality(quality)

    def _bind_quality(self, quality: QualityPlan) -> None:
        # Registered only when exported, and at zero (see above) for every class and both
        # values of positive.
        base, values, r = list(BASE_LABELS), self._values, self.registry
        if quality.log_loss:
            self.feedback_log_loss = Summary(
                c.FEEDBACK_LOG_LOSS,
                "Log loss of feedback (classifiers): sum of -ln(probability of the true "
                "class) over rows whose truth is one of the classes, and their count.",
                base,
                registry=r,
            ).labels(*values)
        if quality.score_classes:
            scores = Histogram(
                c.FEEDBACK_SCORE,
                "Probability the model gave the class to feedback rows, by whether the "
                "truth is that class (positive); one-vs-rest ROC AUC of the class.",
                [*base, c.CLASS, c.POSITIVE],
                registry=r,
                buckets=c.SCORE_BUCKETS,
            )
            self.feedback_scores = {
                (name, positive == "true"): scores.labels(*values, name, positive)
                for name in quality.score_classes
                for positive in c.POSITIVE_VALUES
            }

    def observe_log_losses(self, terms: Sequence[float]) -> None:
        """Add feedback rows' log-loss terms (ignored when the log loss is not exported)."""
        summary = self.feedback_log_loss
        if summary is not None:
            for term in terms:
                summary.observe(term)

    def observe_scores(self, scores: Sequence[tuple[str, bool, float]]) -> None:
        """Add (class, truth is that class, probability) of feedback rows."""
        children = self.feedback_scores
        for name, positive, score in scores:
            child = children.get((name, positive))
            if child is not None:
                child.observe(score)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        hot = self.hot
        key = (endpoint, code)
        hot.requests[key] = hot.requests.get(key, 0) + 1
        histogram = hot.durations.get(endpoint)
        if histogram is None:
            histogram = hot.durations[endpoint] = FastHistogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def observe_confusion(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Count feedback rows by (true class, predicted class)."""
        for (truth, predicted), rows in counts.items():
            self._confusion.labels(*self._confusion_values, truth, predicted).inc(rows)

    def observe_classes(self, class_indices: np.ndarray) -> None:
        """Count predicted rows per class, given indices into ``classes_``."""
        counts = self.hot.class_counts
        if len(class_indices) == 1:
            counts[int(class_indices[0])] += 1
            return
        for index, count in enumerate(np.bincount(class_indices, minlength=len(counts)).tolist()):
            counts[index] += count

    def count_class(self, index: int) -> None:
        self.hot.class_counts[index] += 1

    def observe_value(self, value: float) -> None:
        histogram = self.hot.values
        if histogram is not None:
            histogram.observe(value)

    def observe_values(self, values: np.ndarray) -> None:
        histogram = self.hot.values
        if histogram is None:
            return
        for value in values.reshape(-1).tolist():
            histogram.observe(value)
