"""Shadow prediction agreement: the router's exact counts, the distribution fallback, and
by simulation (fixed seeds) how often each method errs on equal and on different models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from modelship_operator.analysis.results import (
    NoValues,
    QueryError,
    QueryResult,
    Sample,
    Value,
    Vector,
)
from modelship_operator.analysis.shadow import (
    AGREEMENT_CHECK,
    agreement_from_distributions,
    agreement_from_router,
    decumulate,
    judge_agreement,
    total_variation,
    wilson_upper,
)

DOWN = QueryError("unreachable", "refused")


@pytest.mark.parametrize(
    ("agree", "compared", "verdict", "words"),
    [
        (Value(99), Value(100), "Successful", "99% of 100 mirrored rows"),
        (Value(95), Value(100), "Successful", ""),
        (Value(93), Value(100), "Inconclusive", "within sampling noise"),
        (Value(90), Value(100), "Failed", "with 95% confidence"),
        (Value(20), Value(500), "Failed", "4% of 500"),
        (Value(10), Value(12), "Inconclusive", "fewer than minSamples 100"),
        (Value(101.3), Value(100.9), "Successful", ""),  # counters scraped a moment apart
        (NoValues("q"), Value(200), "Failed", "0% of 200"),  # nothing agreed at all
        (DOWN, Value(100), "Error", "agreement query failed"),
        (Value(1), DOWN, "Error", "agreement query failed"),
    ],
)
def test_exact_agreement(
    agree: QueryResult, compared: QueryResult, verdict: str, words: str
) -> None:
    result = agreement_from_router(agree, compared, 0.95, 100)
    assert result is not None
    assert (result.metric, result.verdict) == (AGREEMENT_CHECK, verdict), result.message
    assert words in result.message
    assert result.threshold == ">= 0.95"


@pytest.mark.parametrize("compared", [NoValues("q"), Value(0), Value(math.nan)])
def test_no_router_counts_means_fall_back(compared: QueryResult) -> None:
    assert agreement_from_router(Value(0), compared, 0.95, 100) is None


def test_wilson_upper_bound() -> None:
    assert wilson_upper(90, 100) == pytest.approx(0.9454, abs=0.0005)
    assert wilson_upper(0, 0) == 1.0
    assert wilson_upper(100, 100) == 1.0


def test_total_variation() -> None:
    assert total_variation({"a": 50, "b": 50}, {"a": 5, "b": 5})[0] == 0
    assert total_variation({"a": 10}, {"b": 10})[0] == 1
    assert total_variation({"a": 70, "b": 30}, {"a": 40, "b": 60})[0] == pytest.approx(0.3)


def test_decumulate_histogram_buckets() -> None:
    cumulative = {"+Inf": 10.0, "0.5": 4.0, "1": 9.0, "0.1": 1.0}
    assert decumulate(cumulative) == {"0.1": 1.0, "0.5": 3.0, "1": 5.0, "+Inf": 1.0}


def vec(counts: dict[str, float], label: str = "class") -> Vector:
    return Vector(tuple(Sample({label: k}, v) for k, v in counts.items()))


def test_router_counts_win_over_distributions() -> None:
    same = vec({"yes": 500, "no": 500})
    result = judge_agreement(
        threshold=0.95,
        min_samples=100,
        router=(Value(100), Value(1000)),
        classes=(same, same),
    )
    assert result.verdict == "Failed" and "mirrored rows" in result.message


def test_class_distributions_when_the_router_has_no_counts() -> None:
    result = judge_agreement(
        threshold=0.95,
        min_samples=100,
        router=(NoValues("a"), NoValues("b")),
        classes=(vec({"yes": 700, "no": 300}), vec({"yes": 250, "no": 750})),
    )
    assert result.verdict == "Failed" and "class distributions" in result.message
    assert result.value is not None and result.value < 0.6


def test_regressor_value_histograms_when_there_are_no_classes() -> None:
    stable = vec({"1": 100, "10": 900, "+Inf": 1000}, "le")
    shifted = vec({"1": 900, "10": 950, "+Inf": 1000}, "le")
    result = judge_agreement(
        threshold=0.9,
        min_samples=100,
        classes=(Vector(()), Vector(())),
        values=(stable, shifted),
    )
    assert result.verdict == "Failed" and "predicted value distributions" in result.message
    assert (
        judge_agreement(
            threshold=0.9,
            min_samples=100,
            classes=(Vector(()), Vector(())),
            values=(stable, stable),
        ).verdict
        == "Successful"
    )


@pytest.mark.parametrize(
    ("kwargs", "verdict", "words"),
    [
        ({}, "Inconclusive", "no predictions"),
        ({"classes": (Vector(()), Vector(()))}, "Inconclusive", "no predictions"),
        ({"classes": (vec({"a": 5}), vec({"a": 7}))}, "Inconclusive", "fewer than minSamples"),
        ({"classes": (DOWN, vec({"a": 7}))}, "Error", "stable class distribution query failed"),
        ({"router": (DOWN, Value(5))}, "Error", "agreement query failed"),
    ],
)
def test_missing_or_failing_data(kwargs: dict[str, object], verdict: str, words: str) -> None:
    result = judge_agreement(threshold=0.95, min_samples=100, **kwargs)  # type: ignore[arg-type]
    assert result.verdict == verdict and words in result.message


# --- by simulation -------------------------------------------------------------------------

RUNS = 500


def test_equal_models_pass_the_distribution_check_despite_noise() -> None:
    """Two models predicting the same classes: the sampling noise of 200 rows each must not
    read as disagreement (a raw 1 - TV would fail a good share of these)."""
    rng = np.random.default_rng(31)
    probabilities = [0.5, 0.3, 0.15, 0.05]
    passed = raw_failures = 0
    for _ in range(RUNS):
        a = dict(zip("wxyz", rng.multinomial(200, probabilities).tolist(), strict=True))
        b = dict(zip("wxyz", rng.multinomial(200, probabilities).tolist(), strict=True))
        result = agreement_from_distributions(a, b, 0.95, 100)
        passed += result.verdict == "Successful"
        raw_failures += 1 - total_variation(a, b)[0] < 0.95
    assert passed >= 0.97 * RUNS
    assert raw_failures >= 0.2 * RUNS  # the noise allowance is what makes the difference


def test_a_model_that_disagrees_on_most_inputs_is_failed_either_way() -> None:
    """Stable predicts from the input; the candidate is wrong on 60% of rows (a different,
    skewed class). The exact count and the distributions both reject it every time."""
    rng = np.random.default_rng(32)
    failed_exact = failed_distribution = 0
    for _ in range(RUNS):
        truth = rng.choice(3, size=200, p=[0.6, 0.3, 0.1])
        wrong = rng.random(200) < 0.6
        candidate = np.where(wrong, 2, truth)
        agree = int((candidate == truth).sum())
        exact = agreement_from_router(Value(agree), Value(200), 0.95, 100)
        failed_exact += exact is not None and exact.verdict == "Failed"
        a = {str(k): float(v) for k, v in enumerate(np.bincount(truth, minlength=3))}
        b = {str(k): float(v) for k, v in enumerate(np.bincount(candidate, minlength=3))}
        failed_distribution += agreement_from_distributions(a, b, 0.95, 100).verdict == "Failed"
    assert failed_exact == RUNS and failed_distribution == RUNS


def test_exact_check_rarely_fails_a_model_just_above_the_threshold() -> None:
    rng = np.random.default_rng(33)
    failures = sum(
        agreement_from_router(Value(int(rng.binomial(200, 0.97))), Value(200), 0.95, 100).verdict  # type: ignore[union-attr]
        == "Failed"
        for _ in range(RUNS)
    )
    assert failures <= 0.05 * RUNS
