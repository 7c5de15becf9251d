"""How many pods a variant runs: shares of replicas and of autoscaler ranges."""

from __future__ import annotations

import pytest
from modelship_operator.capacity import Bounds, bounds, promotion_floor, share_of, with_floor
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


@pytest.mark.parametrize(
    ("canary_pods", "percent", "floor"),
    [
        (4, 80, 5),  # 4 pods carry 80 %: the whole load needs 5
        (1, 10, 10),  # 1 pod at 10 %: 10
        (3, 50, 6),
        (9, 10, 20),  # capped at maxReplicas
        (1, 90, 2),  # at least minReplicas
        (2, 100, 2),
        (0, 50, None),  # no canary pods to measure by
        (3, 0, None),  # no traffic on the canary
    ],
)
def test_promotion_floor_is_the_whole_load_in_the_range(
    canary_pods: int, percent: int, floor: int | None
) -> None:
    scaling = Autoscaling.model_validate({"minReplicas": 2, "maxReplicas": 20})
    assert promotion_floor(scaling, canary_pods, percent) == floor


def test_no_floor_without_autoscaling_and_a_floor_raises_only_the_minimum() -> None:
    assert promotion_floor(None, 4, 80) is None
    assert with_floor(Bounds(2, 10), 5) == Bounds(5, 10)
    assert with_floor(Bounds(6, 10), 5) == Bounds(6, 10)
    assert with_floor(Bounds(2, 4), 5) == Bounds(4, 4)
    assert with_floor(Bounds(2, 10), None) == Bounds(2, 10)
    assert with_floor(None, 5) is None
