"""How many pods a variant runs: shares of replicas and of autoscaler ranges."""

from __future__ import annotations

import pytest
from modelship_operator.capacity import Bounds, bounds, share_of
from modelship_operator.spec import Autoscaling


@pytest.mark.parametrize(
    ("count", "percent", "pods"),
    [(10, 10, 1), (10, 15, 2), (10, 50, 5), (10, 100, 10), (3, 0, 1), (1, 5, 1), (7, 120, 7)],
)
def test_a_share_rounds_up_and_keeps_at_least_one_pod(count: int, percent: int, pods: int) -> None:
    assert share_of(count, percent) == pods


def test_autoscaler_bounds_follow_the_share() -> None:
    scaling = Autoscaling.model_validate({"minReplicas": 2, "maxReplicas": 20})
    assert bounds(scaling) == Bounds(2, 20)
    assert bounds(scaling, 25) == Bounds(1, 5)
    assert bounds(None, 25) is None
