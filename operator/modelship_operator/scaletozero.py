"""Scale to zero (``autoscaling.minReplicas: 0``): when stable's last pod goes. Pure, no I/O.

The HorizontalPodAutoscaler keeps at least one pod (a minimum of 0 is an alpha feature
gate), and it does nothing at all while its target runs 0 replicas. So the operator
scales stable from N to 0 through the Deployment's ``scale`` subresource when:

- scale to zero is on and no rollout runs (a canary or a rollout about to start keeps
  stable up: its analysis compares against it);
- stable has been awake for ``scaleToZeroAfter`` at least: ``status.scaleToZero.awakeSince``
  is when the operator first saw it run pods again. This guards the moment the router
  has just woken it, before Prometheus has scraped the request that did;
- and Prometheus says the router answered no request of the deployment over the last
  ``scaleToZeroAfter`` (:func:`idle_query`). No answer (Prometheus down, the router not
  scraped) keeps stable up: the cost of a wrong guess is a cold start, which only a
  known-idle deployment should pay.

The router scales it back from 0 to 1 when a request comes (``modelship_router.activate``),
and the autoscaler takes over from there. A rollout that starts while stable is at zero
wakes it the same way (0 to 1). Both writes read the count first and patch it with the
resourceVersion they read as a precondition (``modelship_kube.request.Client.scale``), so
they never undo an autoscaler's or a person's write made meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from modelship_router import contract as router

from modelship_operator.analysis.queries import LabelScheme, quote
from modelship_operator.observed import DeploymentView
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ScaleToZeroStatus

#: Seconds between two idle checks of an awake stable that is not idle yet (at most).
RECHECK_SECONDS: Final = 30.0


@dataclass(frozen=True)
class Scale:
    """Set Deployment ``name``'s replicas from ``replicas`` (tested first) to ``to``."""

    name: str
    replicas: int
    to: int


@dataclass(frozen=True)
class Decision:
    """What scale to zero does in this reconcile."""

    status: ScaleToZeroStatus | None = None
    scale: Scale | None = None
    requeue_after: float | None = None


def check_due(md: ModelDeployment, stable: DeploymentView | None, now: datetime) -> bool:
    """Whether this reconcile should ask Prometheus if stable is idle: it may scale to zero,
    runs pods, and has for ``scaleToZeroAfter`` (the rollout is checked by :func:`decide`)."""
    scaling = md.spec.autoscaling
    if scaling is None or not scaling.scales_to_zero or stable is None or stable.desired == 0:
        return False
    since = md.status.scale_to_zero.awake_since if md.status.scale_to_zero else None
    return since is not None and now >= since + _window(md)


def decide(
    md: ModelDeployment,
    stable: DeploymentView | None,
    rolling: bool,
    idle: bool | None,
    now: datetime,
) -> Decision:
    """Scale to zero's status, scale action and requeue for this reconcile.

    ``rolling``: a canary is planned (stable must run). ``idle``: Prometheus's answer to
    :func:`idle_query` (None: not asked, or no answer)."""
    scaling = md.spec.autoscaling
    if stable is None:
        return Decision()
    if scaling is None or not scaling.scales_to_zero:
        if scaling is not None and md.status.scale_to_zero is not None and stable.desired == 0:
            # Scale to zero was turned off while stable slept: its autoscaler does nothing
            # at 0 replicas, so wake it (without autoscaling spec.replicas is applied). The
            # status stays until stable runs pods, so a failed wake is tried again.
            return Decision(md.status.scale_to_zero, Scale(stable.name, 0, 1))
        return Decision()
    before = md.status.scale_to_zero or ScaleToZeroStatus()
    if stable.desired == 0:
        asleep = ScaleToZeroStatus(asleep_since=before.asleep_since or now)
        if rolling:  # a rollout compares against stable: wake it
            return Decision(asleep, Scale(stable.name, 0, 1))
        return Decision(asleep)
    awake_since = before.awake_since or now
    awake = ScaleToZeroStatus(awake_since=awake_since)
    if rolling:
        return Decision(awake)
    due = awake_since + _window(md)
    if now < due:
        return Decision(awake, requeue_after=max(1.0, (due - now).total_seconds()))
    if idle:
        return Decision(awake, Scale(stable.name, stable.desired, 0))
    recheck = min(RECHECK_SECONDS, max(5.0, scaling.scale_to_zero_after_seconds / 4))
    return Decision(awake, requeue_after=recheck)


def idle_query(md: ModelDeployment, labels: LabelScheme) -> str:
    """PromQL: the requests the router answered for ``md`` over ``scaleToZeroAfter``; 0
    when it answered none but is scraped (its config generation is there); empty when
    Prometheus knows nothing of the router (unknown: not idle)."""
    window = f"{int(_window(md).total_seconds())}s"
    scope = f"{labels.namespace}={quote(md.namespace)},{labels.router_deployment}={quote(md.name)}"
    requests = router.total(router.REQUESTS)
    return (
        f"sum(increase({requests}{{{scope}}}[{window}])) or "
        f"(sum(max_over_time({router.CONFIG_GENERATION}{{{scope}}}[{window}])) * 0)"
    )


def is_idle(requests: float | None) -> bool | None:
    """Whether :func:`idle_query`'s value means no request (``increase`` extrapolates, so
    one request can read as a fraction; below a half there was none)."""
    return None if requests is None else requests < 0.5


def _window(md: ModelDeployment) -> timedelta:
    scaling = md.spec.autoscaling
    assert scaling is not None
    return timedelta(seconds=scaling.scale_to_zero_after_seconds)
