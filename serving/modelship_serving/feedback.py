"""Ground truth: predictions remembered by request id, and scoring of the labels sent later.

Pure and single-threaded (the event loop owns it). Memory is bounded by the number of predicted
rows kept, and every entry expires, so an unanswered prediction cannot pin memory forever.

Feedback that cannot be joined has a reason: ``expired`` (the prediction was here but its
window passed, or it was pushed out by newer predictions) or ``unknown`` (this pod never
predicted that request id, e.g. it was served by a pod that is gone). The store remembers
the ids of recently dropped predictions (bounded like the predictions) to tell them apart.

When asked to (``QualityPlan.remember``, see quality.py), the store also keeps each row's
class probabilities, and their feedback gives log-loss terms and per-class scores.

A prediction may be *pinned*: a tester a routing match rule sent to this variant (the
router's ``x-modelship-pinned: 1``). Its feedback is joined and answered like any other,
but scored apart (``FeedbackResult.pinned_*``) so it stays out of the variant's statistics.

Units. With a sticky key, the router marks each request with its user's *unit*
(``x-modelship-unit``) and sends a user's requests to one pod; one user's requests are not
independent trials, so feedback also counts units: a unit's first joined, unpinned
feedback counts it once (``FeedbackResult.units``), and, for classifiers, as correct when
that feedback's first row is (``units_correct``). A prediction without a unit is a unit of
its own (counted once: its feedback joins once). :class:`CountedUnits` remembers the
counted units, bounded by :data:`MAX_COUNTED_UNITS`: the unit seen longest ago is
forgotten first, and a forgotten unit that sends feedback again counts again.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .contract import LOG_LOSS_EPS, OTHER_CLASS
from .errors import ServingError

if TYPE_CHECKING:
    from .quality import QualityPlan

MAX_FEEDBACK_ITEMS = 10_000
#: Most units a pod remembers as counted (see :class:`CountedUnits`).
MAX_COUNTED_UNITS = 100_000
#: Reasons feedback is not joined to a prediction (the ``reason`` label of the metric).
REASON_EXPIRED = "expired"
REASON_UNKNOWN = "unknown"
UNJOINED_REASONS = (REASON_EXPIRED, REASON_UNKNOWN)
_SCALARS = (int, float, str, bool)


#: One request's class probabilities: a tuple of floats per row (in ``classes_`` order).
Probabilities = Sequence[Sequence[float]]


class Stored(NamedTuple):
    """One request's remembered predictions, whether the request was pinned, its rows'
    class probabilities (None when not remembered) and its unit (None: none was sent)."""

    predictions: Sequence[Any]
    pinned: bool
    probabilities: Probabilities | None = None
    unit: str | None = None


class CountedUnits:
    """The units whose feedback was counted, at most ``limit``; the one seen longest ago is
    forgotten first (it would count again)."""

    def __init__(self, limit: int = MAX_COUNTED_UNITS) -> None:
        self._units: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._units)

    def __contains__(self, unit: object) -> bool:
        return unit in self._units

    def first(self, unit: str) -> bool:
        """Whether ``unit`` is counted now for the first time (it is remembered either way)."""
        units = self._units
        if unit in units:
            units.move_to_end(unit)
            return False
        units[unit] = None
        if len(units) > self._limit:
            units.popitem(last=False)
        return True


class PredictionStore:
    """Recent predictions by request id, bounded in rows and expiring after ``ttl`` seconds."""

    def __init__(
        self, max_rows: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[
            str, tuple[float, Sequence[Any], bool, Probabilities | None, str | None]
        ] = OrderedDict()
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

    def put(
        self,
        request_id: str,
        predictions: Sequence[Any],
        pinned: bool = False,
        probabilities: Probabilities | None = None,
        unit: str | None = None,
    ) -> None:
        """Remember one request's predictions (rows beyond the bound evict the oldest);
        ``pinned``: a tester's request (see module docstring); ``probabilities``: one tuple
        per row, when they are to be scored. Both count as the same rows of the bound.
        ``unit``: the request's unit (``x-modelship-unit``), if it had one."""
        if len(predictions) > self._max_rows:
            return
        now = self._clock()
        old = self._entries.pop(request_id, None)
        if old is not None:
            self._rows -= len(old[1])
        self._entries[request_id] = (now, predictions, pinned, probabilities, unit)
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
        return Stored(entry[1], entry[2], entry[3], entry[4])

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
            request_id, (stamp, predictions, _, _, _) = next(iter(entries.items()))
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
    errors, confusion, log-loss terms and scores hold unpinned rows only: what the variant's
    series count."""

    rows: int = 0
    correct: int = 0
    matched_ids: int = 0
    pinned_rows: int = 0
    pinned_correct: int = 0
    #: Units counted for the first time (unpinned), and those whose first row was correct.
    units: int = 0
    units_correct: int = 0
    #: Ids not joined (any reason), and those of them whose prediction had expired.
    unknown_ids: list[str] = field(default_factory=list)
    expired_ids: list[str] = field(default_factory=list)
    mismatched_ids: list[str] = field(default_factory=list)
    absolute_errors: list[float] = field(default_factory=list)
    #: Classifiers: rows by (true class, predicted class), as the model names its classes.
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: ``-ln(max(p, LOG_LOSS_EPS))`` per row whose probabilities were remembered and whose
    #: truth is one of the classes (p: the probability of the true class).
    log_losses: list[float] = field(default_factory=list)
    #: (class, truth is that class, its probability) per remembered row and scored class.
    scores: list[tuple[str, bool, float]] = field(default_factory=list)

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


def class_index(value: Any, classes: Sequence[str]) -> int:
    """The index of the class ``value`` is among ``classes`` (-1 if it is none of them)."""
    for index, name in enumerate(classes):
        if same_label(value, name):
            return index
    return -1


def class_of(value: Any, classes: Sequence[str]) -> str:
    """The model's name for the class ``value`` is (``other`` if it is none of them)."""
    index = class_index(value, classes)
    return classes[index] if index >= 0 else OTHER_CLASS


def _score_probabilities(
    result: FeedbackResult,
    labels: Sequence[Any],
    probabilities: Probabilities,
    classes: Sequence[str],
    quality: QualityPlan,
) -> None:
    scored = tuple(zip(quality.score_indices, quality.score_classes, strict=True))
    for truth, row in zip(labels, probabilities, strict=True):
        true_index = class_index(truth, classes)
        if quality.log_loss and true_index >= 0:
            result.log_losses.append(-math.log(max(row[true_index], LOG_LOSS_EPS)))
        for index, name in scored:
            result.scores.append((name, index == true_index, row[index]))


def score_feedback(
    payload: Any,
    store: PredictionStore,
    regression: bool,
    classes: Sequence[str] = (),
    quality: QualityPlan | None = None,
    counted: CountedUnits | None = None,
) -> FeedbackResult:
    """Match ``{"feedback": [{"request_id", "label" | "labels"}]}`` against stored predictions.
    ``classes`` (a classifier's, as strings) name the rows of the confusion counts and the
    columns of remembered probabilities, which ``quality`` says how to score. ``counted``:
    the units already counted (see module docstring; None: units are not counted)."""
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
        predictions, pinned, probabilities, unit = stored
        if len(predictions) != len(labels):
            result.mismatched_ids.append(request_id)
            continue
        if counted is not None and not pinned and (unit is None or counted.first(unit)):
            result.units += 1
            if not regression and same_label(predictions[0], labels[0]):
                result.units_correct += 1
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
        if probabilities is not None and quality is not None and classes and not pinned:
            _score_probabilities(result, labels, probabilities, classes, quality)
    return result
