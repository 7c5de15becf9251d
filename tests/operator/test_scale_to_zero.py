"""Scale to zero (autoscaling.minReplicas 0): when stable's last pod goes and comes back,
and what the router is told and allowed. The planning code is the real one; the cluster is
data (test_reconcile's ``listed``)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from modelship_operator.analysis.queries import DEFAULT_LABELS
from modelship_operator.observed import Observed, observe
from modelship_operator.reconcile import Plan, plan
from modelship_operator.scaletozero import Scale, check_due, idle_query, is_idle
from modelship_operator.spec import ModelDeployment
from pydantic import ValidationError
from test_reconcile import CANARY, SETTINGS, T0, cond, kinds, listed, md, routing

SCALING = {"minReplicas": 0, "maxReplicas": 3, "scaleToZeroAfter": "1m"}


def again(p: Plan, resource: ModelDeployment) -> ModelDeployment:
    """``resource`` with the status ``p`` recorded."""
    body = resource.to_api() if hasattr(resource, "to_api") else {}
    body["status"] = p.status.to_api()
    return ModelDeployment.from_api(body)


def observed(p: Plan, stable_replicas: int | None = None) -> Observed:
    """What the API lists after ``p`` was applied; stable at ``stable_replicas`` pods when
    given (as the autoscaler, the operator's scale to zero or the router's wake set it)."""
    objects = copy.deepcopy(p.apply)
    if stable_replicas is not None:
        for obj in objects:
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "churn-stable":
                obj["spec"]["replicas"] = stable_replicas
    return observe(listed(objects), routing_configmap="churn-router")


def run(resource: ModelDeployment, seen: Observed, at: Any, idle: bool | None = None) -> Plan:
    return plan(resource, seen, SETTINGS, at, idle=idle)


def awake_for(seconds: float) -> tuple[ModelDeployment, Plan, Observed]:
    """A scale-to-zero deployment serving since T0, planned again ``seconds`` later."""
    resource = md(autoscaling=SCALING)
    first = run(resource, Observed(), T0)
    seen = observed(first)
    settled = run(resource, seen, T0)
    resource = again(settled, resource)
    assert settled.status.scale_to_zero is not None
    assert settled.status.scale_to_zero.awake_since == T0
    return resource, run(resource, seen, T0 + timedelta(seconds=seconds)), seen


def test_stable_is_not_scaled_to_zero_before_the_window_has_passed() -> None:
    resource, p, seen = awake_for(30)
    assert not check_due(resource, seen.deployment("churn-stable"), T0 + timedelta(seconds=30))
    assert p.scale == ()
    # Even told it is idle: the router may have just woken it.
    early = run(resource, seen, T0 + timedelta(seconds=30), idle=True)
    assert early.scale == ()
    assert early.requeue_after == pytest.approx(30)


def test_stable_idle_for_the_window_is_scaled_to_zero() -> None:
    resource, _, seen = awake_for(61)
    at = T0 + timedelta(seconds=61)
    assert check_due(resource, seen.deployment("churn-stable"), at)
    assert run(resource, seen, at, idle=True).scale == (Scale("churn-stable", 1, 0),)
    # Requests seen, or no answer from Prometheus: it stays, and is looked at again.
    for idle in (False, None):
        busy = run(resource, seen, at, idle=idle)
        assert busy.scale == ()
        assert busy.requeue_after == pytest.approx(15)  # a quarter of the window


def test_scaled_to_zero_it_is_ready_and_its_autoscaler_keeps_a_minimum_of_one() -> None:
    resource, p, _ = awake_for(61)
    asleep = observed(p, stable_replicas=0)
    slept = run(resource, asleep, T0 + timedelta(seconds=62))
    assert slept.scale == ()
    assert slept.status.scale_to_zero is not None
    assert slept.status.scale_to_zero.asleep_since == T0 + timedelta(seconds=62)
    assert cond(slept, "Ready") == ("True", "ScaledToZero")
    assert "ScaledToZero" in [e.reason for e in slept.events]
    hpa = kinds(slept, "HorizontalPodAutoscaler")["churn-stable"]["spec"]
    assert hpa["minReplicas"] == 1  # the autoscaler is idle at 0 and resumes from 1
    assert "replicas" not in kinds(slept, "Deployment")["churn-stable"]["spec"]

    # Woken by the router: the window starts again from when the operator sees it.
    woken_at = T0 + timedelta(seconds=300)
    woken = run(again(slept, resource), observed(p, stable_replicas=1), woken_at, idle=True)
    assert woken.scale == ()
    assert woken.status.scale_to_zero is not None
    assert woken.status.scale_to_zero.awake_since == woken_at
    assert woken.status.scale_to_zero.asleep_since is None
    assert "ScaledFromZero" in [e.reason for e in woken.events]


def test_a_rollout_wakes_stable_and_keeps_it_up() -> None:
    resource, p, _ = awake_for(61)
    asleep = observed(p, stable_replicas=0)
    rolling = md(status=run(resource, asleep, T0).status, canary=CANARY, autoscaling=SCALING)
    woken = run(rolling, asleep, T0 + timedelta(seconds=70))
    assert woken.scale == (Scale("churn-stable", 0, 1),)
    running = run(rolling, observed(p), T0 + timedelta(seconds=400), idle=True)
    assert running.scale == ()


def test_the_router_may_wake_stable_and_only_stable() -> None:
    resource = md(autoscaling=SCALING | {"activationTimeout": "12s"})
    p = run(resource, Observed(), T0)
    config = routing(p)
    assert config.variant("stable").scale_target == "churn-stable"
    assert config.activation_seconds == 12
    (role,) = kinds(p, "Role").values()
    scale_rules = [r for r in role["rules"] if "deployments/scale" in r["resources"]]
    assert scale_rules == [
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"],
         "resourceNames": ["churn-stable"]}
    ]  # fmt: skip


@pytest.mark.parametrize("scaling", [None, {"minReplicas": 1, "maxReplicas": 3}])
def test_without_scale_to_zero_nothing_sleeps_or_wakes(scaling: dict[str, Any] | None) -> None:
    resource = md(autoscaling=scaling) if scaling else md()
    p = run(resource, Observed(), T0)
    assert routing(p).variant("stable").scale_target is None
    # Nothing new in the routing document: a router of an earlier version reads it too.
    document = kinds(p, "ConfigMap")["churn-router"]["data"]["routing.json"]
    assert "scaleTarget" not in document and "activationSeconds" not in document
    (role,) = kinds(p, "Role").values()
    assert not [r for r in role["rules"] if "deployments/scale" in r["resources"]]
    later = run(again(p, resource), observed(p), T0 + timedelta(hours=1), idle=True)
    assert later.scale == () and later.status.scale_to_zero is None


def test_scale_to_zero_without_the_builtin_router_is_refused_saying_why() -> None:
    with pytest.raises(ValidationError, match=r"needs router\.type builtin"):
        md(autoscaling=SCALING, router={"type": "none"})


def test_idle_query_counts_the_routers_answers_and_knows_an_unscraped_router() -> None:
    resource = md(autoscaling=SCALING)
    query = idle_query(resource, DEFAULT_LABELS)
    assert query == (
        'sum(increase(modelship_router_requests_total{namespace="ml",deployment="churn"}[60s]))'
        ' or (sum(max_over_time(modelship_router_config_generation{namespace="ml",'
        'deployment="churn"}[60s])) * 0)'
    )
    assert is_idle(0.0) is True
    assert is_idle(1.02) is False
    assert is_idle(None) is None


def test_turning_scale_to_zero_off_while_asleep_wakes_stable() -> None:
    resource, p, _ = awake_for(61)
    asleep = observed(p, stable_replicas=0)
    slept = run(resource, asleep, T0 + timedelta(seconds=62))
    off = md(status=slept.status, autoscaling={"minReplicas": 1, "maxReplicas": 3})
    woken = run(off, asleep, T0 + timedelta(seconds=90))
    assert woken.scale == (Scale("churn-stable", 0, 1),)
    assert woken.status.scale_to_zero is not None  # kept until it runs pods
    assert routing(woken).variant("stable").scale_target is None
    # Once it runs pods, nothing more is done.
    up = run(md(status=woken.status, autoscaling={"minReplicas": 1, "maxReplicas": 3}),
             observed(p), T0 + timedelta(seconds=120))  # fmt: skip
    assert up.scale == () and up.status.scale_to_zero is None
