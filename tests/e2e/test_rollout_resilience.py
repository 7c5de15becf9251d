"""A rollout survives its metrics source going away.

Prometheus is scaled to zero and back through its Prometheus resource, as a Prometheus
Operator user would see an outage (nothing else is touched): the rollout pauses, holds its
weights, and resumes where it was. The operator SIGKILLed mid-rollout (10 times), and the
other faults, are in test_chaos.py.
"""

from __future__ import annotations

import time

from operator_harness import set_prometheus_replicas
from rollout_harness import (
    ROLLOUT_MARKS,
    STEPS,
    Recorder,
    Rollout,
    deploy,
    explain,
    phase_is,
    reasons,
    steps_never_go_back,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS


# --- 5. Prometheus stopped and started again ------------------------------------------------


def test_prometheus_down_pauses_the_rollout_and_its_return_resumes_it(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    base = deploy(env, ns, "outage", v1, v2, maxConsecutiveErrors=2)
    with Recorder(env, ns, "outage") as rec, traffic(base, "outage", v1, seconds=300) as stats:
        wait_for(env, ns, "outage", lambda s: s.get("step") == 1, "a first step passed on "
                 "Prometheus' numbers", 120, rec, stats)  # fmt: skip
        set_prometheus_replicas(env, 0)
        try:
            paused = wait_for(env, ns, "outage", phase_is("Paused", "Promoting", "Promoted"),
                              "the rollout to pause", 60, rec, stats)  # fmt: skip
            held_at = (paused["step"], paused["traffic"]["canary"])
            # Paused, not rolled back: weights stay where they were while errors repeat.
            time.sleep(8)
            still = env.md(ns, "outage")["status"]  # type: ignore[index]
        finally:
            set_prometheus_replicas(env, 1)
        resumed = wait_for(env, ns, "outage", phase_is("Promoted", "RolledBack", "Failed"),
                           "the rollout to resume and finish", 150, rec, stats)  # fmt: skip
    why = explain(env, ns, "outage", rec, stats)
    assert paused["phase"] == "Paused", why
    reason = paused["rollout"]["pauseReason"]
    assert reason.startswith("paused: the analysis could not run"), why
    assert "unreachable" in reason or "timeout" in reason, why
    errors = [a for a in paused["lastAnalysis"] if a["verdict"] == "Error"]
    assert errors and paused["consecutiveErrors"] >= 2, why
    assert still["phase"] == "Paused" and (still["step"], still["traffic"]["canary"]) == held_at
    assert still["failedChecks"] == 0, why
    # Back: resumed where it was, finished normally, no client saw an error.
    assert resumed["phase"] == "Promoted", why
    assert "AnalysisRecovered" in reasons(env, ns, "outage"), why
    assert [w for w in rec.canary_weights() if w] == STEPS, why
    assert steps_never_go_back(rec), why
    assert stats.non_2xx == 0, why
