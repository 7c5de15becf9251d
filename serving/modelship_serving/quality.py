"""Which probability-based feedback series a loaded model gets: the log loss of feedback
and per-class score histograms (one-vs-rest ROC AUC).

Both need each predicted row's class probabilities remembered until its feedback arrives, so
they exist only for classifiers with ``predict_proba`` and at most
:data:`~.contract.MAX_SCORED_CLASSES` classes. What the settings ask for that the model cannot
give is dropped with a warning (the caller logs them at load). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .contract import MAX_SCORED_CLASSES
from .feedback import class_index


@dataclass(frozen=True)
class QualityPlan:
    """What is exported: the log loss (``log_loss``) and the score histogram of each class in
    ``score_classes`` (the model's names for them, as strings), whose columns in
    ``predict_proba`` are ``score_indices``. ``warnings``: what the settings asked for in vain."""

    log_loss: bool = False
    score_classes: tuple[str, ...] = ()
    score_indices: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def remember(self) -> bool:
        """Whether predicted rows' probabilities are remembered for feedback."""
        return self.log_loss or bool(self.score_classes)


OFF = QualityPlan()


def plan_quality(
    log_loss: bool,
    score_classes: Sequence[str],
    *,
    estimator_type: str,
    has_predict_proba: bool,
    classes: Sequence[Any] | None,
) -> QualityPlan:
    """The plan for a model, given the settings ``feedback_log_loss`` and
    ``feedback_score_classes``. Class names are compared as strings, like feedback labels."""
    if not log_loss and not score_classes:
        return OFF
    asked = "feedback_log_loss" if log_loss else "feedback_score_classes"
    if estimator_type != "classifier" or classes is None:
        return QualityPlan(
            warnings=(f"{asked} is ignored: the model is not a classifier (no probabilities)",)
        )
    if not has_predict_proba:
        return QualityPlan(warnings=(f"{asked} is ignored: the model has no predict_proba",))
    if len(classes) > MAX_SCORED_CLASSES:
        return QualityPlan(
            warnings=(
                f"{asked} is ignored: the model has {len(classes)} classes, more than the "
                f"{MAX_SCORED_CLASSES} whose probabilities are remembered",
            )
        )
    names = [str(cls) for cls in classes]
    warnings: list[str] = []
    chosen: list[str] = []
    indices: list[int] = []
    for name in score_classes:
        index = class_index(name, names)
        if index < 0:
            warnings.append(
                f"feedback_score_classes: {name!r} is not one of the model's classes "
                f"{names[:MAX_SCORED_CLASSES]}; skipped"
            )
        elif names[index] not in chosen:
            chosen.append(names[index])
            indices.append(index)
    return QualityPlan(log_loss, tuple(chosen), tuple(indices), tuple(warnings))
