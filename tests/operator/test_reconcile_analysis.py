"""The analysis wired into the reconcile plan: a verdict becomes router weights, status,
Events and the time of the next reconcile; commands from the annotation and spec.paused act
through the step machine; a replayed reconcile never decides twice.

Analyses are given as data (the verdicts the runner would produce), tagged with the rollout
key, stage and step read from the status the way the runner tags them; the runner itself is
tested against a real Prometheus in test_analysis_runner.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from mdep_fixtures import SHA_CANARY, SHA_STABLE, base_resource, rolling_out
from modelship_operator.analysis.verdict import CheckResult
from modelship_operator.conditions import Failure
from modelship_operator.events import recorded_since
from modelship_operator.observed import Observed
from modelship_operator.reconcile import Plan, plan, settle
from modelship_operator.rollout import PAUSED_BY_ERRORS, Analysis, RolloutState, stage
from modelship_operator.spec import ACTION_ANNOTATION, ModelDeployment
from test_reconcile import CANARY, SETTINGS, T0, cluster, cond, env, message, routing

STRATEGY = {
    "steps": [10, 50],
    "interval": "30s",
    "maxFailedChecks": 1,
    "maxConsecutiveErrors": 1,
    "progressDeadline": "5m",
    "scaleDownDelay": "20s",
}


def ok() -> CheckResult:
    return CheckResult("success-rate", "Successful", "within bounds", 99.9, ">= 99", samples=500)


def failed() -> CheckResult:
    return CheckResult(
        "success-rate", "Failed", "97.2 is below the minimum 99", 97.2, ">= 99", samples=500
    )


def inconclusive() -> CheckResult:
    return CheckResult(
        "success-rate", "Inconclusive", "3 requests in 30s, fewer than minSamples 100", samples=3
    )


def error() -> CheckResult:
    return CheckResult("success-rate", "Error", "unreachable: http://prometheus:9090: ConnectError")


@dataclass
class Life:
    """One ModelDeployment reconciled again and again: the status each plan writes is read
    back, the objects it applies are what the cluster lists next (all pods ready)."""

    strategy: dict[str, Any] = field(default_factory=lambda: dict(STRATEGY))
    now: datetime = T0
    annotations: dict[str, str] = field(default_factory=dict)
    paused: bool = False
    last: Plan | None = None
    plans: list[Plan] = field(default_factory=list)

    def resource(self) -> ModelDeployment:
        body = base_resource(strategy=self.strategy, paused=self.paused)
        body["metadata"]["annotations"] = dict(self.annotations)
        if self.last is not None:
            body["status"] = self.last.status.to_api()
        rolling_out(body, CANARY)
        return ModelDeployment.from_api(body)

    def analysis(self, *checks: CheckResult) -> Analysis:
        """The analysis the runner would return now, for the rollout in status."""
        md = self.resource()
        state = RolloutState.from_status(md.status)
        assert state is not None
        return Analysis(
            key=state.key,
            stage=stage(md.spec.strategy, state),
            step=state.step,
            at=self.now,
            checks=checks,
        )

    def tick(self, *checks: CheckResult, after: float = 0, replay: bool = False) -> Plan:
        """Advance the clock, then one reconcile with ``checks`` as its analysis (if any).
        ``replay``: the status of this reconcile is lost (a crash before the write)."""
        self.now += timedelta(seconds=after)
        analysis = self.analysis(*checks) if checks else None
        observed = cluster(self.last) if self.last is not None else Observed()
        result = plan(self.resource(), observed, SETTINGS, self.now, analysis=analysis)
        self.plans.append(result)
        if not replay:
            self.last = result
        return result

    def entered(self) -> Life:
        self.tick()  # the canary Deployment is created
        self.tick(after=2)  # its pod is ready: first step
        return self

    @property
    def weights(self) -> dict[str, float]:
        assert self.last is not None
        return routing(self.last).weights()


def reasons(p: Plan) -> list[str]:
    return [e.reason for e in p.events]


@pytest.mark.parametrize(
    ("check", "phase", "step", "canary_weight", "events", "says"),
    [
        (ok(), "Progressing", 1, 50.0, ["StepAdvanced"], "at step 2/2 (50%)"),
        (failed(), "RolledBack", 0, 0.0, ["AnalysisFailed", "RolledBack"], "success-rate = 97.2"),
        (inconclusive(), "Progressing", 0, 10.0, [], "inconclusive"),
        (error(), "Paused", 0, 10.0, ["AnalysisError", "RolloutPaused"], PAUSED_BY_ERRORS),
    ],
    ids=["successful", "failed", "inconclusive", "error"],
)
def test_one_analysis_at_the_first_step(
    check: CheckResult,
    phase: str,
    step: int,
    canary_weight: float,
    events: list[str],
    says: str,
) -> None:
    life = Life().entered()
    assert life.weights == {"stable": 90.0, "canary": 10.0}
    p = life.tick(check, after=30)
    assert p.status.phase == phase
    assert p.status.step == step
    assert life.weights["canary"] == canary_weight
    assert reasons(p) == events
    assert says in message(p, "Progressing")
    (result,) = p.status.last_analysis
    assert (result.metric, result.verdict) == ("success-rate", check.verdict)
    assert p.status.rollout is not None and p.status.rollout.last_analysis_time == life.now


def test_a_rollback_records_the_metric_value_and_threshold_and_keeps_saying_why() -> None:
    life = Life().entered()
    p = life.tick(failed(), after=30)
    (entry,) = p.status.history
    assert entry.outcome == "RolledBack" and entry.version == "1.5.0"
    assert entry.reason is not None
    assert "success-rate = 97.2, needs >= 99" in entry.reason
    assert cond(p, "Progressing")[1] == "RolledBack"
    # The canary keeps its pods (at 0 %) for scaleDownDelay, then its objects go.
    assert env(p, "churn-stable")["MODELSHIP_MODEL_VERSION"] == "1.4.0"
    assert p.requeue_after == pytest.approx(20)
    later = life.tick(after=21)
    assert later.status.phase == "RolledBack" and later.events == ()
    assert "success-rate = 97.2" in message(later, "Progressing")
    assert not any(o["metadata"]["name"] == "churn-canary" for o in later.apply)
    assert len(later.status.history) == 1


def test_the_next_reconcile_is_when_the_next_analysis_is_due() -> None:
    life = Life().entered()
    assert life.last is not None and life.last.requeue_after == pytest.approx(30)
    waiting = life.tick(after=12.25)
    assert waiting.requeue_after == pytest.approx(17.75)
    assert waiting.status.phase == "Progressing" and waiting.events == ()
    held = life.tick(inconclusive(), after=17.75)
    assert held.requeue_after == pytest.approx(30)  # a whole interval after this analysis


def test_every_step_then_promotion_then_traffic_back_to_stable() -> None:
    life = Life().entered()
    life.tick(ok(), after=30)
    assert life.weights == {"stable": 50.0, "canary": 50.0}
    promoting = life.tick(ok(), after=30)
    assert promoting.status.phase == "Promoting"
    assert reasons(promoting) == ["PromotionStarted", "Promoting"]
    # Stable takes the canary's model; traffic stays where it was until it runs everywhere.
    assert env(promoting, "churn-stable")["MODELSHIP_MODEL_SHA256"] == SHA_CANARY
    assert life.weights == {"stable": 50.0, "canary": 50.0}
    assert promoting.requeue_after is None  # nothing to analyse any more
    done = life.tick(after=3)
    assert done.status.phase == "Promoted"
    assert life.weights == {"stable": 100.0, "canary": 0.0}
    assert [h.outcome for h in done.status.history] == ["Promoted"]
    assert done.status.rolled_out is not None and done.status.rolled_out.previous is not None
    assert done.status.rolled_out.previous.sha256 == SHA_STABLE


def test_a_reconcile_replayed_after_a_crash_decides_the_same_and_never_twice() -> None:
    life = Life().entered()
    life.tick(ok(), after=30)
    lost = life.tick(ok(), after=30, replay=True)  # Promoting decided, status never written
    again = life.tick(ok(), after=1)  # the restarted operator analyses again
    assert lost.status.phase == again.status.phase == "Promoting"
    assert env(lost, "churn-stable") == env(again, "churn-stable")
    # Once Promoting is written, no later analysis decides anything again.
    after = life.tick(ok(), after=30)
    assert after.status.phase in ("Promoting", "Promoted")
    assert "PromotionStarted" not in reasons(after)
    assert sum(h.outcome == "Promoted" for h in after.status.history) <= 1


@pytest.mark.parametrize(
    ("action", "phase", "canary_weight", "event", "then"),
    [
        ("promote", "Promoting", 10.0, "PromotionStarted", "Promoted"),
        ("promote/2", "Promoting", 10.0, "PromotionStarted", "Promoted"),
        ("abort", "RolledBack", 0.0, "Aborted", "RolledBack"),
        ("abort/x1", "RolledBack", 0.0, "Aborted", "RolledBack"),
        ("retry", "Progressing", 10.0, None, "Progressing"),  # nothing to retry
        ("dance", "Progressing", 10.0, None, "Progressing"),  # not a command
    ],
)
def test_actions_from_the_annotation(
    action: str, phase: str, canary_weight: float, event: str | None, then: str
) -> None:
    life = Life().entered()
    life.annotations[ACTION_ANNOTATION] = action
    p = life.tick(after=1)
    assert p.status.phase == phase
    assert life.weights["canary"] == canary_weight
    assert (event in reasons(p)) if event else not {"PromotionStarted", "Aborted"} & set(reasons(p))
    assert p.status.last_handled_action == action
    # The same annotation is handled once: the next reconcile does nothing more.
    again = life.tick(after=1)  # (the cluster ran what the first asked for)
    assert again.status.phase == then
    assert [h.outcome for h in again.status.history] == [h.outcome for h in p.status.history] + (
        ["Promoted"] if then == "Promoted" else []
    )
    assert not {"PromotionStarted", "Aborted", "ActionIgnored"} & set(reasons(again))


def test_retry_after_a_rollback_starts_again_from_the_first_step() -> None:
    life = Life().entered()
    life.tick(failed(), after=30)
    life.annotations[ACTION_ANNOTATION] = "retry/1"
    retried = life.tick(after=1)
    assert retried.status.phase == "Progressing" and retried.status.step == 0
    assert retried.status.failed_checks == 0
    assert "RolloutRetried" in reasons(retried)
    life.tick(after=1)  # the canary pod is (still) ready: it enters again
    assert life.weights == {"stable": 90.0, "canary": 10.0}
    # An abort asked after the rollout ended is refused with a reason.
    life.annotations[ACTION_ANNOTATION] = "abort/1"
    life.tick(failed(), after=30)
    late = life.tick(after=1)
    assert late.status.phase == "RolledBack"
    life.annotations[ACTION_ANNOTATION] = "promote/9"
    ignored = life.tick(after=1)
    assert reasons(ignored) == ["ActionIgnored"] and ignored.status.phase == "RolledBack"


def test_pause_holds_traffic_and_stops_analysis_until_resumed() -> None:
    life = Life().entered()
    life.paused = True
    paused = life.tick(after=5)
    assert paused.status.phase == "Paused"
    assert "paused by spec.paused" in message(paused, "Progressing")
    assert life.weights == {"stable": 90.0, "canary": 10.0}
    assert paused.requeue_after is None
    life.paused = False
    resumed = life.tick(after=60)
    assert resumed.status.phase == "Progressing"
    # The step timer restarts: the first analysis is a whole interval after resuming.
    assert resumed.requeue_after == pytest.approx(30)
    assert life.tick(ok(), after=30).status.step == 1


def test_errors_pause_and_the_first_analysis_that_runs_resumes() -> None:
    life = Life().entered()
    paused = life.tick(error(), after=30)
    assert paused.status.phase == "Paused" and paused.status.consecutive_errors == 1
    assert paused.requeue_after == pytest.approx(30)  # still tried every interval
    still = life.tick(error(), after=30)
    assert still.status.phase == "Paused" and "2 times in a row" in message(still, "Progressing")
    recovered = life.tick(ok(), after=30)
    assert recovered.status.phase == "Progressing" and recovered.status.step == 1
    assert reasons(recovered)[:2] == ["AnalysisRecovered", "StepAdvanced"]
    assert recovered.status.consecutive_errors == 0


def test_a_stale_analysis_is_not_counted() -> None:
    life = Life().entered()
    stale = life.analysis(ok())
    life.now += timedelta(seconds=30)
    p = plan(life.resource(), cluster(life.last), SETTINGS, life.now, analysis=stale)  # type: ignore[arg-type]
    assert p.status.step == 0 and p.status.last_analysis == []


# --- the status recorded before acting ----------------------------------------------------


def _with_degraded(status: Any, degraded: str | None) -> Any:
    from modelship_operator.conditions import Verdict, set_condition

    if degraded is None:
        return status.model_copy(
            update={"conditions": [c for c in status.conditions if c.type != "Degraded"]}
        )
    verdict = Verdict(degraded, "ApplyFailed" if degraded == "True" else "AsExpected", "x")
    return status.model_copy(
        update={"conditions": set_condition(status.conditions, "Degraded", verdict, T0, 1)}
    )


@pytest.mark.parametrize(
    ("old", "refused", "recorded", "settled", "events"),
    [
        ("True", False, "True", "False", ["Recovered"]),  # cleared once acting succeeds
        ("False", True, "False", "True", ["ApplyFailed"]),  # set once acting meets a refusal
        (None, False, None, "False", []),
        ("False", False, "False", "False", []),
    ],
)
def test_degraded_is_recorded_as_it_was_before_acting_and_settled_after(
    old: str | None, refused: bool, recorded: str | None, settled: str, events: list[str]
) -> None:
    life = Life().entered()
    p = life.tick(ok(), after=30)
    life.last = replace(p, status=_with_degraded(p.status, old))
    observed = cluster(life.last)
    q = life.tick()
    degraded = q.decided.condition("Degraded")
    assert (degraded.status if degraded else None) == recorded
    assert q.decided.step == p.status.step == 1  # the decision is all there
    failures = [Failure("ApplyFailed", "Deployment churn-canary was refused")] if refused else []
    after = settle(q.decided, observed, failures, life.now)
    degraded = after.condition("Degraded")
    assert degraded is not None and degraded.status == settled
    assert [e.reason for e in recorded_since(q.decided, after)] == events
    # Only Degraded is decided again.
    assert after.model_copy(update={"conditions": [], "transitions": []}) == q.decided.model_copy(
        update={"conditions": [], "transitions": []}
    )
    assert [c for c in after.conditions if c.type != "Degraded"] == [
        c for c in q.decided.conditions if c.type != "Degraded"
    ]
