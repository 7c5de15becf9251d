"""Serving capacity end to end: the HorizontalPodAutoscaler of spec.autoscaling adds
serving pods under load and removes them after, a canary runs its traffic share of the
pods as its weight grows, and no client request is lost in any of it.

The cluster runs the real controller-manager (its HPA controller) and metrics-server,
which reads the kubelet's CPU figures of the serving pods: the load is the demo's bounded
traffic through the router, nothing is injected.
"""

from __future__ import annotations

import json
import time

from operator_harness import until
from rollout_harness import (
    ROLLOUT_MARKS,
    Recorder,
    Rollout,
    deploy,
    explain,
    phase_is,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS

NAME = "elastic"
# A small CPU request, a target of 35m a pod (50 % of 70m), between two measured
# figures: 120 predictions a second with their feedback take about 95m of serving CPU in
# all on this machine (more than two pods' target: the autoscaler asks for three), while
# an idle pod, scraped every 2 s by Prometheus and probed, uses 5-15m (three of them fit
# one pod's target). Against 25m idle pods kept it at two or three; against 50m the load
# held it at two.
SPEC = {
    "resources": {"requests": {"cpu": "70m", "memory": "128Mi"}},
    "autoscaling": {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCPUUtilization": 50,
        "scaleDownStabilization": "0s",
    },
}


def test_the_autoscaler_adds_pods_under_load_and_removes_them_losing_nothing(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1 = models["1.0.0"]
    base = deploy(env, ns, NAME, v1, None, spec=SPEC)
    why = lambda: explain(env, ns, NAME)  # noqa: E731
    hpa = json.loads(env.kubectl("-n", ns, "get", "hpa", f"{NAME}-stable", "-o", "json").stdout)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3), hpa
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{NAME}-stable", hpa

    def desired() -> int:
        return int(env.apps.read_namespaced_deployment(f"{NAME}-stable", ns).spec.replicas)

    def ready_pods() -> int:
        pods = env.pods(ns, f"modelship.io/deployment={NAME},modelship.io/variant=stable")
        return sum(
            1
            for p in pods
            if not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        )

    def hpa_state() -> str:
        """What the autoscaler measures and decides (kubectl describe hpa)."""
        return env.kubectl("-n", ns, "describe", "hpa", f"{NAME}-stable", check=False).stdout

    assert desired() == 1, why()
    started = time.monotonic()
    with traffic(base, NAME, v1, rate=120, seconds=300) as busy:
        until(lambda: desired() == 3, "the autoscaler to scale to 3 pods under load", 180,
              lambda: hpa_state() + why(), 2)  # fmt: skip
        scaled_up = time.monotonic() - started
        until(lambda: ready_pods() == 3, "the added pods to be ready", 120, why, 1)
        time.sleep(5)  # the added pods take traffic through the router
    peak = desired()
    # Light traffic while the pods go: their requests must not be lost either.
    with traffic(base, NAME, v1, rate=2, seconds=300) as light:
        quiet = time.monotonic()
        until(lambda: desired() == 1 and ready_pods() == 1 and len(
              env.pods(ns, f"modelship.io/deployment={NAME},modelship.io/variant=stable")) == 1,
              "the autoscaler to remove the added pods", 240, lambda: hpa_state() + why(),
              2)  # fmt: skip
        scaled_down = time.monotonic() - quiet
        time.sleep(3)
    assert peak == 3, why()
    print(
        f"autoscaling: 1 -> {peak} pods {scaled_up:.0f} s into the load, back to 1 "
        f"{scaled_down:.0f} s after it; {busy.total} + {light.total} requests"
    )
    for stats in (busy, light):
        assert stats.total > 0 and stats.non_2xx == 0 and not stats.errors, explain(
            env, ns, NAME, None, stats
        )
    # The operator never fought the autoscaler over spec.replicas.
    live = env.kubectl("-n", ns, "get", "deployment", f"{NAME}-stable", "-o", "json",
                       "--show-managed-fields").stdout  # fmt: skip
    owners = {
        e["manager"]
        for e in json.loads(live)["metadata"]["managedFields"]
        if "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})
    }
    assert "modelship-operator" not in owners, owners


def test_a_canary_runs_its_traffic_share_of_the_pods_as_its_weight_grows(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    # 3 stable pods; each step's canary is sized for the next step's share, rounded up:
    # 10 % (next 30 %: 0.9 of a pod) -> 1 pod, 30 % (next 60 %: 1.8) -> 2, 60 % -> 2.
    base = deploy(env, ns, "share", v1, v2, spec={"replicas": 3}, steps=[10, 30, 60])
    with Recorder(env, ns, "share") as rec, traffic(base, "share", v1) as stats:
        done = wait_for(env, ns, "share", phase_is("Promoted", "RolledBack"),
                        "the canary to be promoted", 180, rec, stats)  # fmt: skip
    why = explain(env, ns, "share", rec, stats)
    assert done["phase"] == "Promoted", why
    asked = [
        ((status.get("traffic") or {}).get("canary"), (status.get("canary") or {}).get("replicas"))
        for _, status in rec.statuses
        if status.get("phase") == "Progressing" and status.get("canary")
    ]
    by_weight: dict[int, set[int]] = {}
    for weight, replicas in asked:
        if weight is not None and replicas is not None:
            by_weight.setdefault(weight, set()).add(replicas)
    print(f"canary pods asked for, by weight: {dict(sorted(by_weight.items()))}")
    assert by_weight.get(10) == {1}, (by_weight, why)
    assert 2 in by_weight.get(30, set()) | by_weight.get(60, set()), (by_weight, why)
    assert max(max(r) for r in by_weight.values()) == 2, (by_weight, why)  # never all 3
    assert stats.non_2xx == 0 and stats.total > 100, why


def test_promotion_scales_stable_for_the_whole_load_before_the_traffic_moves(
    rollout: Rollout,
) -> None:
    # Under autoscaling stable is sized for its own share. At 50 % the canary runs at least
    # one pod, so the whole load needs at least two: the promotion raises stable's floor to
    # that and moves the traffic only once stable runs the candidate on that many pods.
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    spec = {
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 80},
    }
    base = deploy(env, ns, "floor", v1, v2, spec=spec, steps=[50])
    with Recorder(env, ns, "floor") as rec, traffic(base, "floor", v1, rate=20) as stats:
        done = wait_for(env, ns, "floor", phase_is("Promoted", "RolledBack", "Failed"),
                        "the canary to be promoted", 240, rec, stats)  # fmt: skip
    why = explain(env, ns, "floor", rec, stats)
    assert done["phase"] == "Promoted", why
    statuses = [status for _, status in rec.statuses]
    promoting = [s for s in statuses if s.get("phase") == "Promoting"]
    floors = {(s.get("rollout") or {}).get("stableFloor") for s in promoting} - {None}
    assert floors and min(floors) >= 2, why
    # The traffic stayed at the last step's 50 % while stable scaled...
    assert {(s.get("traffic") or {}).get("canary") for s in promoting} == {50}, why
    # ...and moved once stable ran the candidate on the floor's pods.
    promoted = next((s for s in statuses if s.get("phase") == "Promoted"), done)
    floor = max(floors)
    assert promoted["stable"]["readyReplicas"] >= floor, why
    assert promoted["stable"]["version"] == v2.version, why
    assert stats.total > 0 and stats.non_2xx == 0 and not stats.errors, why
    print(f"promotion floor: stable raised to {floor} pods before the traffic moved "
          f"({len(promoting)} Promoting statuses); {stats.total} requests, 0 lost")  # fmt: skip
