"""The ModelDeployment status: what actually is, written only by the operator.

Everything a rollout needs to resume after a crash or restart lives here (the rollout key,
step, weights, counters and timestamps), so the operator keeps no state of its own and
the canary's progress is visible in the resource itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import Field

from modelship_operator.validation import ApiModel

Phase = Literal["Idle", "Progressing", "Paused", "Promoting", "Promoted", "RolledBack", "Failed"]
PHASES: Final[tuple[Phase, ...]] = (
    "Idle",
    "Progressing",
    "Paused",
    "Promoting",
    "Promoted",
    "RolledBack",
    "Failed",
)
#: Phases in which a rollout is over: traffic is back on one variant and nothing advances.
TERMINAL_PHASES: Final[frozenset[Phase]] = frozenset({"Promoted", "RolledBack", "Failed"})

ConditionType = Literal["Ready", "Progressing", "Degraded"]
ConditionStatus = Literal["True", "False", "Unknown"]
Verdict = Literal["Successful", "Failed", "Inconclusive", "Error"]
Outcome = Literal["Promoted", "RolledBack", "Failed", "Aborted", "NoWinner", "Superseded"]

Percent = Annotated[int, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0)]
ShortText = Annotated[str, Field(max_length=256)]
LongText = Annotated[str, Field(max_length=4096)]


class Condition(ApiModel):
    """One aspect of the resource's state, in the standard Kubernetes condition shape."""

    type: ConditionType = Field(
        description="Ready: the model answers requests. Progressing: a rollout or rolling "
        "update is under way. Degraded: something needs fixing (see message)."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        description="One CamelCase word for programs, e.g. Available or ModelLoadFailed."
    )
    message: LongText = Field(default="", description="What happened, and what to do.")
    last_transition_time: datetime = Field(
        description="When status last changed (not when reason or message did)."
    )
    observed_generation: Count | None = Field(
        default=None, description="metadata.generation this condition was computed for."
    )


class Traffic(ApiModel):
    """Share of requests per variant, in percent, as configured at the router."""

    stable: Percent = Field(default=100, description="Percent of requests served by stable.")
    canary: Percent = Field(default=0, description="Percent of requests served by the canary.")
    mirror: Percent = Field(
        default=0,
        description="Percent of requests also copied to the canary (shadow); its answers "
        "are discarded.",
    )


class VariantStatus(ApiModel):
    """What one variant's Deployment runs, as observed."""

    version: ShortText | None = Field(default=None, description="Model version it serves.")
    sha256: ShortText | None = Field(default=None, description="sha256 of that artifact.")
    replicas: Count = Field(default=0, description="Pods asked for.")
    ready_replicas: Count = Field(default=0, description="Pods ready to serve.")
    updated_replicas: Count = Field(
        default=0, description="Pods running the current pod template (this version)."
    )


class ModelRef(ApiModel):
    """A model artifact, complete enough to roll back to it."""

    version: ShortText = Field(description="Model version.")
    uri: Annotated[str, Field(max_length=2048)] = Field(description="Artifact URI.")
    sha256: ShortText = Field(
        description="Artifact sha256; empty for an unpinned registry model (spec.model.sha256 "
        "omitted)."
    )
    format: ShortText = Field(default="auto", description="Artifact format.")
    max_size: ShortText | None = Field(
        default=None, description="Largest download allowed (spec.model.maxSize)."
    )
    resolved_from: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None,
        description="The models:/ registry URI of spec.model this artifact was resolved from "
        "(uri is then the version's MLflow model directory); absent for other sources.",
    )
    sha256_source: Literal["spec", "operator"] | None = Field(
        default=None,
        description="For a models:/ model, where sha256 comes from: spec (spec.model.sha256) "
        "or operator (the operator hashed the version's skops file when it resolved it, so "
        "every pod verifies those bytes); absent: unpinned.",
    )
    registry_version: ShortText | None = Field(
        default=None,
        description="The registered model's version number resolvedFrom named when it was "
        "resolved (an alias may point elsewhere since).",
    )


class RolledOut(ApiModel):
    """The model the stable variant runs now, and the one before it."""

    current: ModelRef | None = Field(default=None, description="What stable serves now.")
    previous: ModelRef | None = Field(
        default=None, description="What stable served before; set spec.model to it to go back."
    )


class AnalysisResult(ApiModel):
    """The outcome of one check at the last analysis."""

    metric: ShortText = Field(description="Metric name (strategy.metrics[].name).")
    variant: Literal["stable", "canary"] = Field(description="Variant that was measured.")
    value: float | None = Field(
        default=None, description="Measured value; absent when there was none (no series, NaN)."
    )
    stable_value: float | None = Field(
        default=None, description="Stable's value over the same window (comparative checks)."
    )
    threshold: ShortText | None = Field(
        default=None, description="What the value had to satisfy, e.g. '>= 99'."
    )
    samples: Count | None = Field(default=None, description="Requests in the window.")
    verdict: Verdict = Field(
        description="Successful, Failed, Inconclusive (too few samples, no data) or Error "
        "(query failed, Prometheus unreachable)."
    )
    message: LongText | None = Field(default=None, description="Why, in words.")


class RolloutProgress(ApiModel):
    """Bookkeeping that lets a rollout resume exactly where it was after a restart."""

    key: ShortText = Field(
        description="Identity of the rollout (hash of model, canary and strategy); a new "
        "key restarts the analysis from the first step."
    )
    candidate: ModelRef | None = Field(
        default=None, description="The canary model this rollout is about."
    )
    started_at: datetime = Field(description="When this rollout began.")
    step_started_at: datetime | None = Field(
        default=None, description="When the current step began (bounds progressDeadline)."
    )
    last_analysis_time: datetime | None = Field(
        default=None, description="When the last analysis ran."
    )
    finished_at: datetime | None = Field(
        default=None, description="When the rollout reached Promoted, RolledBack or Failed."
    )
    pause_reason: LongText | None = Field(
        default=None, description="Why the rollout is paused (user request or errors)."
    )
    stable_floor: Count | None = Field(
        default=None,
        description="With autoscaling: the pods stable's autoscaler runs at least while a "
        "promotion moves the canary's traffic to it (what the whole load needs, from the "
        "canary's pods and share), and for a while after, until its CPU use shows that load.",
    )


class ABVariantStats(ApiModel):
    """Business metric counts of one variant in an A/B test."""

    successes: float = Field(default=0, ge=0, description="Successes counted.")
    trials: float = Field(default=0, ge=0, description="Trials counted.")


class ABTestStatus(ApiModel):
    """Where the A/B test stands."""

    stable: ABVariantStats = Field(default_factory=ABVariantStats, description="Stable's counts.")
    canary: ABVariantStats = Field(default_factory=ABVariantStats, description="Canary's counts.")
    p_value: float | None = Field(
        default=None, ge=0, le=1, description="Always-valid p-value of 'no difference'."
    )
    winner: Literal["stable", "canary", "none"] | None = Field(
        default=None, description="The better variant once significant; none: no difference."
    )
    split_at: datetime | None = Field(
        default=None,
        description="When the traffic was first split between the variants: the test counts "
        "from then (before it, while the canary got ready, stable had all of it).",
    )


class ScaleToZeroStatus(ApiModel):
    """Whether stable is awake or scaled to zero, and since when (as the operator saw it)."""

    awake_since: datetime | None = Field(
        default=None,
        description="When the operator first saw stable run pods again (after being scaled "
        "to zero, or first): it is scaled to zero no sooner than scaleToZeroAfter from then.",
    )
    asleep_since: datetime | None = Field(
        default=None, description="When stable was scaled to zero (absent: it is awake)."
    )


class HistoryEntry(ApiModel):
    """One finished rollout."""

    version: ShortText = Field(description="Candidate version.")
    outcome: Outcome = Field(description="How it ended.")
    reason: LongText | None = Field(default=None, description="Why, e.g. the failing metric.")
    at: datetime = Field(description="When it ended.")


#: Transitions kept in ``status.transitions`` (newest last). Each reconcile posts the Events
#: of the ones recorded before it, so only a handful are ever waiting for theirs.
TRANSITIONS_LIMIT: Final = 16


class RecordedTransition(ApiModel):
    """One transition the status shows, recorded with the Event that announces it."""

    seq: Annotated[int, Field(ge=1)] = Field(
        description="Sequence number, increasing over the resource's life; the Event's name "
        "ends with it."
    )
    type: Literal["Normal", "Warning"] = Field(description="The Event's type.")
    reason: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="The Event's reason, e.g. StepAdvanced."
    )
    message: Annotated[str, Field(max_length=1024)] = Field(
        default="", description="The Event's message."
    )
    at: datetime = Field(description="When the transition was decided.")


class ModelDeploymentStatus(ApiModel):
    """What the operator observed and decided. Written only by the operator."""

    observed_generation: Count | None = Field(
        default=None, description="metadata.generation the status was computed for."
    )
    phase: Phase | None = Field(
        default=None,
        description="Idle (no rollout), Progressing, Paused, Promoting, Promoted, RolledBack "
        "or Failed.",
    )
    traffic: Traffic | None = Field(default=None, description="Traffic split in force.")
    step: Count | None = Field(
        default=None,
        description="Index (from 0) into strategy.steps of the current step; len(steps) once "
        "every step passed and a Manual promotion is awaited. 0 in the shadow and A/B stages.",
    )
    failed_checks: Count = Field(default=0, description="Failed analyses in this rollout.")
    consecutive_errors: Count = Field(
        default=0, description="Analyses in a row that could not run (Error)."
    )
    last_analysis: list[AnalysisResult] = Field(
        default_factory=list, max_length=64, description="Results of the last analysis."
    )
    stable: VariantStatus | None = Field(default=None, description="The stable variant.")
    canary: VariantStatus | None = Field(default=None, description="The canary variant.")
    rolled_out: RolledOut | None = Field(
        default=None, description="Current and previous models of the stable variant."
    )
    rollout: RolloutProgress | None = Field(
        default=None, description="Progress of the rollout in this spec (absent: none)."
    )
    ab_test: ABTestStatus | None = Field(default=None, description="A/B test state.")
    scale_to_zero: ScaleToZeroStatus | None = Field(
        default=None,
        description="With autoscaling.minReplicas 0: since when stable has run pods, or "
        "since when it has been scaled to zero.",
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, max_length=20, description="Finished rollouts, newest last."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="Ready, Progressing and Degraded.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    router_config_generation: Count | None = Field(
        default=None,
        description="Generation of the routing configuration last written for the router.",
    )
    last_handled_action: ShortText | None = Field(
        default=None, description="Value of the modelship.io/action annotation last acted on."
    )
    transitions: list[RecordedTransition] = Field(
        default_factory=list,
        max_length=TRANSITIONS_LIMIT,
        description="The latest transitions (newest last), each recorded in the same write "
        "as the change it announces; their Events are posted from here.",
    )
    last_evented_transition: Count | None = Field(
        default=None,
        description="seq of the last transition whose Event was posted; later ones are "
        "posted by the next reconcile (after a crash, for instance).",
    )

    def condition(self, kind: ConditionType) -> Condition | None:
        """The condition of type ``kind``, if set."""
        return next((c for c in self.conditions if c.type == kind), None)
