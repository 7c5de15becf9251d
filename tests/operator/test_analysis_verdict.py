"""Verdicts of single checks, table-driven: thresholds, comparisons with stable, too little
traffic, no series, NaN, Inf, several series and errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
from modelship_operator.analysis.results import NoValues, QueryError, QueryResult, Value
from modelship_operator.analysis.verdict import (
    CheckResult,
    judge,
    judge_samples,
    overall,
)
from modelship_operator.spec import MetricCheck

NAN = float("nan")
INF = float("inf")
NONE = NoValues("q")
DOWN = QueryError("unreachable", "http://prometheus:9090: ConnectError")
BAD = QueryError("bad-query", "bad_data: parse error at char 5")
MANY = QueryError("multiple-series", "the query returned 3 series; aggregate it")
ENOUGH = Value(500)

SR_MIN = MetricCheck(name="success-rate", min=99)
P99_MAX = MetricCheck(name="latency-p99", max=0.25)
BAND = MetricCheck(name="custom", query="q", min=1, max=5)
SR_ABS = MetricCheck.model_validate(
    {"name": "success-rate", "compareTo": "stable", "margin": {"absolute": 0.5}}
)
P99_REL = MetricCheck.model_validate(
    {"name": "latency-p99", "compareTo": "stable", "margin": {"relative": 0.2}}
)
P99_BOTH = MetricCheck.model_validate(
    {"name": "latency-p99", "max": 0.5, "compareTo": "stable", "margin": {"absolute": 0.05}}
)
CUSTOM_LOWER = MetricCheck.model_validate(
    {"name": "errors", "query": "q", "compareTo": "stable", "better": "Lower",
     "margin": {"relative": 0.1}}
)  # fmt: skip


def v(x: float) -> Value:
    return Value(x)


CASES: list[tuple[str, MetricCheck, QueryResult, QueryResult | None, QueryResult, str, str]] = [
    # (id, check, canary, stable, samples, verdict, words in message)
    ("min passes", SR_MIN, v(99.5), None, ENOUGH, "Successful", "within bounds"),
    ("min inclusive", SR_MIN, v(99), None, ENOUGH, "Successful", ""),
    ("min fails", SR_MIN, v(97.2), None, ENOUGH, "Failed", "97.2 is below the minimum 99"),
    ("max passes", P99_MAX, v(0.1), None, ENOUGH, "Successful", ""),
    ("max inclusive", P99_MAX, v(0.25), None, ENOUGH, "Successful", ""),
    ("max fails", P99_MAX, v(0.8), None, ENOUGH, "Failed", "above the maximum 0.25"),
    ("band below", BAND, v(0.5), None, ENOUGH, "Failed", "below"),
    ("band above", BAND, v(6), None, ENOUGH, "Failed", "above"),
    ("band inside", BAND, v(3), None, ENOUGH, "Successful", ""),
    ("+Inf latency fails", P99_MAX, v(INF), None, ENOUGH, "Failed", "+Inf is above"),
    ("-Inf below min fails", SR_MIN, v(-INF), None, ENOUGH, "Failed", "-Inf"),
    # NaN never passes, but it is not a failure either
    ("NaN min", SR_MIN, v(NAN), None, ENOUGH, "Inconclusive", "NaN"),
    ("NaN max", P99_MAX, v(NAN), None, ENOUGH, "Inconclusive", "NaN"),
    ("no series", SR_MIN, NONE, None, ENOUGH, "Inconclusive", "no series"),
    # too little traffic: Inconclusive even with a bad value
    ("few samples", SR_MIN, v(50), None, v(37), "Inconclusive", "37 requests"),
    ("no traffic series", SR_MIN, v(50), None, NONE, "Inconclusive", "0 requests"),
    ("NaN samples", SR_MIN, v(50), None, v(NAN), "Inconclusive", "0 requests"),
    # errors: nothing is known about the canary
    ("canary unreachable", SR_MIN, DOWN, None, ENOUGH, "Error", "canary's query failed"),
    ("bad query", BAND, BAD, None, ENOUGH, "Error", "parse error"),
    ("multiple series", BAND, MANY, None, ENOUGH, "Error", "3 series"),
    ("samples error", SR_MIN, v(99.9), None, DOWN, "Error", "request count query failed"),
    ("error beats few samples", SR_MIN, DOWN, None, v(1), "Error", ""),
    # comparative: absolute margin, higher is better
    ("abs within", SR_ABS, v(99.6), v(100), ENOUGH, "Successful", "limit 99.5"),
    ("abs edge", SR_ABS, v(99.5), v(100), ENOUGH, "Successful", ""),
    ("abs worse", SR_ABS, v(99.4), v(100), ENOUGH, "Failed", "worse than stable 100"),
    ("abs better", SR_ABS, v(100), v(97), ENOUGH, "Successful", ""),
    # comparative: relative margin, lower is better
    ("rel within", P99_REL, v(0.11), v(0.1), ENOUGH, "Successful", ""),
    ("rel worse", P99_REL, v(0.13), v(0.1), ENOUGH, "Failed", "limit 0.12"),
    ("rel stable Inf", P99_REL, v(2.0), v(INF), ENOUGH, "Successful", ""),
    ("custom lower", CUSTOM_LOWER, v(12), v(10), ENOUGH, "Failed", "limit 11"),
    ("custom lower ok", CUSTOM_LOWER, v(8), v(10), ENOUGH, "Successful", ""),
    ("stable NaN", SR_ABS, v(99), v(NAN), ENOUGH, "Inconclusive", "stable's value is NaN"),
    ("stable no series", SR_ABS, v(99), NONE, ENOUGH, "Inconclusive", "stable's value is no"),
    ("stable down", SR_ABS, v(99), DOWN, ENOUGH, "Error", "stable's query failed"),
    ("stable multiple", SR_ABS, v(99), MANY, ENOUGH, "Error", "3 series"),
    ("canary NaN vs stable", SR_ABS, v(NAN), v(99), ENOUGH, "Inconclusive", "NaN"),
    # both a bound and a comparison
    ("both ok", P99_BOTH, v(0.12), v(0.1), ENOUGH, "Successful", ""),
    ("both: max broken", P99_BOTH, v(0.6), v(0.58), ENOUGH, "Failed", "above the maximum"),
    ("both: margin broken", P99_BOTH, v(0.2), v(0.1), ENOUGH, "Failed", "worse than stable"),
    ("both: max broken, stable missing", P99_BOTH, v(0.6), NONE, ENOUGH, "Failed", "maximum"),
]


@pytest.mark.parametrize(
    ("check", "canary", "stable", "samples", "verdict", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_judge(
    check: MetricCheck,
    canary: QueryResult,
    stable: QueryResult | None,
    samples: QueryResult,
    verdict: str,
    words: str,
) -> None:
    result = judge(check, canary, samples=samples, min_samples=100, stable=stable)
    assert result.verdict == verdict, result.message
    assert words in result.message
    assert result.metric == check.name


def test_thresholds_are_described() -> None:
    assert judge(SR_MIN, v(1), samples=ENOUGH, min_samples=1).threshold == ">= 99"
    assert judge(BAND, v(1), samples=ENOUGH, min_samples=1).threshold == ">= 1 and <= 5"
    both = judge(P99_BOTH, v(1), samples=ENOUGH, min_samples=1, stable=v(1))
    assert both.threshold == "<= 0.5 and <= stable + 0.05"
    rel = judge(P99_REL, v(1), samples=ENOUGH, min_samples=1, stable=v(1))
    assert rel.threshold == "<= stable + 20%"
    assert judge(SR_ABS, v(1), samples=ENOUGH, min_samples=1, stable=v(1)).threshold == (
        ">= stable - 0.5"
    )


def test_comparison_without_stable_query_is_an_error() -> None:
    result = judge(SR_ABS, v(99), samples=ENOUGH, min_samples=1)
    assert result.verdict == "Error"


def test_min_samples_zero_still_needs_a_value() -> None:
    assert judge(SR_MIN, NONE, samples=NONE, min_samples=0).verdict == "Inconclusive"
    assert judge(SR_MIN, v(100), samples=NONE, min_samples=0).verdict == "Successful"


def test_window_is_named_in_the_message() -> None:
    result = judge(SR_MIN, v(100), samples=v(3), min_samples=100, window="30s")
    assert result.message == "3 requests in the last 30s, fewer than minSamples 100"


@pytest.mark.parametrize(
    ("samples", "verdict"),
    [(v(150), "Successful"), (v(99), "Inconclusive"), (NONE, "Inconclusive"), (DOWN, "Error")],
)
def test_traffic_gate_alone(samples: QueryResult, verdict: str) -> None:
    assert judge_samples(samples, 100).verdict == verdict


def r(verdict: Any) -> CheckResult:
    return CheckResult("m", verdict, "")


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([], "Inconclusive"),
        (["Successful", "Successful"], "Successful"),
        (["Successful", "Inconclusive"], "Inconclusive"),
        (["Inconclusive", "Error"], "Error"),
        (["Error", "Failed", "Successful"], "Failed"),
        (["Failed", "Inconclusive"], "Failed"),
    ],
)
def test_overall(verdicts: list[str], expected: str) -> None:
    assert overall(r(x) for x in verdicts) == expected


def test_status_form_drops_nan_and_inf_but_keeps_the_message() -> None:
    nan = judge(SR_MIN, v(NAN), samples=ENOUGH, min_samples=1).to_status()
    assert nan.value is None and nan.verdict == "Inconclusive" and "NaN" in (nan.message or "")
    inf = judge(P99_MAX, v(INF), samples=ENOUGH, min_samples=1).to_status()
    assert inf.value is None and "+Inf" in (inf.message or "")
    ok = judge(SR_ABS, v(99.7), samples=v(123.6), min_samples=1, stable=v(99.9)).to_status()
    assert (ok.value, ok.stable_value, ok.samples, ok.threshold) == (
        99.7,
        99.9,
        124,
        ">= stable - 0.5",
    )
    assert ok.to_api()["stableValue"] == 99.9
    assert not any(isinstance(x, float) and math.isnan(x) for x in nan.to_api().values())


def test_summary_names_metric_value_and_threshold() -> None:
    failed = judge(SR_MIN, v(97.25), samples=ENOUGH, min_samples=1)
    assert failed.summary.startswith("success-rate = 97.25, needs >= 99 (Failed:")
