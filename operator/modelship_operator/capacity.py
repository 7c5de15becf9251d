"""How many pods a variant runs: a fixed count or autoscaler bounds, and a canary's share.

Pure arithmetic, no I/O. Stable runs ``spec.replicas`` pods, or between
``spec.autoscaling.minReplicas`` and ``maxReplicas`` under a HorizontalPodAutoscaler. A
canary runs its traffic share of the same (as Flagger and Argo Rollouts size theirs), at
least one pod, so a canary at 10 % does not hold as many pods as stable. The share it is
sized for is chosen by the rollout engine (:func:`modelship_operator.rollout.sizing_share`):
the larger of the traffic it has and the traffic its next step gives it, so the pods a step
needs are started while the step before it is analysed, before any traffic moves.

Promotion moves the canary's traffic to stable. Under autoscaling stable has been scaled
to its own share meanwhile, so before that traffic moves its autoscaler's floor is raised
to the pods the whole load needs (:func:`promotion_floor`), and the rollout is not
promoted until stable runs that many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelship_operator.spec import Autoscaling


@dataclass(frozen=True)
class Bounds:
    """A HorizontalPodAutoscaler's replica range for one variant."""

    min_replicas: int
    max_replicas: int


def share_of(count: int, percent: int) -> int:
    """``percent`` % of ``count`` pods, rounded up, at least one."""
    return max(1, math.ceil(count * max(0, min(percent, 100)) / 100))


def bounds(autoscaling: Autoscaling | None, percent: int = 100) -> Bounds | None:
    """The autoscaler range of a variant sized for ``percent`` % of the traffic (None:
    no autoscaling, the Deployment's replicas are the operator's)."""
    if autoscaling is None:
        return None
    return Bounds(
        min_replicas=share_of(autoscaling.min_replicas, percent),
        max_replicas=share_of(autoscaling.max_replicas, percent),
    )


def promotion_floor(
    autoscaling: Autoscaling | None, canary_pods: int, canary_percent: int
) -> int | None:
    """Pods stable needs before a promotion moves all the traffic to it: the pods the
    canary's autoscaler runs for its ``canary_percent`` % of the load, scaled to the whole
    load (rounded up), within the autoscaling range. None without autoscaling (stable
    keeps its fixed count throughout) or when the canary has no traffic to measure by."""
    if autoscaling is None or canary_percent <= 0 or canary_pods <= 0:
        return None
    whole = math.ceil(canary_pods * 100 / min(canary_percent, 100))
    return max(autoscaling.min_replicas, min(whole, autoscaling.max_replicas))


def with_floor(range_: Bounds | None, floor: int | None) -> Bounds | None:
    """``range_`` with its minimum raised to ``floor`` (never above its maximum)."""
    if range_ is None or floor is None:
        return range_
    return Bounds(min(max(range_.min_replicas, floor), range_.max_replicas), range_.max_replicas)
