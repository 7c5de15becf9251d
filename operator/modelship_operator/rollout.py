"""The rollout decision of one reconcile: from (spec, status, what runs, this reconcile's
analysis, now) to phase, traffic and the model each variant runs. Pure, no I/O.

``spec.model`` is the desired model; ``status.rolledOut.current`` is the model the stable
variant serves. :func:`target` compares them:

* nothing serves yet (first apply, or no version ever became ready): the desired model is
  deployed to stable directly, there is nothing to compare it with;
* the desired model is the one serving: no rollout (a finished one keeps its canary pods
  for ``scaleDownDelay``, then they go);
* it differs: a rollout of the desired model (the candidate) from the serving one, decided
  by the step machine (:mod:`modelship_operator.analysis.stepper`). A rollout that ended
  RolledBack or Failed keeps its key while the same candidate stays desired, so applying
  the same manifest again neither restarts nor reverts it; a new model (or ``retry``)
  starts a new one.

Promotion: the step machine says Promoting; stable takes the candidate's model; once it
runs on every stable pod the phase is Promoted and ``rolledOut.current`` becomes the
candidate (``rolledOut.previous`` what served before, for ``kubectl modelship undo``).
Nothing is left for the user to edit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from modelship_operator.analysis.stepper import (
    Analysis,
    RolloutState,
    advance,
    next_analysis_at,
    parse_action,
)
from modelship_operator.conditions import Event, timestamp
from modelship_operator.observed import DeploymentView, Observed
from modelship_operator.render import variant_name
from modelship_operator.spec import ACTION_ANNOTATION, ModelDeployment, Strategy
from modelship_operator.status import (
    TERMINAL_PHASES,
    ABTestStatus,
    AnalysisResult,
    HistoryEntry,
    ModelRef,
    Phase,
    RolloutProgress,
    Traffic,
)

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
    desired = md.spec.desired_model()
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
    canary_replicas: int
    traffic: Traffic
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


def runs(view: DeploymentView | None, model: ModelRef) -> bool:
    """Whether a Deployment runs ``model`` on every pod, all available."""
    return (
        view is not None
        and view.rolled_out
        and view.model_version == model.version
        and view.sha256 == model.sha256
    )


def _history(entries: Sequence[HistoryEntry], *new: HistoryEntry) -> tuple[HistoryEntry, ...]:
    return tuple([*entries, *new][-HISTORY_LIMIT:])


def _scale_down(
    md: ModelDeployment, progress: RolloutProgress | None, now: datetime
) -> tuple[int, float | None]:
    """Canary replicas after a finished rollout, and when to look again: full size during
    ``scaleDownDelay`` (in-flight requests finish), then none."""
    finished = progress.finished_at if progress is not None else None
    remaining = (
        0.0
        if finished is None
        else (finished + md.spec.strategy.scale_down_delay_delta - now).total_seconds()
    )
    if remaining <= 0:
        return 0, None
    return md.spec.replicas, remaining


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
        return _no_candidate(md, goal, now, history)

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

    if phase == "Promoting" and runs(stable_view, candidate):
        phase = "Promoted"
        progress = progress.model_copy(update={"finished_at": now})
        history = _history(
            history,
            HistoryEntry(
                version=candidate.version,
                outcome="Promoted",
                reason="the stable variant runs the candidate's model",
                at=now,
            ),
        )

    stable_target = candidate if phase in ("Promoting", "Promoted") else goal.stable
    requeue: float | None = None
    canary_replicas = md.spec.replicas
    if phase in TERMINAL_PHASES:
        traffic = Traffic()
        canary_replicas, requeue = _scale_down(md, progress, now)
    due = next_analysis_at(md.spec.strategy, state)
    if due is not None:
        # The exact clock, not the whole second: an analysis is never a second late.
        wait = max(0.5, (due - exact_now).total_seconds())
        requeue = wait if requeue is None else min(requeue, wait)
    detail = decided.decision.reason
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
    )


def _no_candidate(
    md: ModelDeployment, goal: Target, now: datetime, history: tuple[HistoryEntry, ...]
) -> Rollout:
    """The desired model serves (or nothing serves yet): no rollout. One that was under way
    is aborted (the desired model went back to the serving one); a finished one keeps its
    canary pods for scaleDownDelay."""
    prev = md.status
    progress = prev.rollout
    events: tuple[Event, ...] = ()
    if progress is not None and prev.phase in ("Progressing", "Paused", "Promoting"):
        version = progress.candidate.version if progress.candidate else "?"
        reason = f"spec.model is {goal.stable.version} again: the rollout of {version} stopped"
        history = _history(
            history, HistoryEntry(version=version, outcome="Aborted", reason=reason, at=now)
        )
        events = (Event("Warning", "Aborted", reason),)
        progress = progress.model_copy(update={"finished_at": now})
    phase: Phase = "Promoted" if prev.phase == "Promoted" else "Idle"
    replicas, requeue = 0, None
    leftover = progress.candidate if progress is not None else None
    if leftover is not None:
        replicas, requeue = _scale_down(md, progress, now)
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
    )
