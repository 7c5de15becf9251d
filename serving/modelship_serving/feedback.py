"""Ground truth: predictions remembered by request id, and scoring of the labels sent later.

Pure and single-threaded (the event loop owns it). Memory is bounded by the number of predicted
rows kept, and every entry expires, so an unanswered prediction cannot pin memory forever.

Feedback that cannot be joined has a reason: ``expired`` (the prediction was here but its
window passed, or it was pushed out by newer predictions) or ``unknown`` (this pod never
predicted that request id, e.g. it was served by a pod that is gone). The store remembers
the ids of recently dropped predictions (bounded like the predictions) to tell them apart.

A prediction may be *pinned*: a tester a routing match rule sent to this variant (the
router's ``x-modelship-pinned: 1``). Its feedback is joined and answered like any other,
but scored apart (``FeedbackResult.pinned_*``) so it stays out of the variant's statistics.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .contract import OTHER_CLASS
from .errors import ServingError

MAX_FEEDBACK_ITEMS = 10_000
#: Reasons feedback is not joined to a prediction (the ``reason`` label of the metric).
REASON_EXPIRED = "expired"
REASON_UNKNOWN = "unknown"
UNJOINED_REASONS = (REASON_EXPIRED, REASON_UNKNOWN)
_SCALARS = (int, float, str, bool)


class Stored(NamedTuple):
    """One request's remembered predictions, and whether the request was pinned."""

    predictions: Sequence[Any]
    pinned: bool


class PredictionStore:
    """Recent predictions by request id, bounded in rows and expiring after ``ttl`` seconds."""

    def __init__(
        self, max_rows: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, Sequence[Any], bool]] = OrderedDict()
        self._dropped: OrderedDict[str, None] = OrderedDict()
        self._max_rows = max_rows
        self._ttl = ttl
        self._clock = clock
        self._rows = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def rows(self) -> int:
        return self._rows

    def put(self, request_id: str, predictions: Sequence[Any], pinned: bool = False) -> None:
        """Remember one request's predictions (rows beyond the bound evict the oldest);
        ``pinned``: a tester's request (see module docstring)."""
        if len(predictions) > self._max_rows:
            return
        now = self._clock()
        old = self._entries.pop(request_id, None)
        if old is not None:
            self._rows -= len(old[1])
        self._entries[request_id] = (now, predictions, pinned)
        self._rows += len(predictions)
        self._evict(now)

    def take(self, request_id: str) -> Stored | None:
        """Take a request's predictions and pinned flag out (feedback counts once); None if
        unknown or expired."""
        now = self._clock()
        self._evict(now)
        entry = self._entries.pop(request_id, None)
        if entry is None:
            return None
        self._rows -= len(entry[1])
        return Stored(entry[1], entry[2])

    def pop(self, request_id: str) -> Sequence[Any] | None:
        """Take a request's predictions out (feedback counts once); None if unknown/expired."""
        stored = self.take(request_id)
        return None if stored is None else stored.predictions

    def missing_reason(self, request_id: str) -> str:
        """Why ``request_id`` has no prediction here: ``expired`` or ``unknown``."""
        return REASON_EXPIRED if request_id in self._dropped else REASON_UNKNOWN

    def _evict(self, now: float) -> None:
        entries = self._entries
        deadline = now - self._ttl
        while entries:
            request_id, (stamp, predictions, _) = next(iter(entries.items()))
            if stamp >= deadline and self._rows <= self._max_rows:
                break
            del entries[request_id]
            self._rows -= len(predictions)
            self._remember_dropped(request_id)

    def _remember_dropped(self, request_id: str) -> None:
        dropped = self._dropped
        dropped[request_id] = None
        dropped.move_to_end(request_id)
        while len(dropped) > max(self._max_rows, 1):
            dropped.popitem(last=False)


@dataclass
class FeedbackResult:
    """What a feedback request matched; counters are incremented from it.

    ``rows``, ``correct`` and ``matched_ids`` count every joined prediction (the answer);
    ``pinned_rows`` and ``pinned_correct`` are the part of them that was pinned. Absolute
    errors and confusion hold unpinned rows only: what the variant's series count."""

    rows: int = 0
    correct: int = 0
    matched_ids: int = 0
    pinned_rows: int = 0
    pinned_correct: int = 0
    #: Ids not joined (any reason), and those of them whose prediction had expired.
    unknown_ids: list[str] = field(default_factory=list)
    expired_ids: list[str] = field(default_factory=list)
    mismatched_ids: list[str] = field(default_factory=list)
    absolute_errors: list[float] = field(default_factory=list)
    #: Classifiers: rows by (true class, predicted class), as the model names its classes.
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "matched": self.matched_ids,
            "rows": self.rows,
            "correct": self.correct,
            "unknown_request_ids": self.unknown_ids[:100],
            "expired_request_ids": self.expired_ids[:100],
            "row_count_mismatch_request_ids": self.mismatched_ids[:100],
        }


def same_label(predicted: Any, truth: Any) -> bool:
    """Compare a prediction with a label as JSON values (1 == 1.0, "a" == "a", 1 == "1")."""
    if type(predicted) is bool or type(truth) is bool:
        return predicted is truth or str(predicted).lower() == str(truth).lower()
    if isinstance(predicted, int | float) and isinstance(truth, int | float):
        return float(predicted) == float(truth)
    return str(predicted) == str(truth)


def _labels_of(item: dict[str, Any], where: str) -> list[Any]:
    if "labels" in item:
        labels = item["labels"]
        if type(labels) is not list or not labels:
            raise ServingError(422, f"{where}.labels must be a non-empty list")
    elif "label" in item:
        labels = [item["label"]]
    else:
        raise ServingError(422, f"{where} needs 'label' (one row) or 'labels' (one per row)")
    for label in labels:
        if not isinstance(label, _SCALARS):
            raise ServingError(422, f"{where}: labels must be numbers, strings or booleans")
    return labels


def class_of(value: Any, classes: Sequence[str]) -> str:
    """The model's name for the class ``value`` is (``other`` if it is none of them)."""
    for name in classes:
        if same_label(value, name):
            return name
    return OTHER_CLASS


def score_feedback(
    payload: Any, store: PredictionStore, regression: bool, classes: Sequence[str] = ()
) -> FeedbackResult:
    """Match ``{"feedback": [{"request_id", "label" | "labels"}]}`` against stored predictions.
    ``classes`` (a classifier's, as strings) name the rows of the confusion counts."""
    if type(payload) is not dict or type(payload.get("feedback")) is not list:
        raise ServingError(
            422, 'body must be {"feedback": [{"request_id": "...", "label": ...}, ...]}'
        )
    items = payload["feedback"]
    if not items:
        raise ServingError(422, "'feedback' is empty")
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise ServingError(413, f"at most {MAX_FEEDBACK_ITEMS} feedback items per request")
    parsed: list[tuple[str, list[Any]]] = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]"
        if type(item) is not dict or type(item.get("request_id")) is not str:
            raise ServingError(422, f"{where} must be an object with a string 'request_id'")
        parsed.append((item["request_id"], _labels_of(item, where)))
    result = FeedbackResult()
    for request_id, labels in parsed:
        stored = store.take(request_id)
        if stored is None:
            result.unknown_ids.append(request_id)
            if store.missing_reason(request_id) == REASON_EXPIRED:
                result.expired_ids.append(request_id)
            continue
        predictions, pinned = stored
        if len(predictions) != len(labels):
            result.mismatched_ids.append(request_id)
            continue
        result.matched_ids += 1
        result.rows += len(labels)
        if pinned:
            result.pinned_rows += len(labels)
        for predicted, truth in zip(predictions, labels, strict=True):
            if regression:
                if not pinned and isinstance(truth, int | float) and not isinstance(truth, bool):
                    result.absolute_errors.append(abs(float(predicted) - float(truth)))
            else:
                if same_label(predicted, truth):
                    result.correct += 1
                    if pinned:
                        result.pinned_correct += 1
                if classes and not pinned:
                    result.confusion[(class_of(truth, classes), class_of(predicted, classes))] += 1
    return result
