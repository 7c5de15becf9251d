"""The ROC AUC from score histograms (pure), checked against scikit-learn's roc_auc_score on
the same rows: exactly when the scores are the bins', and within the bins' resolution on a
real model's probabilities."""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest
from modelship_operator.analysis.ranking import auc_from_bins, bin_counts, roc_auc
from modelship_operator.analysis.results import NoValues, QueryError, Sample, Value, Vector
from modelship_serving.contract import POSITIVE, SCORE_BUCKETS
from sklearn.metrics import roc_auc_score

BOUNDS = [*SCORE_BUCKETS, math.inf]


def histogram(scores: np.ndarray, truth: np.ndarray) -> Vector:
    """What the serving pods' score histogram of one class answers, summed: cumulative
    counts per (positive, le), as Prometheus writes the labels."""
    samples = []
    for side, rows in (("true", scores[truth]), ("false", scores[~truth])):
        for bound in BOUNDS:
            le = "+Inf" if bound == math.inf else repr(float(bound))
            samples.append(Sample({POSITIVE: side, "le": le}, float((rows <= bound).sum())))
    return Vector(tuple(samples))


def binned(scores: np.ndarray) -> np.ndarray:
    """Each score replaced by its bin's index: what the histogram can tell apart."""
    return np.array([bisect.bisect_left(BOUNDS, s) for s in scores])


def auc(result: Vector) -> float:
    answer = roc_auc(result, "q")
    assert isinstance(answer, Value), answer
    return answer.value


@pytest.mark.parametrize("seed", range(5))
def test_equals_sklearn_on_the_scores_the_bins_tell_apart(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random(400) < 0.3
    scores = np.clip(rng.normal(0.35 + 0.3 * truth, 0.2), 0, 1)
    assert auc(histogram(scores, truth)) == pytest.approx(
        roc_auc_score(truth, binned(scores)), abs=1e-12
    )


def test_a_real_models_probabilities_give_sklearns_auc() -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.5, random_state=0)
    # A weak model (two features) so that the classes overlap and the AUC is not 1.
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train[:, :2], y_train)
    for cls in (0, 1):
        scores = model.predict_proba(X_test[:, :2])[:, cls]
        truth = y_test == cls
        exact = roc_auc_score(truth, scores)
        assert 0.8 < exact < 0.99
        assert auc(histogram(scores, truth)) == pytest.approx(
            roc_auc_score(truth, binned(scores)), abs=1e-12
        )
        assert auc(histogram(scores, truth)) == pytest.approx(exact, abs=0.01)


def test_perfect_inverted_and_tied_rankings() -> None:
    assert auc_from_bins([0, 0, 5], [5, 0, 0]) == 1.0
    assert auc_from_bins([5, 0, 0], [0, 0, 5]) == 0.0
    assert auc_from_bins([0, 4, 0], [0, 2, 0]) == 0.5  # all tied: half each
    assert auc_from_bins([0, 0], [3, 0]) is None  # no positives: undefined
    assert auc_from_bins([2, 1], [0, 0]) is None


def test_no_feedback_rows_is_no_value() -> None:
    empty = histogram(np.array([]), np.array([], dtype=bool))
    assert isinstance(roc_auc(empty, "q"), NoValues)
    assert isinstance(roc_auc(Vector(()), "q"), NoValues)
    only_negatives = histogram(np.array([0.2, 0.4]), np.array([False, False]))
    assert isinstance(roc_auc(only_negatives, "q"), NoValues)


def test_extrapolated_counts_that_dip_count_as_empty_bins() -> None:
    assert bin_counts({0.1: 2.0, 0.5: 1.9, math.inf: 4.0}) == [2.0, 0.0, 2.0]


def test_errors_pass_through_and_foreign_series_are_refused() -> None:
    error = QueryError("timeout", "slow")
    assert roc_auc(error, "q") is error
    odd = roc_auc(Vector((Sample({"le": "0.5"}, 1.0),)), "q")
    assert isinstance(odd, QueryError) and POSITIVE in odd.message
