"""Whole analyses against a real Prometheus: the built-in queries, custom templates, shadow
agreement and A/B counts evaluated on real scraped series, then judged.

A scrape target plays the serving pods of ModelDeployment ``ml/churn`` (with the pod labels
the cluster's relabelling gives; the variant is the series' own label, as on real pods). Each
scenario is a different canary *version* (the built-in queries select by version), so one
Prometheus serves all.

Every series is scraped at zero for a whole interval before the scenario's traffic arrives,
and every analysis is evaluated at one fixed instant (the last scrape once the traffic
shows): the window then holds real history on both sides, as in production, the counts come
out without extrapolation error, and how long the tests take does not matter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from analysis_prom import PrometheusProcess, Target, free_port, start_all
from mdep_fixtures import ACCESS, SHA_CANARY, base_resource, rolling_out
from modelship_operator.analysis.prometheus import PrometheusClient
from modelship_operator.analysis.runner import analyse, analyse_if_due
from modelship_operator.rollout import Analysis, RolloutState, target
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import Traffic

STABLE = "1.4.0"
INTERVAL = "10s"
WINDOW = 10
POD = {"namespace": "ml"}  # what any Kubernetes scrape adds; no relabelled pod labels
SCENARIOS = ("good", "failing", "slow", "idle", "disagree")


@dataclass(frozen=True)
class Prom:
    process: PrometheusProcess
    at: datetime  # when every analysis is evaluated

    @property
    def url(self) -> str:
        return self.process.url


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    # One scrape target for both variants: every series is then sampled at the same instant,
    # so an evaluation at that instant sees all of them without extrapolation.
    pods = Target(
        "pods",
        labels={**POD, "pod": "churn-0"},
        metric_labels={
            "deployment": "churn",
            "model": "churn",
            "version": STABLE,
            "variant": "stable",
        },
    )
    stable = pods
    canary_labels = {"variant": "canary"}

    def every_series(count: int) -> None:
        """All series at once: first at zero (so increase() has a starting point), then the
        scenario's traffic."""
        scale = 1 if count else 0
        stable.serve(1000 * scale, seconds=0.004)
        stable.serve(0, code=503)
        # Two rows of feedback per user: the A/B test counts the users (units).
        stable.feedback_rows(2000 * scale, 1400 * scale, 1000 * scale, 700 * scale)
        stable.predict_classes({"yes": 600 * scale, "no": 400 * scale})
        stable.serve(200 * scale, endpoint="health")  # probes are not inference requests
        for version in SCENARIOS:
            good, bad, seconds = {
                "good": (500, 0, 0.004),
                "failing": (450, 50, 0.004),
                "slow": (500, 0, 0.8),
                "idle": (0, 0, 0.004),
                "disagree": (500, 0, 0.004),
            }[version]
            labels = {**canary_labels, "version": version}
            pods.serve(good * scale, seconds=seconds, **labels)
            pods.serve(bad * scale, code=503, **labels)
            rows, right = (500 * scale, 390 * scale) if good else (0, 0)
            pods.feedback_rows(2 * rows, 2 * right, rows, right, **labels)
            split = (100, 400) if version == "disagree" else (300, 200)
            counts = {"yes": split[0] * scale, "no": split[1] * scale} if good else {}
            pods.predict_classes(counts or {"yes": 0, "no": 0}, **labels)

    every_series(0)
    for p in start_all(tmp_path_factory.mktemp("prom"), [pods]):
        # a whole window of zeros before the traffic
        p.wait_value(
            f"min(count_over_time(modelship_requests_total[{WINDOW + 2}s]))",
            lambda v: v >= WINDOW + 1,
        )
        every_series(1)
        p.wait_value('sum(modelship_requests_total{variant="stable"})', lambda v: v == 1200)
        p.wait_value('sum(modelship_requests_total{variant="canary"})', lambda v: v == 2000)
        p.wait_value("sum(modelship_feedback_total)", lambda v: v == 6000)
        p.wait_value("sum(modelship_feedback_units_total)", lambda v: v == 3000)
        stamp = p.instant("max(timestamp(modelship_requests_total))")
        yield Prom(p, datetime.fromtimestamp(float(stamp[0]["value"][1]), UTC))


def resource(prom: Prom, version: str, strategy: dict[str, Any], **state: Any) -> ModelDeployment:
    """A ModelDeployment with a rollout of canary ``version`` recorded in its status."""
    body = base_resource(
        strategy={"interval": INTERVAL, "minSamples": 100, **strategy}, access=ACCESS
    )
    candidate = {"version": version, "uri": "file:///models/x.skops", "sha256": SHA_CANARY}
    md = ModelDeployment.from_api(rolling_out(body, candidate))
    key = target(md).key
    assert key is not None
    begun = RolloutState.begin(key, None, prom.at - timedelta(seconds=WINDOW))
    fields = begun.status_fields() | {
        "traffic": Traffic(stable=90, canary=10),
        "rollout": begun.progress.model_copy(
            update={"step_started_at": prom.at - timedelta(seconds=WINDOW)}
        ),
    }
    fields.update(state)
    return md.model_copy(update={"status": md.status.model_copy(update=fields)})


def run(prom: Prom, md: ModelDeployment, url: str | None = None) -> Analysis:
    state = RolloutState.from_status(md.status)
    assert state is not None

    async def go() -> Analysis:
        async with PrometheusClient(url or prom.url, timeout=2) as client:
            return await analyse(md, state, client, prom.at)

    return asyncio.run(go())


def by_name(analysis: Analysis) -> dict[str, Any]:
    return {c.metric: c for c in analysis.checks}


BUILTINS = [
    {"name": "success-rate", "min": 99},
    {"name": "latency-p99", "max": 0.25},
    {"name": "accuracy", "min": 60},
]
BOTH = {"name": "success-rate", "min": 99, "compareTo": "stable", "margin": {"absolute": 0.5}}
COMPARE = [
    {"name": "success-rate", "compareTo": "stable", "margin": {"absolute": 0.5}},
    {"name": "latency-p99", "compareTo": "stable", "margin": {"relative": 0.5}},
]


def test_a_good_canary_passes_every_builtin_check(prom: Prom) -> None:
    analysis = run(prom, resource(prom, "good", {"metrics": BUILTINS}))
    checks = by_name(analysis)
    assert analysis.verdict == "Successful", [c.summary for c in analysis.checks]
    assert checks["success-rate"].value == 100
    assert checks["latency-p99"].value <= 0.005
    assert checks["accuracy"].value == pytest.approx(78, abs=0.5)
    assert checks["success-rate"].samples == 500  # probes excluded
    assert (analysis.key, analysis.stage, analysis.step) == (analysis.key, "canary", 0)


def test_a_canary_failing_requests_fails_success_rate(prom: Prom) -> None:
    analysis = run(prom, resource(prom, "failing", {"metrics": BUILTINS[:2]}))
    rate = by_name(analysis)["success-rate"]
    assert rate.verdict == "Failed" and rate.value == pytest.approx(90, abs=0.5)
    assert by_name(analysis)["latency-p99"].verdict == "Successful"
    assert analysis.verdict == "Failed"


def test_a_slow_canary_fails_latency(prom: Prom) -> None:
    analysis = run(prom, resource(prom, "slow", {"metrics": BUILTINS[:2]}))
    latency = by_name(analysis)["latency-p99"]
    assert latency.verdict == "Failed" and 0.5 < latency.value <= 1.0
    assert by_name(analysis)["success-rate"].verdict == "Successful"


def test_comparisons_with_stable_over_the_same_window(prom: Prom) -> None:
    good = by_name(run(prom, resource(prom, "good", {"metrics": COMPARE})))
    assert good["success-rate"].verdict == "Successful" and good["success-rate"].stable_value == 100
    assert good["latency-p99"].stable_value == pytest.approx(good["latency-p99"].value)
    slow = by_name(run(prom, resource(prom, "slow", {"metrics": COMPARE})))
    assert (
        slow["latency-p99"].verdict == "Failed"
        and "worse than stable" in slow["latency-p99"].message
    )
    failing = by_name(run(prom, resource(prom, "failing", {"metrics": COMPARE})))
    assert failing["success-rate"].verdict == "Failed"


def test_no_traffic_is_inconclusive_not_failed(prom: Prom) -> None:
    analysis = run(prom, resource(prom, "idle", {"metrics": [BOTH, *BUILTINS[1:]]}))
    assert {c.verdict for c in analysis.checks} == {"Inconclusive"}
    assert "0 requests" in analysis.checks[0].message
    gate = run(prom, resource(prom, "idle", {"metrics": []}))
    assert [c.metric for c in gate.checks] == ["requests"] and gate.verdict == "Inconclusive"
    assert run(prom, resource(prom, "good", {"metrics": []})).verdict == "Successful"


def test_custom_queries_are_templated_and_their_errors_reported(prom: Prom) -> None:
    errors = (
        'sum(increase(modelship_requests_total{namespace="{{ namespace }}",'
        'deployment="{{ name }}",variant="{{ variant }}",version="{{ version }}",'
        'code=~"5.."}[{{ interval }}])) or vector(0)'
    )
    metrics = [
        {"name": "server-errors", "query": errors, "max": 10},
        {"name": "typo", "query": "sum(rate(x{pod='{{ target }}'}[1m]))", "max": 1},
        {"name": "broken", "query": "sum(rate(modelship_requests_total[1m]", "max": 1},
        {"name": "per-pod", "query": "modelship_requests_total", "max": 1e9},
    ]
    checks = by_name(run(prom, resource(prom, "failing", {"metrics": metrics})))
    assert checks["server-errors"].verdict == "Failed"
    assert checks["server-errors"].value == 50
    assert checks["typo"].verdict == "Error" and "{{ target }}" in checks["typo"].message
    assert checks["broken"].verdict == "Error" and "parse error" in checks["broken"].message
    assert checks["per-pod"].verdict == "Error" and "series" in checks["per-pod"].message
    good = by_name(run(prom, resource(prom, "good", {"metrics": metrics[:1]})))
    assert good["server-errors"].verdict == "Successful" and good["server-errors"].value == 0


def test_shadow_agreement_from_prediction_distributions(prom: Prom) -> None:
    shadow = {"type": "Shadow", "metrics": COMPARE[:1]}
    mirror = Traffic(stable=100, canary=0, mirror=100)
    same = run(prom, resource(prom, "good", shadow, traffic=mirror))
    assert same.stage == "shadow"
    agreement = by_name(same)["prediction-agreement"]
    assert agreement.verdict == "Successful" and agreement.value == 1.0
    different = run(prom, resource(prom, "disagree", shadow, traffic=mirror))
    agreement = by_name(different)["prediction-agreement"]
    assert agreement.verdict == "Failed" and agreement.value < 0.7
    assert different.verdict == "Failed"


def test_ab_counts_since_the_test_began_and_the_verdict(prom: Prom) -> None:
    # The recorded traffic gave the canary a third of the trials: the split it was set to.
    ab = {"type": "ABTest", "metrics": [], "abTest": {"minSamples": 100, "split": 33}}
    analysis = run(prom, resource(prom, "good", ab, traffic=Traffic(stable=67, canary=33)))
    assert analysis.stage == "abtest" and analysis.ab_counts is not None
    stable, canary = analysis.ab_counts
    assert (stable.successes, stable.trials) == (700, 1000)
    assert (canary.successes, canary.trials) == (390, 500)
    assert canary.successes / canary.trials == pytest.approx(0.78, abs=0.01)
    assert analysis.ab is not None and analysis.ab.decision == "canary-wins"
    assert analysis.ab.p_value is not None and analysis.ab.p_value <= 0.05
    assert not analysis.ab.mismatch


def test_ab_split_far_from_the_configured_one_pauses_the_test(prom: Prom) -> None:
    # The same counts (1,000 stable, 500 canary trials) under a 50/50 test: a sample-ratio
    # mismatch, so no verdict although the canary's rate is clearly higher.
    ab = {"type": "ABTest", "metrics": [], "abTest": {"minSamples": 100, "split": 50}}
    analysis = run(prom, resource(prom, "good", ab, traffic=Traffic(stable=50, canary=50)))
    assert analysis.ab is not None and analysis.ab.mismatch
    assert analysis.ab.decision == "undecided"
    assert "sample ratio mismatch: canary has 33.3% of the users, 50% configured" in (
        analysis.ab.message
    )


def test_prometheus_unreachable_is_an_error_for_every_check(prom: Prom) -> None:
    md = resource(prom, "good", {"metrics": BUILTINS})
    analysis = run(prom, md, url=f"http://127.0.0.1:{free_port()}")
    assert analysis.verdict == "Error"
    assert {c.verdict for c in analysis.checks} == {"Error"}
    assert "unreachable" in analysis.checks[0].message


def test_analyse_if_due_only_when_an_interval_has_passed(prom: Prom) -> None:
    due = resource(prom, "good", {"metrics": BUILTINS})
    recent = prom.at - timedelta(seconds=WINDOW / 2)
    not_due = due.model_copy(
        update={
            "status": due.status.model_copy(
                update={"rollout": due.status.rollout.model_copy(  # type: ignore[union-attr]
                    update={"last_analysis_time": recent})}
            )
        }
    )  # fmt: skip

    async def go(md: ModelDeployment) -> Analysis | None:
        async with PrometheusClient(prom.url) as client:
            return await analyse_if_due(md, client, prom.at)

    assert asyncio.run(go(not_due)) is None
    assert asyncio.run(go(due)) is not None
    paused = due.model_copy(update={"spec": due.spec.model_copy(update={"paused": True})})
    assert asyncio.run(go(paused)) is None
