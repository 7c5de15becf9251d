"""The rollout step machine: from (strategy, state from status, this interval's verdicts,
the user's commands, now) to the next state and one decision. Pure; the clock is an argument.

The state is exactly what ``status`` holds (phase, step, traffic, counters and the
``status.rollout`` timestamps, the A/B test's p-value), so a restarted operator resumes at
the same step: a decision is acted on only after the status recording it is written, and a
phase that is already ``Promoting`` or terminal is never decided again (no double promotion).

Rules (docs/analysis.md has the full transition table):

* entry: a canary gets traffic (its first step, the A/B split or the shadow mirror) once it
  has a ready pod; ``progressDeadline`` bounds that wait too;
* an analysis counts only if it covers a whole interval spent at the current step;
* all checks Successful -> the next step; after the last step, promotion (``Automatic``) or
  waiting at the last step for ``promote`` (``Manual``, shown as step = len(steps));
* Failed -> ``failedChecks`` + 1; at ``maxFailedChecks`` roll back: weight 0 at once;
* Error -> ``consecutiveErrors`` + 1; at ``maxConsecutiveErrors`` phase Paused with the
  reason; the analysis keeps being tried while paused and the first one that runs resumes the
  rollout. Errors never promote and never roll back;
* Inconclusive -> hold; never promotes, never rolls back. ``progressDeadline`` at one step
  without a decision ends the rollout as **Failed** (traffic back to stable): a canary that
  cannot be shown good is not kept half-rolled-out, and Failed (not RolledBack) tells "could
  not tell" from "was bad";
* Shadow: the mirrored candidate must pass every check and the agreement check; then it moves
  to the first canary step; failing ``maxFailedChecks`` times rejects it (RolledBack);
* A/B: metric checks act as guardrails (Failed rolls back); the statistical verdict promotes
  the winner (canary) or keeps stable (stable wins, or no difference by the deadline);
* commands: ``spec.paused`` pauses and resumes; ``promote`` skips the remaining analysis;
  ``abort`` rolls back; ``retry`` restarts a rolled-back or failed rollout from the first
  step, or resumes one paused by errors;
* a new rollout key (a new desired model, or a changed strategy) restarts from the first
  step; :mod:`modelship_operator.rollout` decides the key and the candidate from the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Literal

from modelship_operator.analysis.abtest import ABResult, Counts
from modelship_operator.analysis.verdict import CheckResult, first, overall
from modelship_operator.conditions import Event
from modelship_operator.spec import Strategy
from modelship_operator.status import (
    TERMINAL_PHASES,
    ABTestStatus,
    ABVariantStats,
    AnalysisResult,
    HistoryEntry,
    ModelDeploymentStatus,
    ModelRef,
    Outcome,
    Phase,
    RolloutProgress,
    Traffic,
    Verdict,
)

#: ``status.rollout.pauseReason`` when the user paused with spec.paused.
PAUSED_BY_USER: Final = "paused by spec.paused"
#: Prefix of ``pauseReason`` when analyses could not run ``maxConsecutiveErrors`` times.
PAUSED_BY_ERRORS: Final = "paused: the analysis could not run"

Command = Literal["promote", "abort", "retry"]
COMMANDS: Final[tuple[Command, ...]] = ("promote", "abort", "retry")
Stage = Literal["entering", "shadow", "canary", "abtest", "done"]
Action = Literal[
    "wait",  # nothing to decide now (not due, paused, promoting, finished)
    "enter",  # the canary gets its first traffic
    "hold",  # an analysis ran and the rollout stays at this step
    "advance",  # next step (or shadow accepted: first canary step)
    "await-promotion",  # Manual: all steps passed, waiting for promote
    "pause",  # paused (by the user, or after too many errors)
    "resume",  # unpaused (by the user, or the analysis runs again)
    "promote",  # phase Promoting: stable takes the canary's model
    "rollback",  # phase RolledBack: weight 0 at once
    "fail",  # phase Failed: no decision within progressDeadline; weight 0
    "restart",  # a new rollout (new key, or retry)
]


@dataclass(frozen=True)
class RolloutState:
    """A rollout as recorded in status (see :meth:`from_status` and :meth:`status_fields`)."""

    phase: Phase
    step: int
    traffic: Traffic
    progress: RolloutProgress
    failed_checks: int = 0
    consecutive_errors: int = 0
    ab_test: ABTestStatus | None = None

    @property
    def key(self) -> str:
        return self.progress.key

    @property
    def entered(self) -> bool:
        """Whether the canary has had traffic (served or mirrored) in this rollout."""
        return self.traffic.canary > 0 or self.traffic.mirror > 0

    @property
    def paused_by_user(self) -> bool:
        return self.phase == "Paused" and self.progress.pause_reason == PAUSED_BY_USER

    @property
    def paused_by_errors(self) -> bool:
        reason = self.progress.pause_reason or ""
        return self.phase == "Paused" and reason.startswith(PAUSED_BY_ERRORS)

    @classmethod
    def begin(cls, key: str, candidate: ModelRef | None, now: datetime) -> RolloutState:
        """A new rollout at its first step, no traffic until the canary is ready."""
        progress = RolloutProgress(
            key=key, candidate=candidate, started_at=now, step_started_at=now
        )
        return cls(phase="Progressing", step=0, traffic=Traffic(), progress=progress)

    @classmethod
    def from_status(cls, status: ModelDeploymentStatus) -> RolloutState | None:
        """The rollout recorded in ``status`` (None: no rollout, or an idle one)."""
        if status.rollout is None or status.phase in (None, "Idle"):
            return None
        return cls(
            phase=status.phase,
            step=status.step or 0,
            traffic=status.traffic or Traffic(),
            progress=status.rollout,
            failed_checks=status.failed_checks,
            consecutive_errors=status.consecutive_errors,
            ab_test=status.ab_test,
        )

    def status_fields(self) -> dict[str, object]:
        """The status fields this state sets (``ModelDeploymentStatus`` field names)."""
        return {
            "phase": self.phase,
            "step": self.step,
            "traffic": self.traffic,
            "rollout": self.progress,
            "failed_checks": self.failed_checks,
            "consecutive_errors": self.consecutive_errors,
            "ab_test": self.ab_test,
        }

    def _progress(self, **update: object) -> RolloutProgress:
        return self.progress.model_copy(update=update)


@dataclass(frozen=True)
class Analysis:
    """The verdicts of one analysis, tagged with what it was run for.

    ``key``, ``stage`` and ``step`` let the step machine ignore an analysis that no longer
    matches the rollout (a spec change or a step change since it ran)."""

    key: str
    stage: Stage
    step: int
    at: datetime
    checks: tuple[CheckResult, ...]
    ab: ABResult | None = None
    ab_counts: tuple[Counts, Counts] | None = None  # (stable, canary)

    @property
    def verdict(self) -> Verdict:
        return overall(self.checks)


@dataclass(frozen=True)
class Decision:
    """What the rollout does now, and why (the why goes to the Progressing condition)."""

    action: Action
    reason: str
    weight: int = 0
    failing: CheckResult | None = None


@dataclass(frozen=True)
class Step:
    """The step machine's answer."""

    state: RolloutState
    decision: Decision
    events: tuple[Event, ...] = ()
    #: A finished rollout to append to ``status.history`` (Promoted is recorded by the
    #: reconcile when the stable Deployment runs the canary's model).
    finished: HistoryEntry | None = None
    #: ``status.lastAnalysis`` when an analysis was used (None: keep the previous one).
    last_analysis: tuple[AnalysisResult, ...] | None = None


# --- pure helpers --------------------------------------------------------------------------


def stage(strategy: Strategy, state: RolloutState) -> Stage:
    """Which part of the rollout this is."""
    if state.phase in TERMINAL_PHASES or state.phase == "Promoting":
        return "done"
    if not state.entered:
        return "entering"
    if strategy.type == "ABTest":
        return "abtest"
    if strategy.type == "Shadow" and state.traffic.canary == 0:
        return "shadow"
    return "canary"


def entry_traffic(strategy: Strategy, shadow: bool) -> Traffic:
    """The first traffic of a rollout: shadow mirror, A/B split, or the first step."""
    if strategy.type == "ABTest":
        split = strategy.ab_test_settings.split
        return Traffic(stable=100 - split, canary=split)
    if shadow:
        return Traffic(stable=100, canary=0, mirror=strategy.shadow_settings.mirror_percent)
    return step_traffic(strategy, 0)


def step_traffic(strategy: Strategy, step: int) -> Traffic:
    weight = strategy.steps[min(step, len(strategy.steps) - 1)]
    return Traffic(stable=100 - weight, canary=weight)


def awaiting_promotion(strategy: Strategy, state: RolloutState) -> bool:
    """Manual promotion: every step passed (or the A/B canary won), waiting for promote."""
    if strategy.type == "ABTest":
        return state.ab_test is not None and state.ab_test.winner == "canary"
    return stage(strategy, state) == "canary" and state.step >= len(strategy.steps)


def analysis_due(strategy: Strategy, state: RolloutState, now: datetime) -> bool:
    """Whether to query Prometheus now: the canary has traffic, the rollout is running (or
    paused by errors, to find out whether queries work again) and a whole interval has
    passed at this step since the later of the step's start and the last analysis."""
    return (next_analysis_at(strategy, state) or now + timedelta(days=1)) <= now


def next_analysis_at(strategy: Strategy, state: RolloutState) -> datetime | None:
    """When the next analysis is due (None: none is, e.g. paused by the user or finished)."""
    running = state.phase == "Progressing" or state.paused_by_errors
    if not running or not state.entered:
        return None
    since = state.progress.step_started_at or state.progress.started_at
    last = state.progress.last_analysis_time
    if last is not None and last > since:
        since = last
    return since + strategy.interval_delta


def deadline_passed(strategy: Strategy, state: RolloutState, now: datetime) -> bool:
    """Whether this step (or the wait for a ready canary) has lasted progressDeadline."""
    since = state.progress.step_started_at or state.progress.started_at
    return now - since >= strategy.progress_deadline_delta


def parse_action(value: str | None, last_handled: str | None) -> Command | None:
    """The command in the ``modelship.io/action`` annotation (``promote``, ``abort``,
    ``retry``, optionally ``/<nonce>``), if it has not been handled yet."""
    if not value or value == last_handled:
        return None
    verb = value.split("/", 1)[0].strip().lower()
    for command in COMMANDS:
        if verb == command:
            return command
    return None


def _where(strategy: Strategy, state: RolloutState) -> str:
    current = stage(strategy, state)
    if current == "shadow":
        return f"in shadow ({state.traffic.mirror}% mirrored)"
    if current == "abtest":
        return f"in the A/B test ({state.traffic.canary}% of users)"
    steps = len(strategy.steps)
    if state.step >= steps:
        return f"after the last step ({state.traffic.canary}%)"
    return f"at step {state.step + 1}/{steps} ({state.traffic.canary}%)"


def _version(state: RolloutState) -> str:
    candidate = state.progress.candidate
    return candidate.version if candidate is not None else "?"


# --- the machine ---------------------------------------------------------------------------


def advance(
    strategy: Strategy,
    state: RolloutState | None,
    now: datetime,
    *,
    key: str,
    candidate: ModelRef | None,
    canary_ready: bool,
    analysis: Analysis | None = None,
    paused: bool = False,
    command: Command | None = None,
) -> Step:
    """The next state of the rollout of ``candidate`` under ``strategy``.

    ``state`` is the rollout as recorded in status (None: none yet); ``key`` the rollout's
    identity now (:func:`modelship_operator.rollout.rollout_key`); ``canary_ready``
    whether a canary pod is ready;
    ``analysis`` this interval's verdicts if one was run (see :func:`analysis_due`);
    ``paused`` is ``spec.paused``; ``command`` a not-yet-handled one-shot action.
    """
    if state is None or state.key != key:
        fresh = RolloutState.begin(key, candidate, now)
        events: tuple[Event, ...] = ()
        finished = None
        if state is not None and state.phase not in TERMINAL_PHASES:
            finished = HistoryEntry(
                version=_version(state),
                outcome="Superseded",
                reason="the spec changed during the rollout; analysis restarted",
                at=now,
            )
            events = (
                Event(
                    "Normal",
                    "RolloutRestarted",
                    "the canary, the model or the strategy changed: the analysis restarts "
                    "from the first step",
                ),
            )
        following = advance(
            strategy,
            fresh,
            now,
            key=key,
            candidate=candidate,
            canary_ready=canary_ready,
            paused=paused,
        )
        return replace(
            following,
            events=events + following.events,
            finished=finished or following.finished,
            last_analysis=(),
        )

    machine = _Machine(strategy, state, now)
    return machine.run(canary_ready=canary_ready, analysis=analysis, paused=paused, command=command)


class _Machine:
    """One decision; methods return the :class:`Step` for each branch."""

    def __init__(self, strategy: Strategy, state: RolloutState, now: datetime) -> None:
        self.strategy = strategy
        self.state = state
        self.before = state  # as recorded in status, before this decision
        self.now = now

    # -- outcomes -----------------------------------------------------------------------

    def _step(
        self,
        state: RolloutState,
        action: Action,
        reason: str,
        *events: Event,
        failing: CheckResult | None = None,
        finished: HistoryEntry | None = None,
        analysis: Analysis | None = None,
    ) -> Step:
        last = tuple(c.to_status() for c in analysis.checks) if analysis is not None else None
        return Step(
            state=state,
            decision=Decision(action, reason, state.traffic.canary, failing),
            events=tuple(events),
            finished=finished,
            last_analysis=last,
        )

    def _end(
        self,
        phase: Phase,
        action: Action,
        outcome: Outcome,
        reason: str,
        *events: Event,
        state: RolloutState | None = None,
        failing: CheckResult | None = None,
        analysis: Analysis | None = None,
    ) -> Step:
        base = state or self.state
        ended = replace(
            base,
            phase=phase,
            traffic=Traffic(),
            progress=base._progress(finished_at=self.now, pause_reason=None),
        )
        entry = HistoryEntry(version=_version(base), outcome=outcome, reason=reason, at=self.now)
        return self._step(
            ended,
            action,
            reason,
            *events,
            failing=failing,
            finished=entry,
            analysis=analysis,
        )

    def _promote(self, reason: str, state: RolloutState, analysis: Analysis | None) -> Step:
        promoting = replace(state, phase="Promoting", progress=state._progress(pause_reason=None))
        return self._step(
            promoting,
            "promote",
            reason,
            Event("Normal", "PromotionStarted", reason),
            analysis=analysis,
        )

    # -- the decision ---------------------------------------------------------------------

    def run(
        self,
        *,
        canary_ready: bool,
        analysis: Analysis | None,
        paused: bool,
        command: Command | None,
    ) -> Step:
        state, strategy = self.state, self.strategy
        if state.phase in TERMINAL_PHASES:
            if command == "retry" and state.phase in ("RolledBack", "Failed"):
                fresh = replace(
                    RolloutState.begin(state.key, state.progress.candidate, self.now),
                    ab_test=None,
                )
                reason = f"retry: canary {_version(state)} starts again from the first step"
                return self._step(
                    fresh, "restart", reason, Event("Normal", "RolloutRetried", reason)
                )
            return self._ignored(command, f"the rollout is over ({state.phase})")
        if state.phase == "Promoting":
            return self._ignored(
                command, "promotion under way: the stable variant is taking the canary's model"
            )

        if command == "abort":
            reason = f"aborted by the user {_where(strategy, state)}"
            return self._end(
                "RolledBack", "rollback", "Aborted", reason, Event("Warning", "Aborted", reason)
            )
        if command == "promote":
            return self._promote(
                f"promoted by the user {_where(strategy, state)}, skipping the remaining analysis",
                state,
                None,
            )

        # spec.paused is a level: pause while it is true, resume when it becomes false.
        if paused:
            if state.paused_by_user:
                return self._step(state, "wait", PAUSED_BY_USER)
            held = replace(
                state, phase="Paused", progress=state._progress(pause_reason=PAUSED_BY_USER)
            )
            return self._step(held, "pause", PAUSED_BY_USER)
        if state.paused_by_user:
            # No analysis runs while paused by the user: the next one is a whole interval away.
            resumed = replace(
                state,
                phase="Progressing",
                progress=state._progress(pause_reason=None, step_started_at=self.now),
            )
            return self._step(resumed, "resume", "resumed: spec.paused is false")

        if command == "retry" and state.paused_by_errors:
            state = replace(
                state,
                phase="Progressing",
                consecutive_errors=0,
                progress=state._progress(pause_reason=None),
            )
            self.state = state
            reason = "retry: the analysis is tried again"
            return self._step(state, "resume", reason, Event("Normal", "RolloutRetried", reason))

        if not state.entered:
            return self._enter(canary_ready)
        if analysis is not None and self._applies(analysis):
            return self._analyse(analysis)
        return self._idle()

    def _ignored(self, command: Command | None, why: str) -> Step:
        events: tuple[Event, ...] = ()
        if command is not None:
            events = (Event("Warning", "ActionIgnored", f"{command} ignored: {why}"),)
        return self._step(self.state, "wait", why, *events)

    def _enter(self, canary_ready: bool) -> Step:
        state, strategy = self.state, self.strategy
        if canary_ready:
            traffic = entry_traffic(strategy, shadow=strategy.type == "Shadow")
            entered = replace(
                state, traffic=traffic, progress=state._progress(step_started_at=self.now)
            )
            reason = f"canary {_version(state)} {_where(strategy, entered)}"
            kind = {"ABTest": "ABTestStarted", "Shadow": "ShadowStarted"}.get(
                strategy.type, "CanaryEntered"
            )
            return self._step(entered, "enter", reason, Event("Normal", kind, reason))
        if deadline_passed(strategy, state, self.now):
            reason = (
                f"canary {_version(state)} had no ready pod within progressDeadline "
                f"{strategy.progress_deadline}"
            )
            return self._end(
                "Failed", "fail", "Failed", reason, Event("Warning", "RolloutFailed", reason)
            )
        return self._step(state, "wait", f"waiting for a ready pod of canary {_version(state)}")

    def _applies(self, analysis: Analysis) -> bool:
        """An analysis counts if it is about this rollout, stage and step, and its window
        (one interval before it ran) lies within the time spent at this step."""
        state, strategy = self.state, self.strategy
        if (analysis.key, analysis.stage, analysis.step) != (
            state.key,
            stage(strategy, state),
            state.step,
        ):
            return False
        since = state.progress.step_started_at or state.progress.started_at
        return analysis.at - strategy.interval_delta >= since - timedelta(seconds=1)

    def _idle(self) -> Step:
        """No analysis this time: wait, unless the step has run out of time."""
        state, strategy = self.state, self.strategy
        if state.phase == "Paused":
            return self._step(state, "wait", state.progress.pause_reason or "paused")
        if awaiting_promotion(strategy, state):
            return self._step(state, "wait", self._awaiting_reason())
        if strategy.type != "ABTest" and deadline_passed(strategy, state, self.now):
            return self._deadline(None)
        return self._step(state, "wait", f"canary {_version(state)} {_where(strategy, state)}")

    def _awaiting_reason(self) -> str:
        return (
            f"canary {_version(self.state)} passed every step; waiting for promote "
            "(kubectl modelship promote)"
            if self.strategy.type != "ABTest"
            else f"canary {_version(self.state)} won the A/B test; waiting for promote"
        )

    def _deadline(self, analysis: Analysis | None) -> Step:
        state, strategy = self.state, self.strategy
        last = ""
        if analysis is not None:
            pending = first(analysis.checks, "Inconclusive") or first(analysis.checks, "Error")
            if pending is not None:
                last = f"; last: {pending.summary}"
        reason = (
            f"no decision within progressDeadline {strategy.progress_deadline} "
            f"{_where(strategy, state)}{last}"
        )
        return self._end(
            "Failed",
            "fail",
            "Failed",
            reason,
            Event("Warning", "RolloutFailed", reason),
            analysis=analysis,
        )

    def _analyse(self, analysis: Analysis) -> Step:
        strategy = self.strategy
        state = replace(self.state, progress=self.state._progress(last_analysis_time=analysis.at))
        if analysis.ab_counts is not None or analysis.ab is not None:
            state = replace(state, ab_test=_ab_status(state.ab_test, analysis))
        self.state = state
        verdict = analysis.verdict

        if verdict == "Error":
            return self._error(state, analysis)
        resumed: tuple[Event, ...] = ()
        if state.paused_by_errors:
            # The time spent paused does not count against progressDeadline.
            resumed = (Event("Normal", "AnalysisRecovered", "the analysis runs again: resumed"),)
            state = replace(
                state,
                phase="Progressing",
                consecutive_errors=0,
                progress=state._progress(pause_reason=None, step_started_at=self.now),
            )
        elif state.consecutive_errors:
            state = replace(state, consecutive_errors=0)
        self.state = state

        if verdict == "Failed":
            return self._failed(state, analysis, resumed)

        current = stage(strategy, state)
        if current == "abtest":
            return self._ab(state, analysis, verdict, resumed)
        if verdict == "Inconclusive":
            if not awaiting_promotion(strategy, state) and deadline_passed(
                strategy, state, self.now
            ):
                return self._deadline(analysis)
            pending = first(analysis.checks, "Inconclusive")
            why = pending.summary if pending is not None else "no checks"
            return self._step(
                state,
                "hold",
                f"canary {_version(state)} {_where(strategy, state)}: inconclusive, {why}",
                *resumed,
                analysis=analysis,
            )
        # Successful
        if current == "shadow":
            accepted = replace(
                state,
                step=0,
                traffic=step_traffic(strategy, 0),
                failed_checks=0,
                progress=state._progress(step_started_at=self.now),
            )
            reason = (
                f"shadow analysis passed: canary {_version(state)} moves to the first step "
                f"({accepted.traffic.canary}%)"
            )
            return self._step(
                accepted,
                "advance",
                reason,
                *resumed,
                Event("Normal", "ShadowAccepted", reason),
                analysis=analysis,
            )
        last = len(strategy.steps) - 1
        if state.step < last:
            following = replace(
                state,
                step=state.step + 1,
                traffic=step_traffic(strategy, state.step + 1),
                progress=state._progress(step_started_at=self.now),
            )
            reason = f"checks passed; canary {_version(state)} {_where(strategy, following)}"
            return self._step(
                following,
                "advance",
                reason,
                *resumed,
                Event("Normal", "StepAdvanced", reason),
                analysis=analysis,
            )
        if strategy.promotion == "Automatic":
            return self._promote(
                f"canary {_version(state)} passed every step: promoting", state, analysis
            )
        if state.step == last:
            waiting = replace(state, step=len(strategy.steps))
            reason = self._awaiting_reason()
            return self._step(
                waiting,
                "await-promotion",
                reason,
                *resumed,
                Event("Normal", "AwaitingPromotion", reason),
                analysis=analysis,
            )
        return self._step(state, "hold", self._awaiting_reason(), *resumed, analysis=analysis)

    def _error(self, state: RolloutState, analysis: Analysis) -> Step:
        strategy = self.strategy
        errors = state.consecutive_errors + 1
        failing = first(analysis.checks, "Error")
        detail = failing.summary if failing is not None else "error"
        limit = strategy.max_consecutive_errors
        state = replace(state, consecutive_errors=errors)
        if state.paused_by_errors:
            reason = f"{PAUSED_BY_ERRORS} ({errors} times in a row); last: {detail}"
            return self._step(
                replace(state, progress=state._progress(pause_reason=reason[:4096])),
                "wait",
                reason,
                failing=failing,
                analysis=analysis,
            )
        if errors >= limit:
            reason = f"{PAUSED_BY_ERRORS} {errors} times in a row; last: {detail}"
            paused = replace(
                state, phase="Paused", progress=state._progress(pause_reason=reason[:4096])
            )
            return self._step(
                paused,
                "pause",
                reason,
                Event("Warning", "AnalysisError", f"{detail} ({errors}/{limit}): pausing"),
                failing=failing,
                analysis=analysis,
            )
        reason = f"analysis error {errors}/{limit}: {detail}"
        return self._step(
            state,
            "hold",
            reason,
            Event("Warning", "AnalysisError", f"{detail} ({errors}/{limit})"),
            failing=failing,
            analysis=analysis,
        )

    def _failed(self, state: RolloutState, analysis: Analysis, resumed: Sequence[Event]) -> Step:
        strategy = self.strategy
        failing = first(analysis.checks, "Failed")
        assert failing is not None
        failed = state.failed_checks + 1
        limit = strategy.max_failed_checks
        state = replace(state, failed_checks=failed)
        where = _where(strategy, state)
        if failed >= limit:
            shadow = stage(strategy, state) == "shadow"
            verb = "rejected in shadow" if shadow else "rolled back"
            reason = f"canary {_version(state)} {verb} {where}: {failing.summary}"
            return self._end(
                "RolledBack",
                "rollback",
                "RolledBack",
                reason,
                *resumed,
                Event("Warning", "AnalysisFailed", f"{failing.summary} ({failed}/{limit})"),
                state=state,
                failing=failing,
                analysis=analysis,
            )
        reason = f"check failed {failed}/{limit} {where}: {failing.summary}"
        return self._step(
            state,
            "hold",
            reason,
            *resumed,
            Event("Warning", "AnalysisFailed", f"{failing.summary} ({failed}/{limit})"),
            failing=failing,
            analysis=analysis,
        )

    def _ab(
        self,
        state: RolloutState,
        analysis: Analysis,
        verdict: Verdict,
        resumed: Sequence[Event],
    ) -> Step:
        strategy = self.strategy
        ab = analysis.ab
        if ab is None:
            return self._step(state, "hold", "A/B analysis without a statistical verdict", *resumed)
        if ab.decision == "stable-wins":
            reason = f"A/B test: {ab.message}; canary {_version(state)} rolled back"
            return self._end(
                "RolledBack",
                "rollback",
                "RolledBack",
                reason,
                *resumed,
                Event("Normal", "ABTestDecided", reason),
                state=state,
                analysis=analysis,
            )
        if ab.decision == "no-difference":
            reason = f"A/B test: {ab.message}"
            return self._end(
                "RolledBack",
                "rollback",
                "NoWinner",
                reason,
                *resumed,
                Event("Normal", "ABTestDecided", reason),
                state=state,
                analysis=analysis,
            )
        if ab.decision == "canary-wins":
            if verdict != "Successful":
                pending = first(analysis.checks, "Inconclusive")
                why = pending.summary if pending is not None else verdict
                return self._step(
                    state,
                    "hold",
                    f"canary leads the A/B test but the checks are not all Successful: {why}",
                    *resumed,
                    analysis=analysis,
                )
            if strategy.promotion == "Automatic":
                return self._promote(
                    f"A/B test: {ab.message}; promoting canary {_version(state)}", state, analysis
                )
            reason = f"A/B test: {ab.message}; waiting for promote"
            was_waiting = _previous_winner(self.before) == "canary"
            events = () if was_waiting else (Event("Normal", "AwaitingPromotion", reason),)
            return self._step(
                state, "await-promotion", reason, *resumed, *events, analysis=analysis
            )
        return self._step(state, "hold", f"A/B test: {ab.message}", *resumed, analysis=analysis)


def _previous_winner(state: RolloutState) -> str | None:
    return state.ab_test.winner if state.ab_test is not None else None


def _ab_status(previous: ABTestStatus | None, analysis: Analysis) -> ABTestStatus:
    base = previous or ABTestStatus()
    update: dict[str, object] = {}
    if analysis.ab_counts is not None:
        stable, canary = analysis.ab_counts
        update["stable"] = ABVariantStats(successes=stable.successes, trials=stable.trials)
        update["canary"] = ABVariantStats(successes=canary.successes, trials=canary.trials)
    if analysis.ab is not None:
        update["p_value"] = analysis.ab.p_value
        update["winner"] = analysis.ab.winner
    return base.model_copy(update=update)
