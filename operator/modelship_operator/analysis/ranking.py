"""The ROC AUC of one class from the score histograms the serving pods export. Pure.

Each pod counts, for every feedback row, the probability the model gave the class in
cumulative buckets (``le``), apart for rows whose truth was the class (``positive="true"``)
and the others (``"false"``). Summed over pods and increased over the window, the two
histograms are the score distributions of positives and negatives, and the AUC is the
chance a positive scores above a negative (the Mann-Whitney statistic): a negative in a
bin is outranked by every positive in a higher bin and, half each, by the positives in its
own bin (a tie, as scikit-learn's ``roc_auc_score`` counts equal scores). That is the area
under the ROC curve through the bin edges, joined by straight lines (the trapezoid rule),
so the only approximation is the buckets' width: scores in one bin are taken as tied.

PromQL cannot shift a bucket onto its neighbour, so this is computed here from the vector
rather than written as one query.
"""

from __future__ import annotations

import math
from collections import defaultdict

from modelship_serving import contract as serving

from modelship_operator.analysis.results import NoValues, QueryError, QueryResult, Value, Vector


def _bound(le: str) -> float:
    return math.inf if le == "+Inf" else float(le)


def bin_counts(cumulative: dict[float, float]) -> list[float]:
    """Per-bin counts from cumulative bucket counts (by upper bound), in bound order. An
    extrapolated increase() may dip between neighbours; a dip counts as an empty bin."""
    counts, below = [], 0.0
    for bound in sorted(cumulative):
        here = max(cumulative[bound], below)
        counts.append(here - below)
        below = here
    return counts


def auc_from_bins(positives: list[float], negatives: list[float]) -> float | None:
    """P(positive score > negative score) + half P(tie), from counts in the same bins
    (ascending scores); None when either side has no rows (the AUC is undefined)."""
    total_pos, total_neg = sum(positives), sum(negatives)
    if total_pos <= 0 or total_neg <= 0:
        return None
    above, ranked = total_pos, 0.0
    for pos, neg in zip(positives, negatives, strict=True):
        above -= pos
        ranked += neg * (above + pos / 2)
    return ranked / (total_pos * total_neg)


def roc_auc(result: Vector | QueryError, promql: str) -> QueryResult:
    """The AUC (0..1) from the answer to :func:`..queries.score_histogram_query`."""
    if isinstance(result, QueryError):
        return result
    sides: dict[str, dict[float, float]] = defaultdict(dict)
    for sample in result.samples:
        side, le = sample.labels.get(serving.POSITIVE), sample.labels.get("le")
        if side not in ("true", "false") or le is None:
            return QueryError(
                "unexpected-result",
                f"score histogram series without {serving.POSITIVE} and le labels: "
                f"{dict(sample.labels)}",
                promql,
            )
        if math.isfinite(sample.value):
            sides[side][_bound(le)] = sample.value
    bounds = sorted(set(sides["true"]) | set(sides["false"]))
    if not bounds:
        return NoValues(promql)
    # Both sides on the same bins (a bucket only one side reported holds the count below).
    aligned = {side: _fill(sides[side], bounds) for side in ("true", "false")}
    auc = auc_from_bins(bin_counts(aligned["true"]), bin_counts(aligned["false"]))
    return NoValues(promql) if auc is None else Value(auc)


def _fill(cumulative: dict[float, float], bounds: list[float]) -> dict[float, float]:
    out, last = {}, 0.0
    for bound in bounds:
        last = cumulative.get(bound, last)
        out[bound] = last
    return out
