"""The rollout decision, whole: from (spec, status, what runs, this reconcile's analysis, the
user's commands, now) to phase, step, traffic, the model each variant runs, history,
scale-down, the next reconcile and the Events. Pure, no I/O; the clock is an argument.

One transition table, :data:`TRANSITIONS`, lists every move (state, input -> next state,
traffic, Events, other effects); every decision names its row (``Decision.transition``,
``Rollout.transition``), the phase and history outcome of an ending come from the row, and
docs/analysis.md shows the table as generated from it (``make generate``).

What serves and what is desired: ``spec.model`` is the desired model;
``status.rolledOut.current`` is the model the stable variant serves. :func:`target` compares
them: nothing serves yet (first apply) -> the desired model goes to stable directly; equal
-> no rollout; different -> a rollout of the desired model (the candidate) from the serving
one, keyed by :func:`rollout_key`. A rollout that ended RolledBack or Failed keeps its key
while the same candidate stays desired, so applying the same manifest again neither restarts
nor reverts it; a new model (or ``retry``) starts a new one.

The state is exactly what ``status`` holds (phase, step, traffic, counters and the
``status.rollout`` timestamps, the A/B test's p-value), so a restarted operator resumes at
the same step: a decision is acted on only after the status recording it is written, and a
phase that is already ``Promoting`` or terminal is never decided again (no double promotion).
``Promoting`` becomes ``Promoted`` once the stable Deployment runs the candidate on every pod
(under autoscaling, on as many as the whole load needs: ``capacity.promotion_floor``);
``rolledOut.current`` is then the candidate and nothing is left for the user to edit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Literal

from modelship_operator.analysis.abtest import ABResult, Counts
from modelship_operator.analysis.verdict import CheckResult, first, overall
from modelship_operator.capacity import promotion_floor, share_of
from modelship_operator.conditions import Event, EventType, timestamp
from modelship_operator.observed import DeploymentView, Observed
from modelship_operator.render import variant_name
from modelship_operator.spec import ACTION_ANNOTATION, ModelDeployment, Strategy
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
    RolledOut,
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

TransitionName = Literal[
    "deploy",
    "serving",
    "revert",
    "begin",
    "supersede",
    "wait-ready",
    "enter",
    "enter-abtest",
    "enter-shadow",
    "enter-deadline",
    "wait",
    "hold",
    "step-advanced",
    "shadow-accepted",
    "promote-automatic",
    "await-promotion",
    "awaiting",
    "check-failed",
    "rollback",
    "error",
    "pause-errors",
    "still-erroring",
    "recovered",
    "deadline",
    "ab-promote",
    "ab-await",
    "ab-stable-wins",
    "ab-no-winner",
    "pause",
    "paused",
    "resume",
    "promote",
    "abort",
    "retry-errors",
    "retry-rejected",
    "done",
    "ignored",
    "promoted",
]


@dataclass(frozen=True)
class Transition:
    """One row of the transition table: from a state, on an input, to the next state, with
    the traffic, the Events and whatever else the move does."""

    name: TransitionName
    source: str
    input: str
    to: str
    traffic: str
    #: The Events of this move (the phase Events of :func:`conditions.transition_events`,
    #: posted whenever the phase changes, come on top).
    events: tuple[tuple[EventType, str], ...] = ()
    also: str = ""
    #: The phase the move ends in, when the row fixes it.
    phase: Phase | None = None
    #: The history entry the move appends.
    outcome: Outcome | None = None
    action: Action = "wait"


_CANARY_GONE = "canary 0 at once; its pods kept for `scaleDownDelay`, then removed"

#: Every move of a rollout; docs/analysis.md shows this table (``make generate``).
TRANSITIONS: Final[tuple[Transition, ...]] = (
    # -- what the spec asks, against what serves
    Transition(
        "deploy",
        "(nothing serves yet: first apply)",
        "any `spec.model`",
        "Idle",
        "stable 100",
        also="the desired model goes to stable directly",
    ),
    Transition(
        "serving",
        "any, no rollout under way",
        "`spec.model` is the serving model",
        "Idle (Promoted stays Promoted)",
        "stable 100",
        also="a finished rollout's canary kept for `scaleDownDelay`, then removed",
    ),
    Transition(
        "revert",
        "Progressing, Paused or Promoting",
        "`spec.model` set back to the serving model",
        "**Idle**",
        "stable 100",
        (("Warning", "Aborted"),),
        also="history `Aborted`; " + _CANARY_GONE,
        phase="Idle",
        outcome="Aborted",
    ),
    Transition(
        "begin",
        "(none), or an ended rollout",
        "a new desired model (a new rollout key)",
        "Progressing, step 0",
        "none until the canary is ready",
        also="then the rows below, at once",
        action="restart",
    ),
    Transition(
        "supersede",
        "Progressing or Paused",
        "a new rollout key (model or strategy changed)",
        "Progressing, step 0",
        "none until the canary is ready",
        (("Normal", "RolloutRestarted"),),
        also="history `Superseded`; then the rows below",
        outcome="Superseded",
        action="restart",
    ),
    # -- entering
    Transition(
        "wait-ready",
        "Progressing, entering",
        "no ready canary pod yet",
        "unchanged",
        "none",
    ),
    Transition(
        "enter",
        "Progressing, entering (Canary)",
        "a ready canary pod",
        "Progressing",
        "`steps[0]`",
        (("Normal", "CanaryEntered"),),
        action="enter",
    ),
    Transition(
        "enter-abtest",
        "Progressing, entering (ABTest)",
        "a ready canary pod",
        "Progressing",
        "the A/B split",
        (("Normal", "ABTestStarted"),),
        action="enter",
    ),
    Transition(
        "enter-shadow",
        "Progressing, entering (Shadow)",
        "a ready canary pod",
        "Progressing",
        "stable 100, the shadow mirror",
        (("Normal", "ShadowStarted"),),
        action="enter",
    ),
    Transition(
        "enter-deadline",
        "Progressing, entering",
        "no ready pod for `progressDeadline`",
        "**Failed**",
        "stable 100",
        (("Warning", "RolloutFailed"),),
        also="history `Failed`",
        phase="Failed",
        outcome="Failed",
        action="fail",
    ),
    # -- analysis
    Transition(
        "wait",
        "Progressing",
        "no analysis due",
        "unchanged",
        "unchanged",
    ),
    Transition(
        "hold",
        "Progressing",
        "Inconclusive; in an A/B test, no decision yet, or the canary leads while a check "
        "is not Successful",
        "unchanged",
        "unchanged",
        action="hold",
    ),
    Transition(
        "step-advanced",
        "Progressing, canary at step i < last",
        "all Successful",
        "Progressing, step i+1",
        "`steps[i+1]`",
        (("Normal", "StepAdvanced"),),
        action="advance",
    ),
    Transition(
        "shadow-accepted",
        "Progressing, shadow",
        "all Successful (incl. agreement)",
        "Progressing, step 0",
        "`steps[0]`, mirror off",
        (("Normal", "ShadowAccepted"),),
        action="advance",
    ),
    Transition(
        "promote-automatic",
        "Progressing, canary at the last step",
        "all Successful, `Automatic`",
        "**Promoting**",
        "unchanged until stable runs the canary's model",
        (("Normal", "PromotionStarted"),),
        phase="Promoting",
        action="promote",
    ),
    Transition(
        "await-promotion",
        "Progressing, canary at the last step",
        "all Successful, `Manual`",
        "Progressing, step = len(steps)",
        "unchanged",
        (("Normal", "AwaitingPromotion"),),
        action="await-promotion",
    ),
    Transition(
        "awaiting",
        "Progressing, waiting for `promote`",
        "no analysis, or all Successful",
        "unchanged",
        "unchanged",
        also="the analysis keeps running",
        action="await-promotion",
    ),
    Transition(
        "check-failed",
        "Progressing, any stage",
        "a Failed check, count < `maxFailedChecks`",
        "unchanged",
        "unchanged",
        (("Warning", "AnalysisFailed"),),
        also="`failedChecks` + 1",
        action="hold",
    ),
    Transition(
        "rollback",
        "Progressing, any stage",
        "a Failed check, count reaches `maxFailedChecks`",
        "**RolledBack**",
        _CANARY_GONE,
        (("Warning", "AnalysisFailed"),),
        also="history `RolledBack` with the metric, value and threshold (shadow: "
        '"rejected in shadow")',
        phase="RolledBack",
        outcome="RolledBack",
        action="rollback",
    ),
    Transition(
        "error",
        "Progressing",
        "Error, count < `maxConsecutiveErrors`",
        "unchanged",
        "unchanged",
        (("Warning", "AnalysisError"),),
        also="`consecutiveErrors` + 1",
        action="hold",
    ),
    Transition(
        "pause-errors",
        "Progressing",
        "Error, count reaches `maxConsecutiveErrors`",
        "**Paused** (reason: the last error)",
        "unchanged",
        (("Warning", "AnalysisError"),),
        also="the analysis keeps being tried every interval",
        phase="Paused",
        action="pause",
    ),
    Transition(
        "still-erroring",
        "Paused by errors",
        "another Error",
        "unchanged",
        "unchanged",
    ),
    Transition(
        "recovered",
        "Paused by errors",
        "an analysis that ran (any other verdict)",
        "Progressing; step timer restarts",
        "unchanged",
        (("Normal", "AnalysisRecovered"),),
        also="then that analysis is judged by the rows above",
        action="resume",
    ),
    Transition(
        "deadline",
        "Progressing, canary or shadow",
        "`progressDeadline` at this step without a decision",
        "**Failed**",
        _CANARY_GONE,
        (("Warning", "RolloutFailed"),),
        also="history `Failed` (with the last inconclusive reason)",
        phase="Failed",
        outcome="Failed",
        action="fail",
    ),
    # -- A/B tests
    Transition(
        "ab-promote",
        "Progressing, abtest",
        "canary statistically better, all checks Successful, `Automatic`",
        "**Promoting**",
        "unchanged",
        (("Normal", "PromotionStarted"),),
        phase="Promoting",
        action="promote",
    ),
    Transition(
        "ab-await",
        "Progressing, abtest",
        "canary statistically better, all checks Successful, `Manual`",
        "Progressing, waiting for `promote`",
        "unchanged",
        (("Normal", "AwaitingPromotion"),),
        action="await-promotion",
    ),
    Transition(
        "ab-stable-wins",
        "Progressing, abtest",
        "stable statistically better",
        "**RolledBack**",
        _CANARY_GONE,
        (("Normal", "ABTestDecided"),),
        also="history `RolledBack`",
        phase="RolledBack",
        outcome="RolledBack",
        action="rollback",
    ),
    Transition(
        "ab-no-winner",
        "Progressing, abtest",
        "no significant difference by `progressDeadline`",
        "**RolledBack**",
        _CANARY_GONE,
        (("Normal", "ABTestDecided"),),
        also="history `NoWinner`",
        phase="RolledBack",
        outcome="NoWinner",
        action="rollback",
    ),
    # -- the user's commands
    Transition(
        "pause",
        "Progressing or Paused by errors",
        "`spec.paused: true`",
        "**Paused** (`paused by spec.paused`)",
        "unchanged",
        phase="Paused",
        action="pause",
    ),
    Transition(
        "paused",
        "Paused",
        "`spec.paused` still true, or no analysis while paused by errors",
        "unchanged",
        "unchanged",
        also="no deadline while paused",
    ),
    Transition(
        "resume",
        "Paused by the user",
        "`spec.paused: false`",
        "Progressing; step timer restarts",
        "unchanged",
        phase="Progressing",
        action="resume",
    ),
    Transition(
        "promote",
        "Progressing or Paused",
        "`promote`",
        "**Promoting**",
        "unchanged",
        (("Normal", "PromotionStarted"),),
        also="the remaining analysis is skipped",
        phase="Promoting",
        action="promote",
    ),
    Transition(
        "abort",
        "Progressing or Paused",
        "`abort`",
        "**RolledBack**",
        _CANARY_GONE,
        (("Warning", "Aborted"),),
        also="history `Aborted`",
        phase="RolledBack",
        outcome="Aborted",
        action="rollback",
    ),
    Transition(
        "retry-errors",
        "Paused by errors",
        "`retry`",
        "Progressing, errors reset",
        "unchanged",
        (("Normal", "RolloutRetried"),),
        phase="Progressing",
        action="resume",
    ),
    Transition(
        "retry-rejected",
        "RolledBack or Failed",
        "`retry`",
        "Progressing, step 0, counters reset",
        "none until the canary is ready",
        (("Normal", "RolloutRetried"),),
        also="then the entering rows, at once (a canary still up from the last try enters)",
        phase="Progressing",
        action="restart",
    ),
    Transition(
        "done",
        "Promoting, Promoted, RolledBack or Failed",
        "anything but a command (e.g. the same manifest applied again)",
        "unchanged",
        "unchanged",
        also="a rejected model stays rejected while it stays desired",
    ),
    Transition(
        "ignored",
        "Promoting, Promoted, RolledBack or Failed",
        "a command that does not apply (any while Promoting; `promote` or `abort` once "
        "ended; `retry` once Promoted)",
        "unchanged",
        "unchanged",
        (("Warning", "ActionIgnored"),),
    ),
    # -- promotion
    Transition(
        "promoted",
        "Promoting",
        "the stable Deployment runs the candidate on every pod (with autoscaling: on at "
        "least `rollout.stableFloor` available pods)",
        "**Promoted**",
        "stable 100",
        also="history `Promoted`; `rolledOut.current` is the candidate; its canary kept for "
        "`scaleDownDelay`, then removed",
        phase="Promoted",
        outcome="Promoted",
    ),
)

_ROWS: Final[dict[TransitionName, Transition]] = {t.name: t for t in TRANSITIONS}


def transition(name: TransitionName) -> Transition:
    """The row ``name`` of :data:`TRANSITIONS`."""
    return _ROWS[name]


def _events(name: TransitionName, *messages: str) -> tuple[Event, ...]:
    """The Events of row ``name``, one message each (the row decides type and reason)."""
    kinds = transition(name).events
    if len(messages) != len(kinds):
        raise ValueError(f"transition {name}: {len(kinds)} Events, {len(messages)} messages")
    return tuple(Event(t, r, m) for (t, r), m in zip(kinds, messages, strict=True))


def transitions_markdown() -> str:
    """:data:`TRANSITIONS` as the Markdown table of docs/analysis.md."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|") or " "

    lines = [
        "| Row | From | Input | To | Traffic | Events | Also |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in TRANSITIONS:
        events = ", ".join(f"`{r}`" + (" (Warning)" if k == "Warning" else "") for k, r in t.events)
        cells = (f"`{t.name}`", t.source, t.input, t.to, t.traffic, events or "(none)", t.also)
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


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

    #: The row of :data:`TRANSITIONS` this decision took (the last of ``Step.path``).
    transition: TransitionName
    reason: str
    weight: int = 0
    failing: CheckResult | None = None

    @property
    def action(self) -> Action:
        return transition(self.transition).action


@dataclass(frozen=True)
class Step:
    """The step machine's answer."""

    state: RolloutState
    decision: Decision
    events: tuple[Event, ...] = ()
    #: The rows of :data:`TRANSITIONS` taken, in order (``events`` are theirs, in order).
    path: tuple[TransitionName, ...] = ()
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


def next_traffic(strategy: Strategy, state: RolloutState) -> Traffic:
    """The traffic the rollout gives the canary next if its checks pass."""
    current = stage(strategy, state)
    if current == "entering":
        return entry_traffic(strategy, shadow=strategy.type == "Shadow")
    if current == "shadow":
        return step_traffic(strategy, 0)
    if current == "canary" and state.step < len(strategy.steps) - 1:
        return step_traffic(strategy, state.step + 1)
    return state.traffic


def sizing_share(strategy: Strategy, state: RolloutState) -> int:
    """The percent of the traffic a running rollout's canary is sized for: the larger of
    what it gets now and what its next step gives it (served or mirrored requests alike),
    so a step's pods are up before its traffic moves."""
    ahead = next_traffic(strategy, state)
    now = state.traffic
    return max(now.canary, now.mirror, ahead.canary, ahead.mirror)


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


def analysis_delay(strategy: Strategy, state: RolloutState, now: datetime) -> float | None:
    """Seconds an analysis run at ``now`` came after its due time (None: none was due)."""
    due = next_analysis_at(strategy, state)
    return None if due is None or due > now else (now - due).total_seconds()


def deadline_at(strategy: Strategy, state: RolloutState) -> datetime:
    """When this step (or the wait for a ready canary) reaches progressDeadline."""
    since = state.progress.step_started_at or state.progress.started_at
    return since + strategy.progress_deadline_delta


def deadline_passed(strategy: Strategy, state: RolloutState, now: datetime) -> bool:
    """Whether this step (or the wait for a ready canary) has lasted progressDeadline."""
    return now >= deadline_at(strategy, state)


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
    identity now (:func:`rollout_key`); ``canary_ready``
    whether a canary pod is ready;
    ``analysis`` this interval's verdicts if one was run (see :func:`analysis_due`);
    ``paused`` is ``spec.paused``; ``command`` a not-yet-handled one-shot action.
    """
    if state is None or state.key != key:
        fresh = RolloutState.begin(key, candidate, now)
        name: TransitionName = "begin"
        events: tuple[Event, ...] = ()
        finished = None
        if state is not None and state.phase not in TERMINAL_PHASES:
            name = "supersede"
            finished = HistoryEntry(
                version=_version(state),
                outcome=transition(name).outcome or "Superseded",
                reason="the spec changed during the rollout; analysis restarted",
                at=now,
            )
            events = _events(
                name,
                "the canary, the model or the strategy changed: the analysis restarts "
                "from the first step",
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
            path=(name, *following.path),
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
        #: Rows passed through before the one that decides (``recovered``), and their Events.
        self.passed: tuple[TransitionName, ...] = ()
        self.passed_events: tuple[Event, ...] = ()

    # -- outcomes -----------------------------------------------------------------------

    def _pass(self, name: TransitionName, *messages: str) -> None:
        """Row ``name`` is taken on the way to the one that decides."""
        self.passed = (*self.passed, name)
        self.passed_events = (*self.passed_events, *_events(name, *messages))

    def _step(
        self,
        name: TransitionName,
        state: RolloutState,
        reason: str,
        *messages: str,
        failing: CheckResult | None = None,
        finished: HistoryEntry | None = None,
        analysis: Analysis | None = None,
    ) -> Step:
        """The decision of row ``name``: ``state`` next, an Event per ``messages`` of the
        row's type and reason, the phase the row fixes (if any)."""
        row = transition(name)
        if row.phase is not None and state.phase != row.phase:
            state = replace(state, phase=row.phase)
        last = tuple(c.to_status() for c in analysis.checks) if analysis is not None else None
        return Step(
            state=state,
            decision=Decision(name, reason, state.traffic.canary, failing),
            events=(*self.passed_events, *_events(name, *messages)),
            path=(*self.passed, name),
            finished=finished,
            last_analysis=last,
        )

    def _end(
        self,
        name: TransitionName,
        reason: str,
        *messages: str,
        state: RolloutState | None = None,
        failing: CheckResult | None = None,
        analysis: Analysis | None = None,
    ) -> Step:
        """A rollout ends by row ``name``: its phase, traffic back to stable, its history."""
        row = transition(name)
        assert row.phase is not None and row.outcome is not None, name
        base = state or self.state
        ended = replace(
            base,
            traffic=Traffic(),
            progress=base._progress(finished_at=self.now, pause_reason=None),
        )
        entry = HistoryEntry(
            version=_version(base), outcome=row.outcome, reason=reason, at=self.now
        )
        return self._step(
            name, ended, reason, *messages, failing=failing, finished=entry, analysis=analysis
        )

    def _promote(
        self, name: TransitionName, reason: str, state: RolloutState, analysis: Analysis | None
    ) -> Step:
        promoting = replace(state, progress=state._progress(pause_reason=None))
        return self._step(name, promoting, reason, reason, analysis=analysis)

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
                # Straight on to entering: a canary still up from the last try (within
                # scaleDownDelay) is ready now, and no change of its pods will say so.
                self._pass("retry-rejected", reason)
                self.state = fresh
                return self._enter(canary_ready)
            return self._ignored(command, f"the rollout is over ({state.phase})")
        if state.phase == "Promoting":
            return self._ignored(
                command, "promotion under way: the stable variant is taking the canary's model"
            )

        if command == "abort":
            reason = f"aborted by the user {_where(strategy, state)}"
            return self._end("abort", reason, reason)
        if command == "promote":
            return self._promote(
                "promote",
                f"promoted by the user {_where(strategy, state)}, skipping the remaining analysis",
                state,
                None,
            )

        # spec.paused is a level: pause while it is true, resume when it becomes false.
        if paused:
            if state.paused_by_user:
                return self._step("paused", state, PAUSED_BY_USER)
            held = replace(state, progress=state._progress(pause_reason=PAUSED_BY_USER))
            return self._step("pause", held, PAUSED_BY_USER)
        if state.paused_by_user:
            # No analysis runs while paused by the user: the next one is a whole interval away.
            resumed = replace(
                state, progress=state._progress(pause_reason=None, step_started_at=self.now)
            )
            return self._step("resume", resumed, "resumed: spec.paused is false")

        if command == "retry" and state.paused_by_errors:
            state = replace(
                state, consecutive_errors=0, progress=state._progress(pause_reason=None)
            )
            self.state = state
            reason = "retry: the analysis is tried again"
            return self._step("retry-errors", state, reason, reason)

        if not state.entered:
            return self._enter(canary_ready)
        if analysis is not None and self._applies(analysis):
            return self._analyse(analysis)
        return self._idle()

    def _ignored(self, command: Command | None, why: str) -> Step:
        if command is None:
            return self._step("done", self.state, why)
        return self._step("ignored", self.state, why, f"{command} ignored: {why}")

    def _enter(self, canary_ready: bool) -> Step:
        state, strategy = self.state, self.strategy
        if canary_ready:
            traffic = entry_traffic(strategy, shadow=strategy.type == "Shadow")
            entered = replace(
                state, traffic=traffic, progress=state._progress(step_started_at=self.now)
            )
            if strategy.type == "ABTest":
                # The test counts from here: before, stable had all the traffic.
                split = (state.ab_test or ABTestStatus()).model_copy(update={"split_at": self.now})
                entered = replace(entered, ab_test=split)
            reason = f"canary {_version(state)} {_where(strategy, entered)}"
            name: TransitionName = "enter"
            if strategy.type == "ABTest":
                name = "enter-abtest"
            elif strategy.type == "Shadow":
                name = "enter-shadow"
            return self._step(name, entered, reason, reason)
        if deadline_passed(strategy, state, self.now):
            reason = (
                f"canary {_version(state)} had no ready pod within progressDeadline "
                f"{strategy.progress_deadline}"
            )
            return self._end("enter-deadline", reason, reason)
        return self._step(
            "wait-ready", state, f"waiting for a ready pod of canary {_version(state)}"
        )

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
            return self._step("paused", state, state.progress.pause_reason or "paused")
        if awaiting_promotion(strategy, state):
            return self._step("awaiting", state, self._awaiting_reason())
        if strategy.type != "ABTest" and deadline_passed(strategy, state, self.now):
            return self._deadline(None)
        return self._step("wait", state, f"canary {_version(state)} {_where(strategy, state)}")

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
        return self._end("deadline", reason, reason, analysis=analysis)

    def _analyse(self, analysis: Analysis) -> Step:
        strategy = self.strategy
        state = replace(self.state, progress=self.state._progress(last_analysis_time=analysis.at))
        if analysis.ab_counts is not None or analysis.ab is not None:
            state = replace(state, ab_test=_ab_status(state.ab_test, analysis))
        self.state = state
        verdict = analysis.verdict

        if verdict == "Error":
            return self._error(state, analysis)
        if state.paused_by_errors:
            # The time spent paused does not count against progressDeadline.
            self._pass("recovered", "the analysis runs again: resumed")
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
            return self._failed(state, analysis)

        current = stage(strategy, state)
        if current == "abtest":
            return self._ab(state, analysis, verdict)
        if verdict == "Inconclusive":
            if not awaiting_promotion(strategy, state) and deadline_passed(
                strategy, state, self.now
            ):
                return self._deadline(analysis)
            pending = first(analysis.checks, "Inconclusive")
            why = pending.summary if pending is not None else "no checks"
            return self._step(
                "hold",
                state,
                f"canary {_version(state)} {_where(strategy, state)}: inconclusive, {why}",
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
            return self._step("shadow-accepted", accepted, reason, reason, analysis=analysis)
        last = len(strategy.steps) - 1
        if state.step < last:
            following = replace(
                state,
                step=state.step + 1,
                traffic=step_traffic(strategy, state.step + 1),
                progress=state._progress(step_started_at=self.now),
            )
            reason = f"checks passed; canary {_version(state)} {_where(strategy, following)}"
            return self._step("step-advanced", following, reason, reason, analysis=analysis)
        if strategy.promotion == "Automatic":
            return self._promote(
                "promote-automatic",
                f"canary {_version(state)} passed every step: promoting",
                state,
                analysis,
            )
        if state.step == last:
            waiting = replace(state, step=len(strategy.steps))
            reason = self._awaiting_reason()
            return self._step("await-promotion", waiting, reason, reason, analysis=analysis)
        return self._step("awaiting", state, self._awaiting_reason(), analysis=analysis)

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
                "still-erroring",
                replace(state, progress=state._progress(pause_reason=reason[:4096])),
                reason,
                failing=failing,
                analysis=analysis,
            )
        if errors >= limit:
            reason = f"{PAUSED_BY_ERRORS} {errors} times in a row; last: {detail}"
            paused = replace(state, progress=state._progress(pause_reason=reason[:4096]))
            return self._step(
                "pause-errors",
                paused,
                reason,
                f"{detail} ({errors}/{limit}): pausing",
                failing=failing,
                analysis=analysis,
            )
        reason = f"analysis error {errors}/{limit}: {detail}"
        return self._step(
            "error",
            state,
            reason,
            f"{detail} ({errors}/{limit})",
            failing=failing,
            analysis=analysis,
        )

    def _failed(self, state: RolloutState, analysis: Analysis) -> Step:
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
                "rollback",
                reason,
                f"{failing.summary} ({failed}/{limit})",
                state=state,
                failing=failing,
                analysis=analysis,
            )
        reason = f"check failed {failed}/{limit} {where}: {failing.summary}"
        return self._step(
            "check-failed",
            state,
            reason,
            f"{failing.summary} ({failed}/{limit})",
            failing=failing,
            analysis=analysis,
        )

    def _ab(
        self,
        state: RolloutState,
        analysis: Analysis,
        verdict: Verdict,
    ) -> Step:
        strategy = self.strategy
        ab = analysis.ab
        if ab is None:
            return self._step("hold", state, "A/B analysis without a statistical verdict")
        if ab.decision == "stable-wins":
            reason = f"A/B test: {ab.message}; canary {_version(state)} rolled back"
            return self._end("ab-stable-wins", reason, reason, state=state, analysis=analysis)
        if ab.decision == "no-difference":
            reason = f"A/B test: {ab.message}"
            return self._end("ab-no-winner", reason, reason, state=state, analysis=analysis)
        if ab.decision == "canary-wins":
            if verdict != "Successful":
                pending = first(analysis.checks, "Inconclusive")
                why = pending.summary if pending is not None else verdict
                return self._step(
                    "hold",
                    state,
                    f"canary leads the A/B test but the checks are not all Successful: {why}",
                    analysis=analysis,
                )
            if strategy.promotion == "Automatic":
                return self._promote(
                    "ab-promote",
                    f"A/B test: {ab.message}; promoting canary {_version(state)}",
                    state,
                    analysis,
                )
            reason = f"A/B test: {ab.message}; waiting for promote"
            if _previous_winner(self.before) == "canary":
                return self._step("awaiting", state, reason, analysis=analysis)
            return self._step("ab-await", state, reason, reason, analysis=analysis)
        return self._step("hold", state, f"A/B test: {ab.message}", analysis=analysis)


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


# --- the rollout of the desired model --------------------------------------------------------

HISTORY_LIMIT: Final = 20
#: Phases that reject the candidate: it stays rejected while it stays desired.
REJECTED_PHASES: Final[frozenset[Phase]] = frozenset({"RolledBack", "Failed"})


def rollout_key(stable: ModelRef, candidate: ModelRef, strategy: Strategy) -> str:
    """Identity of a rollout: the serving model, the candidate and the strategy. A new key
    restarts the analysis from the first step; replicas, resources, images and
    spec.paused do not count."""
    relevant = {
        "stable": stable.to_api(),
        "candidate": candidate.to_api(),
        "strategy": strategy.to_api(),
    }
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class Target:
    """What the spec asks of the rollout engine, against what serves."""

    #: The model the stable variant serves (or is being deployed to, on the first apply).
    stable: ModelRef
    #: The desired model when it differs from the serving one.
    candidate: ModelRef | None = None
    #: The rollout's key (None without a candidate).
    key: str | None = None


def target(md: ModelDeployment) -> Target:
    """The serving model, the candidate and the rollout key for ``md`` now."""
    desired = md.desired_model()
    serving = md.status.rolled_out.current if md.status.rolled_out is not None else None
    if serving is None or serving == desired:
        return Target(stable=desired)
    key = rollout_key(serving, desired, md.spec.strategy)
    prev = md.status.rollout
    if (
        md.status.phase in REJECTED_PHASES
        and prev is not None
        and prev.candidate == desired
        and prev.key != key
    ):
        key = prev.key  # rejected: a strategy edit alone does not retry it
    return Target(stable=serving, candidate=desired, key=key)


@dataclass(frozen=True)
class Rollout:
    """The rollout engine's decision for this reconcile."""

    phase: Phase
    stable_model: ModelRef
    canary_model: ModelRef | None
    #: The canary's pods without autoscaling (its share of spec.replicas, or what it runs
    #: while held for scaleDownDelay).
    canary_replicas: int
    traffic: Traffic
    #: The percent of the traffic the canary is sized for (:func:`sizing_share`); None
    #: once the rollout is over and its pods are only held.
    canary_share: int | None = None
    step: int | None = None
    progress: RolloutProgress | None = None
    failed_checks: int = 0
    consecutive_errors: int = 0
    last_analysis: tuple[AnalysisResult, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    detail: str = ""
    requeue_after: float | None = None
    ab_test: ABTestStatus | None = None
    events: tuple[Event, ...] = ()
    #: The rows of :data:`TRANSITIONS` taken, in order (``events`` are theirs, in order).
    path: tuple[TransitionName, ...] = ()
    #: What stable serves now and served before (``status.rolledOut``).
    rolled_out: RolledOut | None = None
    #: With autoscaling, the least pods stable's autoscaler runs (None: its own minimum):
    #: raised while a promotion moves the canary's traffic to stable, and held
    #: :data:`FLOOR_HOLD` after (:func:`modelship_operator.capacity.promotion_floor`).
    stable_floor: int | None = None


#: How long stable keeps its promotion floor once the traffic has moved: long enough for
#: the autoscaler to see stable's CPU under the whole load (metrics-server's resolution
#: and the autoscaler's sync period are 15 s each by default), so it never scales stable
#: down on the use it measured with its old share.
FLOOR_HOLD: Final = timedelta(seconds=60)


def floor_held(progress: RolloutProgress | None, now: datetime) -> tuple[int | None, float | None]:
    """A finished rollout's promotion floor while it is held, and the seconds until it is
    lifted (None, None: no floor)."""
    if progress is None or progress.stable_floor is None or progress.finished_at is None:
        return None, None
    remaining = (progress.finished_at + FLOOR_HOLD - now).total_seconds()
    return (progress.stable_floor, remaining) if remaining > 0 else (None, None)


def sooner(a: float | None, b: float | None) -> float | None:
    """The earlier of two requeue delays (None: none asked)."""
    return b if a is None else a if b is None else min(a, b)


def runs(view: DeploymentView | None, model: ModelRef) -> bool:
    """Whether a Deployment runs ``model`` on every pod, all available."""
    return (
        view is not None
        and view.rolled_out
        and view.model_version == model.version
        and view.sha256 == model.sha256
    )


def rolled_out(
    previous: RolledOut | None, stable: DeploymentView | None, target: ModelRef
) -> RolledOut:
    """Current and previous models of stable: moves on once ``target`` runs everywhere."""
    previous = previous or RolledOut()
    if not runs(stable, target) or previous.current == target:
        return previous
    return RolledOut(current=target, previous=previous.current)


def _history(entries: Sequence[HistoryEntry], *new: HistoryEntry) -> tuple[HistoryEntry, ...]:
    return tuple([*entries, *new][-HISTORY_LIMIT:])


def _scale_down(
    md: ModelDeployment,
    progress: RolloutProgress | None,
    now: datetime,
    canary: DeploymentView | None,
) -> tuple[int, float | None]:
    """Canary replicas after a finished rollout, and when to look again: the pods the
    ``canary`` Deployment has, held during ``scaleDownDelay`` (in-flight requests finish),
    then none."""
    finished = progress.finished_at if progress is not None else None
    remaining = (
        0.0
        if finished is None
        else (finished + md.spec.strategy.scale_down_delay_delta - now).total_seconds()
    )
    if remaining <= 0:
        return 0, None
    return max(1, canary.desired if canary is not None else 0), remaining


def track_rollout(
    md: ModelDeployment, observed: Observed, now: datetime, analysis: Analysis | None = None
) -> Rollout:
    """Phase, traffic and models from the spec, the previous status, this reconcile's
    ``analysis`` (None: none was due) and what runs."""
    prev = md.status
    goal = target(md)
    exact_now, now = now, timestamp(now)
    history: tuple[HistoryEntry, ...] = tuple(prev.history)

    if goal.candidate is None or goal.key is None:
        return _no_candidate(md, goal, observed, now, history)

    stable_view = observed.deployment(variant_name(md.name, "stable"))
    canary_view = observed.deployment(variant_name(md.name, "canary"))
    canary_ready = canary_view is not None and canary_view.ready > 0
    candidate = goal.candidate

    decided = advance(
        md.spec.strategy,
        RolloutState.from_status(prev),
        now,
        key=goal.key,
        candidate=candidate,
        canary_ready=canary_ready,
        analysis=analysis,
        paused=md.spec.paused,
        command=parse_action(
            md.metadata.annotations.get(ACTION_ANNOTATION), prev.last_handled_action
        ),
    )
    state = decided.state
    phase, step, traffic, progress = state.phase, state.step, state.traffic, state.progress
    analysis_results = (
        decided.last_analysis if decided.last_analysis is not None else tuple(prev.last_analysis)
    )
    if decided.finished is not None:
        history = _history(history, decided.finished)

    # Before the canary's traffic moves to stable, stable runs the pods the whole load
    # needs (with autoscaling; without, it has kept its full count throughout).
    stable_floor: int | None = None
    canary_pods = canary_view.desired if canary_view else 0
    if phase == "Promoting":
        stable_floor = promotion_floor(md.spec.autoscaling, canary_pods, traffic.canary)
        progress = progress.model_copy(update={"stable_floor": stable_floor})
    scaled = stable_floor is None or (
        stable_view is not None and stable_view.available >= stable_floor
    )
    path = decided.path
    if phase == "Promoting" and runs(stable_view, candidate) and scaled:
        path = (*path, "promoted")
        phase = transition("promoted").phase or phase
        progress = progress.model_copy(update={"finished_at": now})
        history = _history(
            history,
            HistoryEntry(
                version=candidate.version,
                outcome=transition("promoted").outcome or "Promoted",
                reason="the stable variant runs the candidate's model",
                at=now,
            ),
        )

    stable_target = candidate if phase in ("Promoting", "Promoted") else goal.stable
    requeue: float | None = None
    share: int | None = sizing_share(md.spec.strategy, state)
    canary_replicas = share_of(md.spec.replicas, share or 0)
    if phase in TERMINAL_PHASES:
        traffic = Traffic()
        share = None  # no more traffic: the pods it runs are held, then removed
        canary_replicas, requeue = _scale_down(md, progress, now, canary_view)
        stable_floor, lifted = floor_held(progress, now) if phase == "Promoted" else (None, None)
        requeue = sooner(requeue, lifted)
    due = next_analysis_at(md.spec.strategy, state)
    if due is None and phase == "Progressing" and not state.entered:
        # Waiting for a ready canary: its pods' changes wake the operator, but a canary that
        # never gets ready changes nothing, so look again when progressDeadline runs out.
        due = deadline_at(md.spec.strategy, state)
    if due is not None:
        # The exact clock, not the whole second: an analysis is never a second late.
        requeue = sooner(requeue, max(0.5, (due - exact_now).total_seconds()))
    detail = decided.decision.reason
    if phase == "Promoting" and not scaled and stable_floor is not None:
        detail = (
            f"stable scales to {stable_floor} pods, what the whole load needs (the canary "
            f"runs {canary_pods} for {traffic.canary}%), "
            "before the traffic moves"
        )
    if phase == "Promoted":
        detail = f"stable serves {candidate.version}"
    elif phase in REJECTED_PHASES:
        why = history[-1].reason if history else detail
        detail = (
            f"{candidate.version} was rejected ({why}); stable keeps serving "
            f"{goal.stable.version}. Apply a new model, or retry"
        )
    return Rollout(
        phase=phase,
        stable_model=stable_target,
        canary_model=candidate if canary_replicas > 0 else None,
        canary_replicas=canary_replicas,
        canary_share=share,
        traffic=traffic,
        step=step,
        progress=progress,
        failed_checks=state.failed_checks,
        consecutive_errors=state.consecutive_errors,
        last_analysis=analysis_results,
        history=history,
        detail=detail,
        requeue_after=requeue,
        ab_test=state.ab_test,
        events=decided.events,
        path=path,
        # Still Promoting, stable may already run the candidate on every pod it has (but
        # not yet on the floor's): the candidate is recorded as serving once promoted.
        rolled_out=(
            prev.rolled_out or RolledOut()
            if phase == "Promoting"
            else rolled_out(prev.rolled_out, stable_view, stable_target)
        ),
        stable_floor=stable_floor,
    )


def _no_candidate(
    md: ModelDeployment,
    goal: Target,
    observed: Observed,
    now: datetime,
    history: tuple[HistoryEntry, ...],
) -> Rollout:
    """The desired model serves (or nothing serves yet): no rollout. One that was under way
    is aborted (the desired model went back to the serving one); a finished one keeps its
    canary pods for scaleDownDelay."""
    prev = md.status
    progress = prev.rollout
    name: TransitionName = "serving" if prev.rolled_out and prev.rolled_out.current else "deploy"
    events: tuple[Event, ...] = ()
    if progress is not None and prev.phase in ("Progressing", "Paused", "Promoting"):
        name = "revert"
        version = progress.candidate.version if progress.candidate else "?"
        reason = f"spec.model is {goal.stable.version} again: the rollout of {version} stopped"
        outcome = transition(name).outcome or "Aborted"
        history = _history(
            history, HistoryEntry(version=version, outcome=outcome, reason=reason, at=now)
        )
        events = _events(name, reason)
        progress = progress.model_copy(update={"finished_at": now})
    phase: Phase = transition(name).phase or ("Promoted" if prev.phase == "Promoted" else "Idle")
    replicas, requeue = 0, None
    leftover = progress.candidate if progress is not None else None
    if leftover is not None:
        canary_view = observed.deployment(variant_name(md.name, "canary"))
        replicas, requeue = _scale_down(md, progress, now, canary_view)
    floor, lifted = floor_held(progress, now) if phase == "Promoted" else (None, None)
    requeue = sooner(requeue, lifted)
    detail = (
        f"stable serves {goal.stable.version}"
        if phase == "Promoted"
        else f"no rollout: spec.model {goal.stable.version} is the serving model"
    )
    return Rollout(
        phase=phase,
        stable_model=goal.stable,
        canary_model=leftover if replicas > 0 else None,
        canary_replicas=replicas,
        traffic=Traffic(),
        progress=progress if phase == "Promoted" or replicas > 0 else None,
        history=history,
        detail=detail,
        requeue_after=requeue,
        events=events,
        path=(name,),
        rolled_out=rolled_out(
            prev.rolled_out, observed.deployment(variant_name(md.name, "stable")), goal.stable
        ),
        stable_floor=floor,
    )
