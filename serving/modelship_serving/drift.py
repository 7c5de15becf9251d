"""A bounded-cardinality summary of the input features, for drift dashboards and alerts.

Per feature (at most ``max_features`` of them): a running sum (with a row counter, so PromQL can
take the mean over any window as a ratio of rates), and the mean and quantiles of the most recent
``window`` rows; missing values (NaN, from imputed columns of tabular models) are left out of
sums, means and quantiles. A request costs one slice copy into a ring buffer (a one-row request
only an append to a short list of pending rows, copied in as one block); sums are folded in lazily
(before unsummed rows would be overwritten, and at scrape time), quantiles only at scrape time.

With a reference profile of the training inputs (saved with the model, see :mod:`.profile`),
each feature that has one also gets the population stability index of its recent window
against it, computed at scrape time once the window holds ``PSI_MIN_ROWS`` non-missing values
of the feature (fewer: no sample, too few rows to judge).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import contract as c
from .profile import FeatureProfile, psi

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# One-row requests queue their rows as Python lists and enter the buffer this many at a time.
PENDING_ROWS = 64


class DriftSummary:
    """Collector (prometheus_client) of per-feature input statistics."""

    def __init__(
        self,
        base_labels: dict[str, str],
        feature_names: Sequence[str],
        window: int,
    ) -> None:
        self._labels = base_labels
        self._names = [name[:64] for name in feature_names]
        self._k = len(self._names)
        self._buffer = np.zeros((window, self._k))
        self._window = window
        self._position = 0
        self._filled = 0
        self._unsummed = 0
        self._sums = np.zeros(self._k)
        self._rows = 0
        self._pending: list[list[float]] = []
        self._references: list[FeatureProfile | None] = []

    def use_reference(self, references: Sequence[FeatureProfile | None]) -> None:
        """Export the PSI of each feature against its reference profile (one per feature, in
        the order of the feature names; None: that feature has none)."""
        if len(references) != self._k:
            raise ValueError(f"{len(references)} reference profiles for {self._k} features")
        self._references = list(references)

    @property
    def has_reference(self) -> bool:
        """True when some feature has a reference profile (its PSI is exported)."""
        return any(r is not None for r in self._references)

    def observe_row(self, row: list[float]) -> None:
        """Fold one row in, given as plain floats (the one-row request path)."""
        pending = self._pending
        pending.append(row)
        if len(pending) >= PENDING_ROWS:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if self._pending:
            rows = np.array(self._pending, dtype=np.float64)
            self._pending = []
            self.observe(rows)

    def observe(self, features: np.ndarray) -> None:
        """Fold a request's rows in (called on the event loop, after the prediction)."""
        n = features.shape[0]
        self._rows += n
        if self._k == 0:
            return
        window = self._window
        if self._unsummed + n > window:
            self._fold()
        if n == 1:
            self._buffer[self._position] = features[0, : self._k]
            self._position = (self._position + 1) % window
        elif n >= window:
            self._sums += np.nansum(features[:-window, : self._k], axis=0)
            self._buffer[:] = features[-window:, : self._k]
            self._position = 0
            n = window
        else:
            cols = features[:, : self._k]
            end = self._position + n
            if end <= window:
                self._buffer[self._position : end] = cols
            else:
                split = window - self._position
                self._buffer[self._position :] = cols[:split]
                self._buffer[: end - window] = cols[split:]
            self._position = end % window
        self._unsummed += n
        self._filled = min(window, self._filled + n)

    def _fold(self) -> None:
        """Add the rows not yet summed (the most recent ``_unsummed`` in ring order)."""
        u, pos = self._unsummed, self._position
        if u == 0:
            return
        if u <= pos:
            self._sums += np.nansum(self._buffer[pos - u : pos], axis=0)
        else:
            self._sums += np.nansum(self._buffer[:pos], axis=0)
            self._sums += np.nansum(self._buffer[self._window - (u - pos) :], axis=0)
        self._unsummed = 0

    def collect(self) -> Iterator[Metric]:
        self._flush_pending()
        self._fold()
        base = list(self._labels)
        values = list(self._labels.values())
        rows = CounterMetricFamily(
            "modelship_input_rows", "Input rows seen (denominator for feature sums).", labels=base
        )
        rows.add_metric(values, float(self._rows))
        yield rows
        if not self._names:
            return
        labels = [*base, "feature"]
        sums = CounterMetricFamily(
            "modelship_input_feature_sum",
            "Running sum of each input feature (mean = rate(sum) / rate(rows)).",
            labels=labels,
        )
        mean = GaugeMetricFamily(
            "modelship_input_feature_window_mean",
            "Mean of each input feature over the most recent rows.",
            labels=labels,
        )
        quantile = GaugeMetricFamily(
            "modelship_input_feature_window_quantile",
            "Quantiles of each input feature over the most recent rows.",
            labels=[*labels, "quantile"],
        )
        for name, total in zip(self._names, self._sums.tolist(), strict=True):
            sums.add_metric([*values, name], total)
        if self._filled:
            recent = self._buffer[: self._filled]
            with warnings.catch_warnings():  # an all-missing column has no mean: NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                means = np.nanmean(recent, axis=0).tolist()
                qs = np.nanquantile(recent, QUANTILES, axis=0)
            for j, name in enumerate(self._names):
                mean.add_metric([*values, name], means[j])
                for q, row in zip(QUANTILES, qs, strict=True):
                    quantile.add_metric([*values, name, str(q)], float(row[j]))
        yield sums
        yield mean
        yield quantile
        if self.has_reference:
            yield self._psi(values, labels)

    def _psi(self, values: list[str], labels: list[str]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            c.INPUT_FEATURE_PSI,
            "Population stability index of each input feature's recent rows against the "
            "reference profile saved with the model.",
            labels=labels,
        )
        recent = self._buffer[: self._filled]
        for j, (name, reference) in enumerate(zip(self._names, self._references, strict=True)):
            if reference is None:
                continue
            column = recent[:, j]
            column = column[~np.isnan(column)]
            if column.shape[0] < min(c.PSI_MIN_ROWS, self._window):
                continue
            index = psi(reference, column)
            if index is not None:
                family.add_metric([*values, name], index)
        return family
