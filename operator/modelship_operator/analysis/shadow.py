"""Shadow analysis: does the mirrored candidate predict what stable predicts? Pure.

The candidate's error rate and latency are ordinary metric checks on its own serving series
(mirrored requests are counted there like any other); this module adds the one check only a
shadow has, **prediction agreement**, judged against ``shadow.agreementThreshold``:

1. Exact, when the router reports it: the fraction of mirrored prediction rows whose answer
   equals stable's answer to the same request (``modelship_router_shadow_predictions_total``,
   see docs/analysis.md). Successful at or above the threshold; Failed only when even the
   upper end of a 95 % Wilson interval is below it (a model at 94 % agreement with a 95 %
   threshold is not failed on 100 rows of noise); Inconclusive in between.
2. Otherwise, from the prediction *distributions* both variants already publish
   (``modelship_predictions_total`` per class, or the ``modelship_prediction_value``
   histogram of a regressor): agreement is estimated as ``1 - TV``, TV being the total
   variation distance between the two distributions over the same window, less its sampling
   noise. ``1 - TV`` is an upper bound of the true agreement: two models that disagree on a
   fraction f of the inputs have distributions at most f apart, but possibly much closer (a
   model that swaps two equally frequent classes has TV 0). So this fallback rejects a
   candidate whose outputs are distributed differently - most real regressions - but can
   miss one that is wrong in a balanced way; the router's exact count does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

from modelship_operator.analysis.results import (
    QueryError,
    QueryResult,
    Sample,
    Value,
    Vector,
    VectorResult,
)
from modelship_operator.analysis.verdict import CheckResult, fmt
from modelship_operator.status import Verdict

AGREEMENT_CHECK: Final = "prediction-agreement"
#: Standard errors of sampling noise forgiven before a distance counts as a difference.
NOISE_Z: Final = 2.0


def _threshold(threshold: float) -> str:
    return f">= {fmt(threshold)}"


def wilson_upper(successes: float, trials: float, z: float = NOISE_Z) -> float:
    """Upper end of the Wilson score interval of a proportion."""
    if trials <= 0:
        return 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return min(1.0, (centre + spread) / denominator)


def _count(result: QueryResult) -> float | None:
    if isinstance(result, Value) and math.isfinite(result.value):
        return max(0.0, result.value)
    return None


def agreement_from_router(
    agree: QueryResult, compared: QueryResult, threshold: float, min_samples: int
) -> CheckResult | None:
    """The exact check from the router's comparison counts; None when the router publishes
    none (no such metric, or nothing compared in the window), so the caller falls back."""
    limit = _threshold(threshold)
    for result in (compared, agree):
        if isinstance(result, QueryError):
            return CheckResult(
                AGREEMENT_CHECK, "Error", f"the agreement query failed: {result}", threshold=limit
            )
    total, same = _count(compared), _count(agree)
    if total is None or total <= 0:
        return None
    same = min(same or 0.0, total)
    fraction = same / total
    if total < min_samples:
        return CheckResult(
            AGREEMENT_CHECK,
            "Inconclusive",
            f"{fmt(total)} mirrored rows compared, fewer than minSamples {min_samples}",
            fraction,
            limit,
            samples=total,
        )
    text = f"{fmt(100 * fraction)}% of {fmt(total)} mirrored rows predicted as stable did"
    if fraction >= threshold:
        return CheckResult(AGREEMENT_CHECK, "Successful", text, fraction, limit, samples=total)
    upper = wilson_upper(same, total)
    if upper < threshold:
        return CheckResult(
            AGREEMENT_CHECK,
            "Failed",
            f"{text} (at most {fmt(100 * upper)}% with 95% confidence)",
            fraction,
            limit,
            samples=total,
        )
    return CheckResult(
        AGREEMENT_CHECK,
        "Inconclusive",
        f"{text}: below the threshold but within sampling noise (up to {fmt(100 * upper)}%)",
        fraction,
        limit,
        samples=total,
    )


def distribution(samples: Iterable[Sample], label: str) -> dict[str, float]:
    """Counts keyed by ``label`` (series without it, or NaN, are dropped)."""
    out: dict[str, float] = {}
    for sample in samples:
        key = sample.labels.get(label)
        if key is not None and math.isfinite(sample.value):
            out[key] = out.get(key, 0.0) + max(0.0, sample.value)
    return out


def decumulate(buckets: Mapping[str, float]) -> dict[str, float]:
    """Cumulative histogram buckets (by ``le``) to counts per bucket."""
    ordered = sorted(buckets.items(), key=lambda item: float(item[0]))
    out: dict[str, float] = {}
    below = 0.0
    for le, cumulative in ordered:
        out[le] = max(0.0, cumulative - below)
        below = max(below, cumulative)
    return out


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> tuple[float, float]:
    """Total variation distance between two count distributions, and its sampling noise
    (the sum of the per-category standard errors of the difference of proportions)."""
    n_p, n_q = sum(p.values()), sum(q.values())
    distance = noise = 0.0
    for key in p.keys() | q.keys():
        a, b = p.get(key, 0.0) / n_p, q.get(key, 0.0) / n_q
        distance += abs(a - b)
        pooled = (p.get(key, 0.0) + q.get(key, 0.0)) / (n_p + n_q)
        noise += math.sqrt(pooled * (1 - pooled) * (1 / n_p + 1 / n_q))
    return distance / 2, noise / 2


def agreement_from_distributions(
    stable: Mapping[str, float],
    canary: Mapping[str, float],
    threshold: float,
    min_samples: int,
    what: str = "class",
) -> CheckResult:
    """The fallback check: 1 - (total variation distance less its sampling noise)."""
    limit = _threshold(threshold)
    n_stable, n_canary = sum(stable.values()), sum(canary.values())
    rows = min(n_stable, n_canary)
    if rows <= 0 or rows < min_samples:
        return CheckResult(
            AGREEMENT_CHECK,
            "Inconclusive",
            f"{fmt(n_canary)} canary and {fmt(n_stable)} stable predictions in the window, "
            f"fewer than minSamples {min_samples} for comparing {what} distributions",
            threshold=limit,
            samples=rows,
        )
    distance, noise = total_variation(stable, canary)
    estimate = 1 - max(0.0, distance - NOISE_Z * noise)
    text = (
        f"{what} distributions of canary and stable are {fmt(distance)} apart (total "
        f"variation, noise {fmt(NOISE_Z * noise)}): agreement at most {fmt(estimate)}"
    )
    verdict: Verdict = "Successful" if estimate >= threshold else "Failed"
    return CheckResult(AGREEMENT_CHECK, verdict, text, estimate, limit, samples=rows)


def judge_agreement(
    *,
    threshold: float,
    min_samples: int,
    router: tuple[QueryResult, QueryResult] | None = None,
    classes: tuple[VectorResult, VectorResult] | None = None,
    values: tuple[VectorResult, VectorResult] | None = None,
) -> CheckResult:
    """The agreement check from whatever was measured: the router's exact counts
    ``(agree, compared)`` first, then class distributions ``(stable, canary)`` by ``class``,
    then value histograms ``(stable, canary)`` by ``le``."""
    limit = _threshold(threshold)
    if router is not None:
        exact = agreement_from_router(router[0], router[1], threshold, min_samples)
        if exact is not None:
            return exact
    for pair, label, what in ((classes, "class", "class"), (values, "le", "predicted value")):
        if pair is None:
            continue
        stable, canary = pair
        for side, result in (("stable", stable), ("canary", canary)):
            if isinstance(result, QueryError):
                return CheckResult(
                    AGREEMENT_CHECK,
                    "Error",
                    f"the {side} {what} distribution query failed: {result}",
                    threshold=limit,
                )
        assert isinstance(stable, Vector) and isinstance(canary, Vector)
        a, b = distribution(stable.samples, label), distribution(canary.samples, label)
        if label == "le":
            a, b = decumulate(a), decumulate(b)
        if sum(a.values()) > 0 or sum(b.values()) > 0:
            return agreement_from_distributions(a, b, threshold, min_samples, what)
    return CheckResult(
        AGREEMENT_CHECK,
        "Inconclusive",
        "no predictions of either variant to compare in the window",
        threshold=limit,
    )
