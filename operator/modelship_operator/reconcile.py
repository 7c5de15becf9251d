"""The reconcile plan: from (resource, what exists, now) to what to do. Pure, no I/O.

:func:`plan` is the whole decision of one reconcile. The reconciler
(:mod:`modelship_operator.reconciler`) stays thin: parse the body
(:meth:`ModelDeployment.from_api`; on failure :func:`plan_invalid`), list the children and
pods (:func:`modelship_operator.observed.observe`), call :func:`plan`, then act on it in
order: record ``plan.decided`` in status (the decision, with Degraded as it was), server-side
apply ``plan.apply``, delete ``plan.delete``, then :func:`settle` Degraded from what acting
met and record that, and post the Events of the recorded transitions
(:mod:`modelship_operator.events`). Because the plan depends only on its inputs and
everything a rollout needs is in status, running it twice, or after a crash at any point,
converges to the same state.

The rollout decision (phase, step, traffic, the model each variant runs, what stable serves
in ``rolledOut``, scale-down, requeue, history and the rollout's Events, by the rows of
``rollout.TRANSITIONS``) is :func:`modelship_operator.rollout.track_rollout`'s, fed with this
reconcile's analysis (run by the reconciler before planning, None when none is due); the plan
only assembles it with the rendered children and the conditions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modelship_operator import scaletozero
from modelship_operator.capacity import bounds, with_floor
from modelship_operator.conditions import (
    Event,
    Failure,
    Verdict,
    degraded,
    degraded_events,
    progressing,
    ready,
    set_condition,
    transition_events,
    variant_status,
)
from modelship_operator.events import record, recorded_since
from modelship_operator.kinds import ChildRef
from modelship_operator.observed import Observed
from modelship_operator.render import (
    DesiredState,
    VariantPlan,
    render,
    router_name,
    routing_config,
    stale_children,
    variant_name,
)
from modelship_operator.rollout import Analysis, sooner, track_rollout
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ACTION_ANNOTATION, ModelDeployment
from modelship_operator.status import (
    ModelDeploymentStatus,
)


@dataclass(frozen=True)
class Plan:
    """Everything one reconcile should do, in order."""

    apply: tuple[dict[str, Any], ...]
    delete: tuple[ChildRef, ...]
    #: The status to record before acting: the decision, what runs, Ready and Progressing,
    #: with Degraded as it was until acting shows whether the API still refuses something.
    decided: ModelDeploymentStatus
    #: The status once acting met no refusal (:func:`settle` of ``decided``).
    status: ModelDeploymentStatus
    #: The Events of the transitions ``status`` records on top of the resource's status.
    events: tuple[Event, ...]
    requeue_after: float | None = None
    #: Replica counts to set through the scale subresource after applying (scale to zero,
    #: :mod:`modelship_operator.scaletozero`).
    scale: tuple[scaletozero.Scale, ...] = ()


def next_router_generation(
    config_json: str, observed_json: str | None, status_generation: int | None
) -> int:
    """Generation for the routing config: unchanged content keeps the observed generation,
    any change (or a missing ConfigMap) takes a higher one than ever written."""
    from modelship_router.config import RoutingConfig

    new = RoutingConfig.from_json(config_json)
    seen: RoutingConfig | None = None
    if observed_json is not None:
        try:
            seen = RoutingConfig.from_json(observed_json)
        except ValidationError:
            seen = None  # unreadable (edited by hand): overwrite it with a new generation
    if seen is not None and seen.model_copy(update={"generation": 0}) == new.model_copy(
        update={"generation": 0}
    ):
        return int(seen.generation)
    return max(seen.generation if seen else 0, status_generation or 0) + 1


def plan(
    md: ModelDeployment,
    observed: Observed,
    settings: OperatorSettings,
    now: datetime,
    analysis: Analysis | None = None,
    idle: bool | None = None,
) -> Plan:
    """What to apply, delete, write to status and announce for ``md`` now. ``idle``: whether
    Prometheus says stable had no request over scaleToZeroAfter (None: not asked)."""
    rollout = track_rollout(md, observed, now, analysis)
    builtin_router = md.spec.router.type == "builtin"
    scaling = md.spec.autoscaling
    canary = (
        None
        if rollout.canary_model is None
        else VariantPlan(
            "canary",
            rollout.canary_model,
            rollout.canary_replicas,
            # Held for scaleDownDelay (no share): the pods it runs, no autoscaler.
            None if rollout.canary_share is None else bounds(scaling, rollout.canary_share),
        )
    )
    state = DesiredState(
        stable=VariantPlan(
            "stable",
            rollout.stable_model,
            md.spec.replicas,
            with_floor(bounds(scaling), rollout.stable_floor),
        ),
        canary=canary,
        traffic=rollout.traffic,
    )
    generation = None
    if builtin_router:
        draft = routing_config(md, state).to_json()
        generation = next_router_generation(
            draft, observed.routing_json, md.status.router_config_generation
        )
        state = DesiredState(state.stable, state.canary, state.traffic, generation)
    objects = render(md, settings, state)
    delete = stale_children(objects, observed.children, md.metadata.uid)

    stable_view = observed.deployment(variant_name(md.name, "stable"))
    canary_view = observed.deployment(variant_name(md.name, "canary"))
    router_view = observed.deployment(router_name(md.name))
    sleep = scaletozero.decide(md, stable_view, rollout.canary_model is not None, idle, now)
    gen = md.metadata.generation
    conditions = list(md.status.conditions)  # Degraded stays as it was: settle() decides it
    verdicts: list[tuple[Any, Verdict]] = [
        (
            "Ready",
            ready(
                stable_view,
                router_view,
                builtin_router,
                sleep.status is not None and sleep.status.asleep_since is not None,
            ),
        ),
        (
            "Progressing",
            progressing(rollout.phase, stable_view, rollout.stable_model, rollout.detail),
        ),
    ]
    for kind, verdict in verdicts:
        conditions = set_condition(conditions, kind, verdict, now, gen)
    decided = ModelDeploymentStatus(
        observed_generation=gen,
        phase=rollout.phase,
        traffic=rollout.traffic,
        step=rollout.step if rollout.canary_model is not None else None,
        failed_checks=rollout.failed_checks,
        consecutive_errors=rollout.consecutive_errors,
        last_analysis=list(rollout.last_analysis),
        stable=variant_status(stable_view, rollout.stable_model),
        canary=variant_status(canary_view, rollout.canary_model) if canary else None,
        rolled_out=rollout.rolled_out,
        rollout=rollout.progress,
        ab_test=rollout.ab_test,
        scale_to_zero=sleep.status,
        history=list(rollout.history),
        conditions=conditions,
        router_config_generation=generation,
        last_handled_action=md.metadata.annotations.get(ACTION_ANNOTATION)
        or md.status.last_handled_action,
        transitions=list(md.status.transitions),
        last_evented_transition=md.status.last_evented_transition,
    )
    decided = record(decided, (*rollout.events, *transition_events(md.status, decided)), now)
    settled = settle(decided, observed, (), now)
    return Plan(
        apply=tuple(objects),
        delete=tuple(delete),
        decided=decided,
        status=settled,
        events=recorded_since(md.status, settled),
        requeue_after=sooner(rollout.requeue_after, sleep.requeue_after),
        scale=() if sleep.scale is None else (sleep.scale,),
    )


def settle(
    decided: ModelDeploymentStatus,
    observed: Observed,
    failures: Sequence[Failure],
    now: datetime,
) -> ModelDeploymentStatus:
    """``decided`` with Degraded from what acting met (``failures``: what the API refused)
    and what was observed, and its Event recorded. Nothing else is decided again."""
    verdict = degraded(observed, failures)
    conditions = set_condition(
        decided.conditions, "Degraded", verdict, now, decided.observed_generation
    )
    after = decided.model_copy(update={"conditions": conditions})
    return record(after, degraded_events(decided, after), now)


def describe_invalid(exc: ValidationError) -> str:
    """A pydantic error as one line per problem: ``spec.strategy.steps: message``."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "spec"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def plan_invalid(
    body: Mapping[str, Any],
    problem: str,
    now: datetime,
    reason: str = "InvalidSpec",
    message: str = "the operator cannot use this spec: {problem}",
) -> Plan:
    """A resource the operator cannot read (the CRD let it through, the models did not),
    or whose model it cannot resolve while nothing serves: touch nothing, say why in a
    Degraded condition and a Warning Event."""
    try:
        previous = ModelDeploymentStatus.model_validate(body.get("status") or {})
    except ValidationError:
        previous = ModelDeploymentStatus()
    generation = int((body.get("metadata") or {}).get("generation", 0))
    verdict = Verdict("True", reason, message.format(problem=problem))
    conditions = set_condition(previous.conditions, "Degraded", verdict, now, generation)
    status = previous.model_copy(
        update={"conditions": conditions, "observed_generation": generation}
    )
    status = record(status, transition_events(previous, status), now)
    return Plan(
        apply=(),
        delete=(),
        decided=status,
        status=status,
        events=recorded_since(previous, status),
    )


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """JSON merge patch turning status ``old`` into ``new`` (removed keys become null)."""
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = status_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch
