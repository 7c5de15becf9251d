"""The rollout step machine, driven by an injected clock: every rule of docs/analysis.md's
transition table, crash-resume through status, and the A/B and shadow stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from modelship_operator.analysis.abtest import ABResult, Counts
from modelship_operator.analysis.verdict import CheckResult
from modelship_operator.rollout import (
    PAUSED_BY_ERRORS,
    PAUSED_BY_USER,
    Analysis,
    Command,
    RolloutState,
    Step,
    advance,
    analysis_delay,
    analysis_due,
    deadline_passed,
    next_analysis_at,
    parse_action,
    sizing_share,
    stage,
)
from modelship_operator.spec import Strategy
from modelship_operator.status import ModelDeploymentStatus, ModelRef, Traffic

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CANDIDATE = ModelRef(version="1.5.0", uri="file:///m/1.5.0.skops", sha256="a" * 64)
KEY = "k1"


def strategy(**kwargs: Any) -> Strategy:
    base: dict[str, Any] = {
        "steps": [10, 25, 50],
        "interval": "30s",
        "maxFailedChecks": 3,
        "maxConsecutiveErrors": 2,
        "progressDeadline": "5m",
    }
    return Strategy.model_validate(base | kwargs)


def ok(metric: str = "success-rate") -> CheckResult:
    return CheckResult(metric, "Successful", "99.9 within bounds", 99.9, ">= 99", samples=500)


def failed(metric: str = "success-rate", value: float = 97.2) -> CheckResult:
    return CheckResult(
        metric, "Failed", f"{value} is below the minimum 99", value, ">= 99", samples=500
    )


def inconclusive() -> CheckResult:
    return CheckResult(
        "success-rate", "Inconclusive", "3 requests, fewer than minSamples 100", samples=3
    )


def error() -> CheckResult:
    return CheckResult("success-rate", "Error", "the canary's query failed: unreachable: refused")


@dataclass
class Rollout:
    """A rollout driven through time the way the reconcile would drive it."""

    strategy: Strategy
    now: datetime = T0
    state: RolloutState | None = None
    steps: list[Step] = field(default_factory=list)
    key: str = KEY

    def tick(
        self,
        *checks: CheckResult,
        after: float = 0,
        ready: bool = True,
        paused: bool = False,
        command: Command | None = None,
        ab: ABResult | None = None,
        analysis: Analysis | None = None,
    ) -> Step:
        """Advance the clock by ``after`` seconds and decide; ``checks`` (or ``ab``) form
        this tick's analysis, tagged with the current key, stage and step."""
        self.now += timedelta(seconds=after)
        if analysis is None and (checks or ab) and self.state is not None:
            analysis = Analysis(
                key=self.state.key,
                stage=stage(self.strategy, self.state),
                step=self.state.step,
                at=self.now,
                checks=tuple(checks),
                ab=ab,
                ab_counts=(Counts(700, 1000), Counts(780, 1000)) if ab else None,
            )
        result = advance(
            self.strategy,
            self.state,
            self.now,
            key=self.key,
            candidate=CANDIDATE,
            canary_ready=ready,
            analysis=analysis,
            paused=paused,
            command=command,
        )
        self.state = result.state
        self.steps.append(result)
        return result

    def through_status(self) -> None:
        """What a restarted operator sees: the state written to status and read back."""
        assert self.state is not None
        status = ModelDeploymentStatus.model_validate(
            {**ModelDeploymentStatus(**self.state.status_fields()).to_api()}  # type: ignore[arg-type]
        )
        again = RolloutState.from_status(status)
        assert again == self.state
        self.state = again

    @property
    def s(self) -> RolloutState:
        assert self.state is not None
        return self.state


def entered(strat: Strategy | None = None) -> Rollout:
    r = Rollout(strat or strategy())
    r.tick(ready=False)
    r.tick(after=5)  # the canary pod is ready
    return r


def reasons(step: Step) -> list[str]:
    return [e.reason for e in step.events]


# --- entry -----------------------------------------------------------------------------------


def test_no_traffic_until_a_canary_pod_is_ready() -> None:
    r = Rollout(strategy())
    first = r.tick(ready=False)
    assert first.decision.action == "wait" and "waiting for a ready pod" in first.decision.reason
    assert r.s.traffic == Traffic(stable=100, canary=0) and r.s.phase == "Progressing"
    assert not analysis_due(r.strategy, r.s, r.now + timedelta(hours=1))
    step = r.tick(after=20)
    assert step.decision.action == "enter" and step.decision.weight == 10
    assert r.s.traffic == Traffic(stable=90, canary=10)
    assert r.s.progress.step_started_at == T0 + timedelta(seconds=20)
    assert reasons(step) == ["CanaryEntered"]


def test_a_canary_that_never_gets_ready_fails_at_the_deadline() -> None:
    r = Rollout(strategy())
    r.tick(ready=False)
    assert r.tick(after=299, ready=False).decision.action == "wait"
    step = r.tick(after=1, ready=False)
    assert step.decision.action == "fail" and r.s.phase == "Failed"
    assert "no ready pod within progressDeadline 5m" in step.decision.reason
    assert step.finished is not None and step.finished.outcome == "Failed"


# --- timing ----------------------------------------------------------------------------------


def test_an_analysis_is_due_one_whole_interval_into_a_step() -> None:
    r = entered()
    start = r.now
    assert next_analysis_at(r.strategy, r.s) == start + timedelta(seconds=30)
    assert not analysis_due(r.strategy, r.s, start + timedelta(seconds=29))
    assert analysis_due(r.strategy, r.s, start + timedelta(seconds=30))
    r.tick(inconclusive(), after=30)
    assert next_analysis_at(r.strategy, r.s) == start + timedelta(seconds=60)


def test_an_analysis_is_late_by_the_time_past_its_due_time() -> None:
    r = entered()
    start = r.now
    assert analysis_delay(r.strategy, r.s, start + timedelta(seconds=29)) is None  # not due
    assert analysis_delay(r.strategy, r.s, start + timedelta(seconds=30)) == 0.0
    assert analysis_delay(r.strategy, r.s, start + timedelta(seconds=31.5)) == 1.5
    r.tick(inconclusive(), after=33)  # the next is due an interval after this one
    assert analysis_delay(r.strategy, r.s, start + timedelta(seconds=63)) == 0.0
    assert analysis_delay(r.strategy, r.s, start + timedelta(seconds=65)) == 2.0


def test_an_analysis_from_before_the_step_is_ignored() -> None:
    r = entered()
    early = r.tick(ok(), after=10)  # its window reaches back before the step began
    assert early.decision.action == "wait" and r.s.step == 0 and early.last_analysis is None


@pytest.mark.parametrize("mismatch", [{"key": "other"}, {"step": 1}, {"stage": "shadow"}], ids=str)
def test_an_analysis_for_another_rollout_or_step_is_ignored(mismatch: dict[str, Any]) -> None:
    r = entered()
    fields = {"key": KEY, "stage": "canary", "step": 0} | mismatch
    stale = Analysis(at=r.now + timedelta(seconds=30), checks=(ok(),), **fields)
    step = r.tick(after=30, analysis=stale)
    assert step.decision.action == "wait" and r.s.step == 0


# --- advancing and promotion -----------------------------------------------------------------


def test_successful_checks_walk_every_step_then_promote_automatically() -> None:
    r = entered()
    weights = []
    for _ in range(2):
        step = r.tick(ok(), ok("latency-p99"), after=30)
        assert step.decision.action == "advance"
        assert step.last_analysis is not None and len(step.last_analysis) == 2
        weights.append(r.s.traffic.canary)
    assert weights == [25, 50] and r.s.step == 2
    assert "StepAdvanced" in reasons(r.steps[-1])
    step = r.tick(ok(), after=30)
    assert step.decision.action == "promote" and r.s.phase == "Promoting"
    assert r.s.traffic.canary == 50  # unchanged: the reconcile rolls stable, then returns traffic
    assert reasons(step) == ["PromotionStarted"]
    # nothing decides a promotion twice, not even another analysis or a promote command
    again = r.tick(ok(), after=30, command="promote")
    assert again.decision.action == "wait" and r.s.phase == "Promoting"
    assert reasons(again) == ["ActionIgnored"]


def test_manual_promotion_waits_after_the_last_step_and_keeps_checking() -> None:
    r = entered(strategy(promotion="Manual", steps=[20, 60]))
    r.tick(ok(), after=30)
    step = r.tick(ok(), after=30)
    assert step.decision.action == "await-promotion" and r.s.step == 2
    assert r.s.traffic.canary == 60 and r.s.phase == "Progressing"
    assert "waiting for promote" in step.decision.reason
    # waiting has no deadline, and more Successful analyses only hold
    hold = r.tick(ok(), after=600)
    assert hold.decision.transition == "awaiting" and r.s.phase == "Progressing"
    # a failure while waiting still counts toward a rollback
    r.tick(failed(), after=30)
    assert r.s.failed_checks == 1
    promoted = r.tick(after=1, command="promote")
    assert promoted.decision.action == "promote" and r.s.phase == "Promoting"


def test_a_user_promote_skips_the_remaining_analysis() -> None:
    r = entered()
    step = r.tick(after=1, command="promote")
    assert step.decision.action == "promote" and r.s.phase == "Promoting"
    assert "skipping the remaining analysis" in step.decision.reason


# --- failures and rollback -------------------------------------------------------------------


def test_failed_checks_count_then_roll_back_at_once_with_the_metric() -> None:
    r = entered()
    first = r.tick(failed(value=98.0), ok("latency-p99"), after=30)
    assert first.decision.action == "hold" and r.s.failed_checks == 1 and r.s.step == 0
    assert first.events[0].type == "Warning" and "(1/3)" in first.events[0].message
    r.tick(ok(), after=30)  # a success in between advances, the count stays
    assert r.s.step == 1 and r.s.failed_checks == 1
    r.tick(failed(), after=30)
    last = r.tick(failed("latency-p99", 0.81), after=30)
    assert last.decision.action == "rollback" and r.s.phase == "RolledBack"
    assert r.s.traffic == Traffic(stable=100, canary=0, mirror=0)
    assert last.decision.weight == 0
    assert last.decision.failing is not None and last.decision.failing.metric == "latency-p99"
    summary = "latency-p99 = 0.81, needs >= 99"
    assert summary in last.decision.reason
    assert last.finished is not None and last.finished.outcome == "RolledBack"
    assert summary in (last.finished.reason or "")
    assert any(summary in e.message for e in last.events)
    assert last.last_analysis is not None and last.last_analysis[0].verdict == "Failed"
    assert r.s.progress.finished_at == r.now


def test_max_failed_checks_one_rolls_back_at_the_first_failure() -> None:
    r = entered(strategy(maxFailedChecks=1))
    assert r.tick(failed(), after=30).decision.action == "rollback"


def test_failed_beats_inconclusive_and_error_in_one_analysis() -> None:
    r = entered(strategy(maxFailedChecks=1))
    step = r.tick(inconclusive(), error(), failed(), after=30)
    assert step.decision.action == "rollback"


# --- errors ----------------------------------------------------------------------------------


def test_errors_pause_after_the_limit_and_the_first_working_analysis_resumes() -> None:
    r = entered(strategy(steps=[50]))  # one step: a blind promotion would be one Successful away
    first = r.tick(error(), after=30)
    assert first.decision.action == "hold" and r.s.consecutive_errors == 1
    assert r.s.phase == "Progressing" and r.s.failed_checks == 0
    second = r.tick(error(), after=30)
    assert second.decision.action == "pause" and r.s.phase == "Paused"
    reason = r.s.progress.pause_reason or ""
    assert reason.startswith(PAUSED_BY_ERRORS) and "unreachable" in reason
    assert r.s.traffic.canary == 50  # held where it is, not rolled back
    # still paused: analyses keep being tried, no deadline runs
    assert analysis_due(r.strategy, r.s, r.now + timedelta(seconds=30))
    for _ in range(20):
        r.tick(error(), after=30)
    assert r.s.phase == "Paused" and r.s.consecutive_errors == 22
    assert r.tick(after=600).decision.action == "wait"
    # queries work again: resumed, and the working analysis counts
    back = r.tick(inconclusive(), after=30)
    assert r.s.phase == "Progressing" and r.s.consecutive_errors == 0
    assert "AnalysisRecovered" in reasons(back) and back.decision.action == "hold"
    assert r.s.progress.step_started_at == r.now  # the pause did not eat the deadline


def test_an_error_is_never_a_promotion() -> None:
    r = entered(strategy(steps=[50], maxConsecutiveErrors=100))
    for _ in range(5):
        assert r.tick(error(), ok("latency-p99"), after=30).decision.action == "hold"
    assert r.s.phase == "Progressing"


def test_a_success_resets_the_error_count() -> None:
    r = entered()
    r.tick(error(), after=30)
    r.tick(ok(), after=30)
    assert r.s.consecutive_errors == 0 and r.s.step == 1


def test_retry_resumes_a_rollout_paused_by_errors() -> None:
    r = entered()
    r.tick(error(), after=30)
    r.tick(error(), after=30)
    step = r.tick(after=1, command="retry")
    assert step.decision.action == "resume" and r.s.phase == "Progressing"
    assert r.s.consecutive_errors == 0


# --- inconclusive and the deadline -----------------------------------------------------------


def test_inconclusive_holds_and_the_deadline_fails_the_rollout() -> None:
    r = entered()
    for _ in range(9):
        step = r.tick(inconclusive(), after=30)
        assert step.decision.action == "hold" and r.s.step == 0
        assert "fewer than minSamples" in step.decision.reason
    assert r.s.failed_checks == 0 and r.s.consecutive_errors == 0
    assert deadline_passed(r.strategy, r.s, r.now + timedelta(seconds=30))
    last = r.tick(inconclusive(), after=30)
    assert last.decision.action == "fail" and r.s.phase == "Failed"
    assert r.s.traffic.canary == 0
    assert "no decision within progressDeadline 5m at step 1/3" in last.decision.reason
    assert "fewer than minSamples" in last.decision.reason
    assert last.finished is not None and last.finished.outcome == "Failed"


def test_the_deadline_also_ends_a_rollout_between_analyses() -> None:
    r = entered()
    assert r.tick(after=300).decision.action == "fail"


def test_the_deadline_restarts_at_every_step() -> None:
    r = entered()
    r.tick(inconclusive(), after=240)
    r.tick(ok(), after=30)  # step 2 begins at 270s
    assert r.tick(inconclusive(), after=240).decision.action == "hold"


# --- the user's pause, abort, retry ----------------------------------------------------------


def test_spec_paused_holds_traffic_and_analysis_until_unpaused() -> None:
    r = entered()
    r.tick(ok(), after=30)
    step = r.tick(after=5, paused=True)
    assert step.decision.action == "pause" and r.s.phase == "Paused"
    assert r.s.progress.pause_reason == PAUSED_BY_USER and r.s.traffic.canary == 25
    assert not analysis_due(r.strategy, r.s, r.now + timedelta(hours=1))
    assert r.tick(after=3600, paused=True).decision.action == "wait"  # no deadline while paused
    resumed = r.tick(after=1)
    assert resumed.decision.action == "resume" and r.s.phase == "Progressing"
    assert r.s.progress.step_started_at == r.now and r.s.step == 1
    assert r.tick(ok(), after=30).decision.action == "advance"


def test_abort_rolls_back_and_retry_starts_again() -> None:
    r = entered()
    r.tick(ok(), after=30)
    step = r.tick(after=1, command="abort")
    assert step.decision.action == "rollback" and r.s.phase == "RolledBack"
    assert step.finished is not None and step.finished.outcome == "Aborted"
    assert r.tick(ok(), after=30).decision.action == "wait"  # over: analyses change nothing
    again = r.tick(after=1, command="retry", ready=False)
    assert again.path == ("retry-rejected", "wait-ready") and r.s.phase == "Progressing"
    assert reasons(again) == ["RolloutRetried"]
    assert (r.s.step, r.s.failed_checks, r.s.traffic.canary) == (0, 0, 0)
    assert r.tick(after=1).decision.action == "enter" and r.s.traffic.canary == 10


def test_retry_while_the_canary_is_still_up_enters_at_once() -> None:
    # Within scaleDownDelay the rejected canary's pods still run and are ready: nothing
    # about them changes, so the retry itself must enter (a later reconcile may not come).
    r = entered()
    r.tick(after=1, command="abort")
    again = r.tick(after=1, command="retry", ready=True)
    assert again.path == ("retry-rejected", "enter") and r.s.phase == "Progressing"
    assert reasons(again) == ["RolloutRetried", "CanaryEntered"]
    assert (r.s.step, r.s.traffic.canary) == (0, 10)


def test_commands_that_do_not_apply_are_ignored_with_a_warning() -> None:
    r = entered()
    step = r.tick(after=1, command="retry")
    assert step.decision.action == "wait" and r.s.phase == "Progressing"
    r.tick(after=1, command="abort")
    ignored = r.tick(after=1, command="promote")
    assert r.s.phase == "RolledBack" and reasons(ignored) == ["ActionIgnored"]


@pytest.mark.parametrize(
    ("value", "handled", "expected"),
    [
        ("promote", None, "promote"),
        ("abort/3", "abort/2", "abort"),
        ("abort/2", "abort/2", None),
        ("Retry", None, "retry"),
        ("delete", None, None),
        (None, None, None),
        ("", None, None),
    ],
)
def test_parse_action(value: str | None, handled: str | None, expected: str | None) -> None:
    assert parse_action(value, handled) == expected


# --- restarts: spec changes and crashes ------------------------------------------------------


def test_a_new_key_restarts_from_the_first_step() -> None:
    r = entered()
    r.tick(ok(), after=30)
    r.tick(failed(), after=30)
    assert (r.s.step, r.s.failed_checks) == (1, 1)
    r.key = "k2"
    step = r.tick(after=1)
    assert r.s.key == "k2" and r.s.step == 0 and r.s.failed_checks == 0
    assert r.s.traffic.canary == 10  # weight reset to the first step (the canary is ready)
    assert step.finished is not None and step.finished.outcome == "Superseded"
    assert "RolloutRestarted" in reasons(step) and step.last_analysis == ()


def test_state_survives_status_and_a_replayed_analysis_does_not_advance_twice() -> None:
    r = entered()
    r.tick(ok(), after=30)
    r.tick(error(), after=30)
    r.through_status()
    assert (r.s.step, r.s.consecutive_errors) == (1, 1)
    analysis = Analysis(KEY, "canary", 1, r.now + timedelta(seconds=30), (ok(),))
    r.tick(after=30, analysis=analysis)
    assert r.s.step == 2
    r.through_status()  # the operator is SIGKILLed and restarts, the same analysis arrives
    replay = r.tick(after=0, analysis=analysis)
    assert replay.decision.action == "wait" and r.s.step == 2


def test_promoting_survives_a_restart_without_a_second_decision() -> None:
    r = entered(strategy(steps=[50]))
    r.tick(ok(), after=30)
    assert r.s.phase == "Promoting"
    r.through_status()
    for _ in range(3):
        assert r.tick(ok(), after=30).decision.action == "wait"
    assert r.s.phase == "Promoting"


def test_from_status_without_a_rollout() -> None:
    assert RolloutState.from_status(ModelDeploymentStatus()) is None
    assert RolloutState.from_status(ModelDeploymentStatus(phase="Idle")) is None


# --- shadow ----------------------------------------------------------------------------------


def agreement(verdict: str = "Successful", value: float = 0.99) -> CheckResult:
    return CheckResult("prediction-agreement", verdict, "x", value, ">= 0.95")  # type: ignore[arg-type]


def test_shadow_mirrors_then_moves_to_the_first_canary_step() -> None:
    r = entered(strategy(type="Shadow", shadow={"mirrorPercent": 50}))
    assert r.s.traffic == Traffic(stable=100, canary=0, mirror=50)
    assert stage(r.strategy, r.s) == "shadow"
    assert "ShadowStarted" in reasons(r.steps[-1])
    r.tick(ok(), agreement("Inconclusive"), after=30)
    assert r.s.traffic.mirror == 50
    step = r.tick(ok(), agreement(), after=30)
    assert step.decision.action == "advance" and "ShadowAccepted" in reasons(step)
    assert r.s.traffic == Traffic(stable=90, canary=10, mirror=0) and r.s.step == 0
    assert stage(r.strategy, r.s) == "canary"


def test_shadow_that_disagrees_is_rejected_without_serving_anyone() -> None:
    r = entered(strategy(type="Shadow", maxFailedChecks=2))
    r.tick(ok(), agreement("Failed", 0.3), after=30)
    step = r.tick(ok(), agreement("Failed", 0.28), after=30)
    assert step.decision.action == "rollback" and r.s.phase == "RolledBack"
    assert "rejected in shadow" in step.decision.reason
    assert "prediction-agreement" in step.decision.reason
    assert all(s.state.traffic.canary == 0 for s in r.steps)


# --- A/B -------------------------------------------------------------------------------------


def ab(decision: str, p: float | None = 0.01) -> ABResult:
    return ABResult(decision, p, f"{decision} message")  # type: ignore[arg-type]


def test_ab_test_runs_at_the_split_and_promotes_a_significant_canary() -> None:
    r = entered(strategy(type="ABTest", abTest={"split": 30}))
    assert r.s.traffic == Traffic(stable=70, canary=30)
    hold = r.tick(ok(), ab=ab("undecided", 0.4), after=30)
    assert hold.decision.action == "hold" and r.s.ab_test is not None
    assert r.s.ab_test.p_value == 0.4 and r.s.ab_test.canary.trials == 1000
    win = r.tick(ok(), ab=ab("canary-wins"), after=30)
    assert win.decision.action == "promote" and r.s.phase == "Promoting"
    assert r.s.ab_test is not None and r.s.ab_test.winner == "canary"


def test_ab_test_counts_from_the_split_not_from_the_wait_for_a_ready_canary() -> None:
    r = Rollout(strategy(type="ABTest"))
    r.tick(ready=False)
    assert r.s.ab_test is None or r.s.ab_test.split_at is None
    r.tick(after=20)  # the canary pod got ready 20 s after the rollout began
    assert r.s.ab_test is not None and r.s.ab_test.split_at == r.now
    assert r.s.ab_test.split_at == r.s.progress.started_at + timedelta(seconds=20)
    r.tick(ok(), ab=ab("undecided", 0.4), after=30)
    assert r.s.ab_test is not None and r.s.ab_test.split_at == T0 + timedelta(seconds=20)


def test_ab_test_manual_waits_for_promote_after_a_win() -> None:
    r = entered(strategy(type="ABTest", promotion="Manual"))
    first = r.tick(ok(), ab=ab("canary-wins"), after=30)
    assert first.decision.action == "await-promotion" and "AwaitingPromotion" in reasons(first)
    again = r.tick(ok(), ab=ab("canary-wins"), after=30)
    assert again.decision.transition == "awaiting" and reasons(again) == []
    assert r.tick(after=3600).decision.transition == "awaiting"  # no deadline while waiting
    assert r.tick(after=1, command="promote").decision.action == "promote"


@pytest.mark.parametrize(
    ("decision", "outcome"), [("stable-wins", "RolledBack"), ("no-difference", "NoWinner")]
)
def test_ab_test_keeps_stable(decision: str, outcome: str) -> None:
    r = entered(strategy(type="ABTest"))
    step = r.tick(inconclusive(), ab=ab(decision, 0.5), after=30)
    assert step.decision.action == "rollback" and r.s.phase == "RolledBack"
    assert r.s.traffic.canary == 0
    assert step.finished is not None and step.finished.outcome == outcome


def test_ab_winner_needs_passing_guardrails_and_failing_ones_roll_back() -> None:
    r = entered(strategy(type="ABTest", maxFailedChecks=1))
    hold = r.tick(inconclusive(), ab=ab("canary-wins"), after=30)
    assert hold.decision.action == "hold" and r.s.phase == "Progressing"
    assert r.tick(failed(), ab=ab("canary-wins"), after=30).decision.action == "rollback"


def test_ab_test_has_no_step_deadline_of_its_own() -> None:
    """The A/B deadline is the statistical verdict's (no-difference), not a Failed rollout."""
    r = entered(strategy(type="ABTest"))
    assert r.tick(after=3600).decision.action == "wait"
    assert r.s.phase == "Progressing"


@pytest.mark.parametrize(
    ("kind", "ticks", "share"),
    [
        ("Canary", ["waiting"], 10),  # waiting to enter: sized for the first step
        ("Canary", ["entered"], 25),  # at 10 %: sized for the next step, 25 %
        ("Canary", ["entered", "ok"], 50),
        ("Canary", ["entered", "ok", "ok"], 50),  # the last step: what it has
        ("Shadow", ["entered"], 100),  # every request mirrored to it
    ],
)
def test_a_canary_is_sized_for_its_next_step(kind: str, ticks: list[str], share: int) -> None:
    r = Rollout(strategy(type=kind, steps=[10, 25, 50]))
    for tick in ticks:
        if tick == "ok":
            r.tick(ok(), after=30)
        else:
            r.tick(ready=tick == "entered")
    assert sizing_share(r.strategy, r.s) == share


def test_the_ab_counts_begin_at_the_split_or_for_an_older_status_at_the_start() -> None:
    from modelship_operator.analysis.runner import ab_counted_from

    r = Rollout(strategy(type="ABTest"))
    r.tick(ready=False)
    assert ab_counted_from(r.s) == T0  # no split yet (or a status from before splitAt)
    r.tick(after=20)
    assert ab_counted_from(r.s) == T0 + timedelta(seconds=20)
