"""Status logic: conditions, per-variant status and Events, from what was observed.

Pure functions. A condition's ``lastTransitionTime`` changes only when its status does (a
new reason or message alone keeps the time), so ``kubectl wait --for=condition=Ready`` and
alerting on "Degraded for more than 10 minutes" work as users expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from modelship_operator.observed import DeploymentView, Observed
from modelship_operator.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    ModelDeploymentStatus,
    ModelRef,
    Phase,
    VariantStatus,
)

CONDITION_ORDER: Final[tuple[ConditionType, ...]] = ("Ready", "Progressing", "Degraded")


def timestamp(now: datetime) -> datetime:
    """Kubernetes times have whole seconds."""
    return now.replace(microsecond=0)


@dataclass(frozen=True)
class Verdict:
    """A condition's new value, before the transition time is decided."""

    status: ConditionStatus
    reason: str
    message: str


def set_condition(
    conditions: Sequence[Condition],
    kind: ConditionType,
    verdict: Verdict,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """``conditions`` with ``kind`` set to ``verdict``, in canonical order.

    The transition time is kept when the status is unchanged, and set to ``now`` otherwise.
    """
    old = next((c for c in conditions if c.type == kind), None)
    changed = old is None or old.status != verdict.status
    new = Condition(
        type=kind,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        last_transition_time=timestamp(now) if changed or old is None else old.last_transition_time,
        observed_generation=generation,
    )
    merged = {c.type: c for c in conditions}
    merged[kind] = new
    return [merged[t] for t in CONDITION_ORDER if t in merged]


# --- the three conditions -------------------------------------------------------------------


def ready(
    stable: DeploymentView | None,
    router: DeploymentView | None,
    router_expected: bool,
    scaled_to_zero: bool = False,
) -> Verdict:
    """Ready: the stable variant (and the router, if any) has a pod able to answer, or is
    scaled to zero (``scaled_to_zero``) behind a router that starts one on demand."""
    if stable is None:
        return Verdict("False", "Pending", "the stable Deployment does not exist yet")
    reason = "Available"
    if scaled_to_zero and stable.desired == 0:
        reason = "ScaledToZero"
        served = (
            f"stable {stable.model_version} is scaled to zero: the router starts a pod on "
            "the next request"
        )
    elif stable.ready == 0:
        return Verdict(
            "False",
            "StableUnavailable",
            f"0/{stable.desired} pods of {stable.name} ready",
        )
    else:
        served = f"stable {stable.model_version}: {stable.ready}/{stable.desired} pods ready"
    if router_expected:
        if router is None:
            return Verdict("False", "Pending", "the router Deployment does not exist yet")
        if router.ready == 0:
            return Verdict(
                "False", "RouterUnavailable", f"0/{router.desired} pods of {router.name} ready"
            )
        served += f"; router: {router.ready}/{router.desired} ready"
    return Verdict("True", reason, served)


_PHASE_PROGRESS: Final[dict[Phase, Verdict]] = {
    "Idle": Verdict("False", "Idle", "no rollout in progress"),
    "Paused": Verdict("False", "Paused", "the rollout is paused"),
    "Promoted": Verdict("False", "Promoted", "the canary was promoted"),
    "RolledBack": Verdict("False", "RolledBack", "the canary was rolled back"),
    "Failed": Verdict("False", "Failed", "the rollout failed"),
}


def progressing(
    phase: Phase,
    stable: DeploymentView | None,
    stable_target: ModelRef,
    detail: str = "",
) -> Verdict:
    """Progressing: a rollout of the stable Deployment or a canary analysis is under way.

    ``detail`` says more about the phase (step and weight, why it paused or ended).
    """
    runs_target = (
        stable is not None
        and stable.rolled_out
        and stable.model_version == stable_target.version
        and stable.sha256 == stable_target.sha256
    )
    if stable is not None and not runs_target:
        return Verdict(
            "True",
            "RollingUpdate",
            f"{stable.name} is rolling out model {stable_target.version}: "
            f"{stable.updated}/{stable.desired} pods updated, {stable.ready} ready",
        )
    if phase == "Progressing":
        return Verdict("True", "CanaryRollout", detail or "canary analysis in progress")
    if phase == "Promoting":
        return Verdict("True", "Promoting", detail or "the stable variant takes the canary's model")
    verdict = _PHASE_PROGRESS[phase]
    return Verdict(verdict.status, verdict.reason, detail or verdict.message)


@dataclass(frozen=True)
class Failure:
    """Something the operator could not do (an API call refused), for Degraded."""

    reason: str
    message: str


def degraded(observed: Observed, failures: Sequence[Failure] = ()) -> Verdict:
    """Degraded: something needs fixing; the message says what and where."""
    if failures:
        return Verdict("True", failures[0].reason, "; ".join(f.message for f in failures)[:4000])
    if observed.problems:
        ordered = sorted(observed.problems, key=lambda p: (p.variant != "stable", p.pod))
        message = "; ".join(p.describe() for p in ordered[:3])
        if len(ordered) > 3:
            message += f"; and {len(ordered) - 3} more"
        return Verdict("True", "PodFailing", message[:4000])
    stalled = [d for d in observed.deployments.values() if d.stalled]
    if stalled:
        message = "; ".join(f"{d.name}: {d.stalled}" for d in stalled)
        return Verdict("True", "RolloutStalled", message[:4000])
    return Verdict("False", "AsExpected", "")


def variant_status(view: DeploymentView | None, target: ModelRef | None) -> VariantStatus | None:
    """What a variant runs: the observed pod template's version, its pod counts."""
    if view is None:
        return None
    return VariantStatus(
        version=view.model_version or (target.version if target else None),
        sha256=view.sha256,
        replicas=view.desired,
        ready_replicas=view.ready,
        updated_replicas=view.updated,
    )


# --- events ---------------------------------------------------------------------------------

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the ModelDeployment."""

    type: EventType
    reason: str
    message: str


_PHASE_EVENTS: Final[dict[Phase, tuple[EventType, str]]] = {
    "Idle": ("Normal", "Idle"),
    "Progressing": ("Normal", "RolloutProgressing"),
    "Paused": ("Normal", "RolloutPaused"),
    "Promoting": ("Normal", "Promoting"),
    "Promoted": ("Normal", "Promoted"),
    "RolledBack": ("Warning", "RolledBack"),
    "Failed": ("Warning", "RolloutFailed"),
}


def transition_events(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> list[Event]:
    """One Event per transition between two statuses (none when nothing changed)."""
    events: list[Event] = []
    if new.phase is not None and new.phase != old.phase:
        kind, reason = _PHASE_EVENTS[new.phase]
        progress = new.condition("Progressing")
        detail = progress.message if progress and progress.message else ""
        events.append(Event(kind, reason, f"phase {old.phase or '-'} -> {new.phase}. {detail}"))
    before, after = old.condition("Ready"), new.condition("Ready")
    if after is not None and (before is None or before.status != after.status):
        if after.status == "True":
            events.append(Event("Normal", "Ready", after.message))
        elif before is not None and before.status == "True":
            events.append(Event("Warning", "NotReady", after.message))
    events += _scale_to_zero_events(old, new)
    return [*events, *degraded_events(old, new)]


def _scale_to_zero_events(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> list[Event]:
    """An Event when stable goes to zero pods or comes back (autoscaling.minReplicas 0)."""
    was = old.scale_to_zero.asleep_since if old.scale_to_zero else None
    now = new.scale_to_zero.asleep_since if new.scale_to_zero else None
    if now is not None and was is None:
        return [Event("Normal", "ScaledToZero",
                      "stable runs no pod: no request came for scaleToZeroAfter; the router "
                      "starts one on the next request")]  # fmt: skip
    if was is not None and now is None and new.scale_to_zero is not None:
        return [Event("Normal", "ScaledFromZero", "stable runs pods again")]
    return []


def degraded_events(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> list[Event]:
    """The Event of a change of Degraded between two statuses (none when unchanged)."""
    before, after = old.condition("Degraded"), new.condition("Degraded")
    if after is not None and after.status == "True":
        # A new reason is a new problem; a changing message alone (back-off timers) is not.
        if before is None or (before.status, before.reason) != (after.status, after.reason):
            return [Event("Warning", after.reason, after.message)]
    elif after is not None and before is not None and before.status == "True":
        return [Event("Normal", "Recovered", "no longer degraded")]
    return []
