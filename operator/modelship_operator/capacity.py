"""How many pods a variant runs: a fixed count or autoscaler bounds, and a canary's share.

Pure arithmetic, no I/O. Stable runs ``spec.replicas`` pods, or between
``spec.autoscaling.minReplicas`` and ``maxReplicas`` under a HorizontalPodAutoscaler. A
canary runs its traffic share of the same (as Flagger and Argo Rollouts size theirs), at
least one pod, so a canary at 10 % does not hold as many pods as stable. The share it is
sized for is chosen by the rollout engine (:func:`modelship_operator.rollout.sizing_share`):
the larger of the traffic it has and the traffic its next step gives it, so the pods a step
needs are started while the step before it is analysed, before any traffic moves.
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
