"""One analysis of one ModelDeployment: build the queries, ask Prometheus, judge. The only
part of the analysis that does I/O, and all of it through :class:`MetricsSource`.

Every query of one analysis is evaluated at the same instant (``at=now``), so canary and
stable are measured over exactly the same window; they run concurrently. The result is an
:class:`~modelship_operator.rollout.Analysis` tagged with the rollout key, stage and step it
was run for.

The reconcile calls :func:`analyse_if_due` before planning and passes the result (or None)
to the rollout decision; see docs/analysis.md, "Wiring".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime

from modelship_operator.analysis.abtest import Counts, decide
from modelship_operator.analysis.queries import (
    DEFAULT_LABELS,
    VECTOR_METRICS,
    LabelScheme,
    Scope,
    TemplateError,
    agreement_queries,
    business_queries,
    class_distribution_query,
    duration,
    metric_query,
    requests_query,
    value_distribution_query,
)
from modelship_operator.analysis.ranking import roc_auc
from modelship_operator.analysis.results import (
    MetricsSource,
    QueryError,
    QueryResult,
    Value,
    VectorResult,
)
from modelship_operator.analysis.shadow import judge_agreement
from modelship_operator.analysis.verdict import CheckResult, judge, judge_samples
from modelship_operator.rollout import (
    Analysis,
    RolloutState,
    analysis_due,
    deadline_passed,
    stage,
    target,
)
from modelship_operator.spec import BusinessMetric, MetricCheck, ModelDeployment


async def analyse_if_due(
    md: ModelDeployment,
    source: MetricsSource,
    now: datetime,
    labels: LabelScheme = DEFAULT_LABELS,
) -> Analysis | None:
    """The analysis this reconcile needs, or None when none is due (no rollout, paused by
    the user, no traffic yet, or less than an interval since the last one)."""
    state = RolloutState.from_status(md.status)
    goal = target(md)
    if (
        state is None
        or goal.candidate is None
        or state.key != goal.key
        or md.spec.paused
        or not analysis_due(md.spec.strategy, state, now)
    ):
        return None
    return await analyse(md, state, source, now, labels)


def ab_counted_from(state: RolloutState) -> datetime:
    """When an A/B test's counts begin: the split (before it, while the canary got ready,
    stable had all the traffic, which would skew the counts and the sample-ratio check);
    the rollout's start for a status written before the split was recorded."""
    split_at = state.ab_test.split_at if state.ab_test is not None else None
    return split_at or state.progress.started_at


async def analyse(
    md: ModelDeployment,
    state: RolloutState,
    source: MetricsSource,
    now: datetime,
    labels: LabelScheme = DEFAULT_LABELS,
) -> Analysis:
    """Run every check of the current stage against ``source`` at ``now``."""
    strategy = md.spec.strategy
    current = stage(strategy, state)
    goal = target(md)
    canary_version = goal.candidate.version if goal.candidate is not None else None
    canary = Scope(md.namespace, md.name, "canary", strategy.interval_delta, canary_version)
    stable = canary.with_variant("stable", goal.stable.version)

    checks = list(await _metric_checks(strategy.metrics, canary, stable, source, now, labels,
                                       strategy.min_samples))  # fmt: skip
    ab = ab_counts = None
    if current == "shadow":
        checks.append(
            await _agreement(
                canary, stable, source, now, labels,
                strategy.shadow_settings.agreement_threshold, strategy.min_samples,
            )
        )  # fmt: skip
    elif current == "abtest":
        settings = strategy.ab_test_settings
        window = max(now - ab_counted_from(state), strategy.interval_delta)
        counts = await _ab_counts(
            settings.metric, canary.with_interval(window), stable.with_interval(window),
            source, now, labels,
        )  # fmt: skip
        if isinstance(counts, CheckResult):
            checks.append(counts)
        else:
            ab_counts = counts
            previous = state.ab_test
            ab = decide(
                counts[0],
                counts[1],
                alpha=settings.significance,
                min_samples=settings.min_samples,
                previous_p=previous.p_value if previous else None,
                previous_winner=previous.winner if previous else None,
                deadline_passed=deadline_passed(strategy, state, now),
                canary_share=settings.split / 100,
                unit="trials" if settings.metric.successes is not None else "users",
            )
    return Analysis(
        key=state.key,
        stage=current,
        step=state.step,
        at=now,
        checks=tuple(checks),
        ab=ab,
        ab_counts=ab_counts,
    )


async def _gather(*calls: Awaitable[QueryResult]) -> list[QueryResult]:
    return list(await asyncio.gather(*calls))


async def _metric_checks(
    metrics: list[MetricCheck],
    canary: Scope,
    stable: Scope,
    source: MetricsSource,
    now: datetime,
    labels: LabelScheme,
    min_samples: int,
) -> list[CheckResult]:
    window = duration(canary.interval)
    samples = await source.query(requests_query(canary, labels), now)
    if not metrics:
        return [judge_samples(samples, min_samples, window)]
    results: list[CheckResult] = []
    for check in metrics:
        try:
            canary_query = metric_query(check, canary, labels)
            stable_query = (
                metric_query(check, stable, labels) if check.compare_to is not None else None
            )
        except TemplateError as exc:
            results.append(CheckResult(check.name, "Error", f"the query cannot be used: {exc}"))
            continue
        calls = [_measure(check, canary_query, source, now)]
        if stable_query is not None:
            calls.append(_measure(check, stable_query, source, now))
        answers = await _gather(*calls)
        results.append(
            judge(
                check,
                answers[0],
                samples=samples,
                min_samples=min_samples,
                stable=answers[1] if stable_query is not None else None,
                window=window,
            )
        )
    return results


async def _measure(
    check: MetricCheck, promql: str, source: MetricsSource, now: datetime
) -> QueryResult:
    """One variant's value of a check: one number from Prometheus, or for a ranking metric
    (roc-auc) the score histograms reduced here."""
    if check.is_builtin and check.name in VECTOR_METRICS:
        return roc_auc(await source.query_vector(promql, now), promql)
    return await source.query(promql, now)


async def _agreement(
    canary: Scope,
    stable: Scope,
    source: MetricsSource,
    now: datetime,
    labels: LabelScheme,
    threshold: float,
    min_samples: int,
) -> CheckResult:
    agree_q, compared_q = agreement_queries(canary, labels)
    agree, compared, classes_stable, classes_canary = await asyncio.gather(
        source.query(agree_q, now),
        source.query(compared_q, now),
        source.query_vector(class_distribution_query(stable, labels), now),
        source.query_vector(class_distribution_query(canary, labels), now),
    )
    values: tuple[VectorResult, VectorResult] | None = None
    if _empty(classes_stable) and _empty(classes_canary):
        values_stable, values_canary = await asyncio.gather(
            source.query_vector(value_distribution_query(stable, labels), now),
            source.query_vector(value_distribution_query(canary, labels), now),
        )
        values = (values_stable, values_canary)
    return judge_agreement(
        threshold=threshold,
        min_samples=min_samples,
        router=(agree, compared),
        classes=(classes_stable, classes_canary),
        values=values,
    )


def _empty(result: VectorResult) -> bool:
    return not isinstance(result, QueryError) and not result.samples


async def _ab_counts(
    metric: BusinessMetric,
    canary: Scope,
    stable: Scope,
    source: MetricsSource,
    now: datetime,
    labels: LabelScheme,
) -> tuple[Counts, Counts] | CheckResult:
    """(stable, canary) successes and trials since the test began, or an Error result."""
    name = f"abtest-{metric.name}"
    try:
        queries = [
            *business_queries(metric, stable, labels),
            *business_queries(metric, canary, labels),
        ]
    except TemplateError as exc:
        return CheckResult(name, "Error", f"the query cannot be used: {exc}")
    answers = await _gather(*(source.query(q, now) for q in queries))
    numbers: list[float] = []
    for answer in answers:
        if isinstance(answer, QueryError):
            return CheckResult(name, "Error", f"the A/B count query failed: {answer}")
        numbers.append(answer.value if isinstance(answer, Value) else 0.0)
    return Counts(numbers[0], numbers[1]), Counts(numbers[2], numbers[3])
