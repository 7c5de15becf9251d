"""Ground truth joins its prediction with several serving replicas per variant, end to end.

Predictions are remembered in the memory of the pod that served them; the router names
that pod in ``x-modelship-replica`` and sends feedback carrying it back to the same pod.
The demo's traffic sends each prediction's true label with the variant and replica
headers of its answer, and counts what the server joined.
"""

from __future__ import annotations

import time

from rollout_harness import ROLLOUT_MARKS, Recorder, Rollout, deploy, explain, traffic, wait_for

pytestmark = ROLLOUT_MARKS

REPLICAS = 3
# At 70 % the canary runs its share of the replicas, rounded up (docs/operator.md, "How
# many serving pods"): 3 of 3, so each variant spreads its answers over 3 pods.
WEIGHT = 70
PODS = {"stable": REPLICAS, "canary": 3}


def test_feedback_is_joined_with_several_replicas_per_variant(rollout: Rollout) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    spec = {"replicas": REPLICAS, "feedback": {"window": "10m"}}
    # One step held for manual promotion: both variants serve throughout.
    base = deploy(env, ns, "join", v1, v2, spec=spec, steps=[WEIGHT], promotion="Manual",
                  progressDeadline="10m")  # fmt: skip
    with Recorder(env, ns, "join") as rec:
        wait_for(env, ns, "join", lambda s: (s.get("traffic") or {}).get("canary") == WEIGHT,
                 f"the canary to take {WEIGHT} %", 180, rec)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and float(WEIGHT) not in rec.router_canary_weights():
            time.sleep(0.2)
        for variant in ("stable", "canary"):
            selector = f"modelship.io/deployment=join,modelship.io/variant={variant}"
            until_ready = time.monotonic() + 120
            ready: list[object] = []
            while time.monotonic() < until_ready:
                pods = env.pods(ns, selector)
                ready = [
                    p
                    for p in pods
                    if any(
                        c.type == "Ready" and c.status == "True" for c in p.status.conditions or []
                    )
                ]
                if len(ready) == PODS[variant]:
                    break
                time.sleep(1)
            assert len(ready) == PODS[variant], explain(env, ns, "join", rec)
        with traffic(base, "join", v1, rate=20, seconds=45) as stats:
            time.sleep(45)
    why = explain(env, ns, "join", rec, stats)
    share = stats.feedback_joined / max(stats.feedback_sent, 1)
    print(
        f"feedback joined with {PODS} replicas: "
        f"{stats.feedback_joined}/{stats.feedback_sent} ({share:.2%})"
    )
    assert stats.feedback_sent > 300, why
    assert {v for v, _ in stats.answers} == {"stable", "canary"}, why
    assert share >= 0.99, why
