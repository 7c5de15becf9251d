"""The verdict of one metric check: a pure function of what Prometheus answered.

Four outcomes, in this order of precedence:

1. **Error** - a query needed for the check could not be answered (Prometheus unreachable,
   a bad query, several series where one number was expected). Says nothing about the canary.
2. **Inconclusive** - not enough evidence: fewer than ``minSamples`` requests in the window,
   no series, or NaN (0/0 when nothing happened). NaN never passes a threshold.
3. **Failed** - the value is outside ``min``/``max``, or worse than stable's value over the
   same window by more than the margin.
4. **Successful** - everything the check asks holds.

A value outside min/max is Failed even when stable's value (needed only for the comparison)
is missing: one broken bound is enough to know. ``+Inf``/``-Inf`` are compared as numbers (a
p99 in the +Inf bucket is genuinely too slow).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from modelship_operator.analysis.results import NoValues, QueryError, QueryResult, Value
from modelship_operator.spec import MetricCheck, Variant
from modelship_operator.status import AnalysisResult, Verdict

#: Name of the result that reports the traffic gate alone, when a strategy has no metrics.
REQUESTS_CHECK: Final = "requests"
#: Precedence when several checks are combined into one analysis verdict.
_RANK: Final[dict[Verdict, int]] = {"Failed": 3, "Error": 2, "Inconclusive": 1, "Successful": 0}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check of one variant at one analysis."""

    metric: str
    verdict: Verdict
    message: str
    value: float | None = None
    threshold: str | None = None
    stable_value: float | None = None
    samples: float | None = None
    variant: Variant = "canary"

    def to_status(self) -> AnalysisResult:
        """As written to ``status.lastAnalysis`` (NaN and Inf become absent: JSON has
        neither; the message keeps the raw value)."""
        return AnalysisResult(
            metric=self.metric,
            variant=self.variant,
            value=_finite(self.value),
            stable_value=_finite(self.stable_value),
            threshold=self.threshold[:256] if self.threshold else None,
            samples=None
            if self.samples is None or not math.isfinite(self.samples)
            else max(0, round(self.samples)),
            verdict=self.verdict,
            message=self.message[:4096],
        )

    @property
    def summary(self) -> str:
        """One line for Events and history: the metric, its value and what it needed."""
        value = "no value" if self.value is None else fmt(self.value)
        need = f", needs {self.threshold}" if self.threshold else ""
        return f"{self.metric} = {value}{need} ({self.verdict}: {self.message})"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def fmt(value: float) -> str:
    """A number for people: 4 significant digits, NaN and Inf spelled out."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


def describe_bounds(check: MetricCheck) -> str | None:
    """min/max as text, e.g. '>= 99', '<= 0.25' or '>= 1 and <= 5'."""
    parts = []
    if check.min is not None:
        parts.append(f">= {fmt(check.min)}")
    if check.max is not None:
        parts.append(f"<= {fmt(check.max)}")
    return " and ".join(parts) or None


def describe_margin(check: MetricCheck) -> str | None:
    """The comparison with stable as text, e.g. '>= stable - 0.5' or '<= stable + 20%'."""
    if check.compare_to is None or check.margin is None:
        return None
    op, sign = (">=", "-") if check.direction == "Higher" else ("<=", "+")
    if check.margin.absolute is not None:
        return f"{op} stable {sign} {fmt(check.margin.absolute)}"
    assert check.margin.relative is not None
    return f"{op} stable {sign} {fmt(check.margin.relative * 100)}%"


def comparison_bound(check: MetricCheck, stable: float) -> float:
    """The worst canary value the margin tolerates, given stable's value."""
    assert check.margin is not None
    slack = (
        check.margin.absolute
        if check.margin.absolute is not None
        else abs(stable) * (check.margin.relative or 0.0)
    )
    return stable - slack if check.direction == "Higher" else stable + slack


def _threshold(check: MetricCheck) -> str | None:
    parts = [p for p in (describe_bounds(check), describe_margin(check)) if p]
    return " and ".join(parts) or None


def _sample_count(samples: QueryResult) -> float | QueryError:
    if isinstance(samples, QueryError):
        return samples
    if isinstance(samples, NoValues) or math.isnan(samples.value):
        return 0.0
    return samples.value


def _error(metric: str, what: str, error: QueryError, threshold: str | None) -> CheckResult:
    return CheckResult(metric, "Error", f"the {what} query failed: {error}", threshold=threshold)


def judge_samples(samples: QueryResult, min_samples: int, window: str = "") -> CheckResult:
    """The traffic gate alone (a strategy without metrics advances on minSamples)."""
    count = _sample_count(samples)
    threshold = f">= {min_samples}"
    if isinstance(count, QueryError):
        return _error(REQUESTS_CHECK, "request count", count, threshold)
    within = f" in the last {window}" if window else ""
    if count < min_samples:
        return CheckResult(
            REQUESTS_CHECK,
            "Inconclusive",
            f"{fmt(count)} requests{within}, fewer than minSamples {min_samples}",
            value=count,
            threshold=threshold,
            samples=count,
        )
    return CheckResult(
        REQUESTS_CHECK,
        "Successful",
        f"{fmt(count)} requests{within}",
        value=count,
        threshold=threshold,
        samples=count,
    )


def judge(
    check: MetricCheck,
    canary: QueryResult,
    *,
    samples: QueryResult,
    min_samples: int,
    stable: QueryResult | None = None,
    window: str = "",
) -> CheckResult:
    """The verdict of ``check`` from the canary's value, its request count in the window and,
    for ``compareTo: stable``, stable's value over the same window."""
    name, threshold = check.name, _threshold(check)
    compare = check.compare_to is not None
    count = _sample_count(samples)
    if isinstance(count, QueryError):
        return _error(name, "request count", count, threshold)
    if isinstance(canary, QueryError):
        return _error(name, "canary's", canary, threshold)
    if compare and isinstance(stable, QueryError):
        return _error(name, "stable's", stable, threshold)
    if compare and stable is None:
        return CheckResult(name, "Error", "stable's value was not queried", threshold=threshold)

    stable_value = stable.value if isinstance(stable, Value) else None
    canary_value = canary.value if isinstance(canary, Value) else None

    def result(verdict: Verdict, message: str) -> CheckResult:
        return CheckResult(
            name,
            verdict,
            message,
            value=canary_value,
            threshold=threshold,
            stable_value=stable_value,
            samples=count,
        )

    within = f" in the last {window}" if window else ""
    if count < min_samples:
        return result(
            "Inconclusive", f"{fmt(count)} requests{within}, fewer than minSamples {min_samples}"
        )
    if canary_value is None:
        return result("Inconclusive", "the canary's query returned no series")
    if math.isnan(canary_value):
        return result(
            "Inconclusive", "the canary's value is NaN (nothing to measure in the window, e.g. 0/0)"
        )
    if check.min is not None and not canary_value >= check.min:
        return result("Failed", f"{fmt(canary_value)} is below the minimum {fmt(check.min)}")
    if check.max is not None and not canary_value <= check.max:
        return result("Failed", f"{fmt(canary_value)} is above the maximum {fmt(check.max)}")
    if not compare:
        return result("Successful", f"{fmt(canary_value)} within bounds")
    if stable_value is None or math.isnan(stable_value):
        what = "no series" if stable_value is None else "NaN"
        return result("Inconclusive", f"stable's value is {what}: nothing to compare with")
    bound = comparison_bound(check, stable_value)
    worse = canary_value < bound if check.direction == "Higher" else canary_value > bound
    if worse:
        return result(
            "Failed",
            f"canary {fmt(canary_value)} is worse than stable {fmt(stable_value)} by more than "
            f"the margin (limit {fmt(bound)})",
        )
    return result(
        "Successful", f"{fmt(canary_value)} (stable {fmt(stable_value)}, limit {fmt(bound)})"
    )


def overall(results: Iterable[CheckResult]) -> Verdict:
    """One verdict for an analysis: Failed if any check failed, else Error if any errored,
    else Inconclusive if any was, else Successful. No checks at all is Inconclusive."""
    verdicts = [r.verdict for r in results]
    if not verdicts:
        return "Inconclusive"
    return max(verdicts, key=lambda v: _RANK[v])


def first(results: Sequence[CheckResult], verdict: Verdict) -> CheckResult | None:
    """The first result with ``verdict`` (e.g. the failing metric to report)."""
    return next((r for r in results if r.verdict == verdict), None)
