"""Prediction store bounds/expiry and feedback scoring."""

from __future__ import annotations

import pytest
from modelship_serving.errors import ServingError
from modelship_serving.feedback import (
    REASON_EXPIRED,
    REASON_UNKNOWN,
    PredictionStore,
    Stored,
    same_label,
    score_feedback,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_store_expires_entries_after_ttl() -> None:
    clock = Clock()
    store = PredictionStore(max_rows=100, ttl=10, clock=clock)
    store.put("a", [1])
    clock.now = 5
    store.put("b", [0])
    clock.now = 12
    assert store.pop("a") is None
    assert store.pop("b") == [0]
    assert store.rows == 0


def test_store_is_bounded_in_rows_and_evicts_oldest() -> None:
    store = PredictionStore(max_rows=5, ttl=100)
    store.put("a", [1, 1])
    store.put("b", [0, 0])
    store.put("c", [1, 0])
    assert store.rows <= 5
    assert store.pop("a") is None
    assert store.pop("c") == [1, 0]
    store.put("huge", [0] * 6)
    assert store.pop("huge") is None
    store.put("b", [7])  # a repeated request id replaces the older prediction
    assert store.pop("b") == [7] and store.rows == 0


def test_scoring_counts_rows_correct_unknown_and_mismatched() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("one", ["cat"])
    store.put("two", [1, 0, 1])
    store.put("three", [1])
    result = score_feedback(
        {
            "feedback": [
                {"request_id": "one", "label": "cat"},
                {"request_id": "two", "labels": [1, 1, 1.0]},
                {"request_id": "three", "labels": [1, 0]},
                {"request_id": "gone", "label": 0},
            ]
        },
        store,
        regression=False,
    )
    assert (result.matched_ids, result.rows, result.correct) == (2, 4, 3)
    assert result.unknown_ids == ["gone"] and result.mismatched_ids == ["three"]


def test_regression_feedback_records_absolute_errors() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("r", [10.0, 20.0])
    result = score_feedback({"feedback": [{"request_id": "r", "labels": [12, 19.5]}]}, store, True)
    assert result.rows == 2 and result.correct == 0
    assert result.absolute_errors == [2.0, 0.5]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"feedback": []},
        {"feedback": [{"label": 1}]},
        {"feedback": [{"request_id": "a"}]},
        {"feedback": [{"request_id": "a", "labels": []}]},
        {"feedback": [{"request_id": "a", "label": {"x": 1}}]},
        {"feedback": "x"},
    ],
)
def test_malformed_feedback_is_refused_with_422(payload: object) -> None:
    with pytest.raises(ServingError) as info:
        score_feedback(payload, PredictionStore(10, 10), regression=False)
    assert info.value.status == 422


def test_labels_compare_as_json_values() -> None:
    assert same_label(1, 1.0) and same_label("a", "a") and same_label(1, "1")
    assert not same_label(1, 0) and not same_label("a", "b")
    assert same_label(True, True) and not same_label(True, False)


def test_unjoined_feedback_says_whether_the_prediction_expired_or_was_never_here() -> None:
    clock = Clock()
    store = PredictionStore(max_rows=100, ttl=600, clock=clock)
    store.put("late", [1])
    store.put("in-window", [0])
    clock.now = 599  # a late label still inside the window is joined
    result = score_feedback(
        {"feedback": [{"request_id": "in-window", "label": 0}]}, store, regression=False
    )
    assert result.matched_ids == 1 and result.correct == 1
    clock.now = 601
    result = score_feedback(
        {"feedback": [{"request_id": "late", "label": 1}, {"request_id": "other-pod", "label": 1}]},
        store,
        regression=False,
    )
    assert result.matched_ids == 0
    assert result.unknown_ids == ["late", "other-pod"]
    assert result.expired_ids == ["late"]
    assert store.missing_reason("late") == REASON_EXPIRED
    assert store.missing_reason("other-pod") == REASON_UNKNOWN
    assert result.as_json()["expired_request_ids"] == ["late"]


def test_predictions_pushed_out_by_newer_ones_count_as_expired() -> None:
    store = PredictionStore(max_rows=2, ttl=600)
    store.put("a", [1])
    store.put("b", [1])
    store.put("c", [1])
    assert store.pop("a") is None and store.missing_reason("a") == REASON_EXPIRED


def test_the_store_remembers_whether_a_prediction_was_pinned() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("tester", [1], pinned=True)
    store.put("client", [0])
    assert store.take("tester") == Stored([1], True)
    assert store.take("client") == Stored([0], False)
    assert store.take("client") is None and store.rows == 0
    store.put("again", [1], pinned=True)
    store.put("again", [1])  # a repeated id replaces the flag with the prediction
    assert store.pop("again") == [1] and store.take("again") is None


def test_pinned_feedback_is_answered_but_scored_apart() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("tester", ["cat", "dog"], pinned=True)
    store.put("client", ["cat"])
    result = score_feedback(
        {
            "feedback": [
                {"request_id": "tester", "labels": ["cat", "cat"]},
                {"request_id": "client", "label": "cat"},
            ]
        },
        store,
        regression=False,
        classes=["cat", "dog"],
    )
    assert result.as_json()["matched"] == 2
    assert (result.rows, result.correct) == (3, 2)
    assert (result.pinned_rows, result.pinned_correct) == (2, 1)
    assert result.confusion == {("cat", "cat"): 1}


def test_pinned_regression_feedback_has_no_errors_counted() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("tester", [10.0], pinned=True)
    store.put("client", [1.0])
    payload = {
        "feedback": [{"request_id": "tester", "label": 0}, {"request_id": "client", "label": 2}]
    }
    result = score_feedback(payload, store, regression=True)
    assert result.rows == 2 and result.pinned_rows == 1
    assert result.absolute_errors == [1.0]
