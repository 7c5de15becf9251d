"""A rollout survives its metrics source going away and its operator being killed.

Prometheus is scaled to zero and back through its Prometheus resource, as a Prometheus
Operator user would see an outage (nothing else is touched); the operator is SIGKILLed in
its pod, as a crash or an OOM kill would. Every decision is in the resource's status, so
neither loses or repeats a step.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from operator_harness import set_prometheus_replicas, until
from rollout_harness import (
    ROLLOUT_MARKS,
    STEPS,
    Recorder,
    Rollout,
    deploy,
    event_count,
    explain,
    phase_is,
    reasons,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS


def every_transition_evented_once(env: Any, ns: str, name: str) -> str:
    """What is wrong with the Events of the transitions ``status.transitions`` records ("" if
    nothing): each must have exactly one Event, named ``<name>.<uid[:8]>.<seq>``, with its
    reason, and ``lastEventedTransition`` must have reached the newest."""
    body = env.md(ns, name)
    status, uid = body["status"], body["metadata"]["uid"]
    transitions = status.get("transitions") or []
    if not transitions:
        return "no transitions recorded"
    if status.get("lastEventedTransition") != transitions[-1]["seq"]:
        return f"lastEventedTransition {status.get('lastEventedTransition')} behind {transitions}"
    ours = {e.metadata.name: e for e in env.events(ns, name)
            if e.source.component == "modelship-operator"}  # fmt: skip
    for t in transitions:
        event = ours.get(f"{name}.{uid[:8]}.{t['seq']}")
        if event is None:
            return f"no Event for transition {t}"
        if event.reason != t["reason"] or (event.count or 1) != 1:
            return f"Event {event.metadata.name}: {event.reason} x{event.count} for {t}"
    return ""


def steps_never_go_back(rec: Recorder) -> bool:
    """Recorded steps only ever increase within the rollout (no restart, no replay)."""
    steps = [s.get("step") for _, s in rec.statuses if s.get("step") is not None]
    return all(a <= b for a, b in itertools.pairwise(steps))


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


# --- 6. the operator killed mid-rollout -------------------------------------------------------


def test_an_operator_killed_mid_rollout_resumes_at_the_same_step_and_promotes_once(
    rollout: Rollout,
) -> None:
    env, models, ns, operator = rollout.env, rollout.models, rollout.ns, rollout.operator
    v1, v2 = models["1.0.0"], models["2.0.0"]
    base = deploy(env, ns, "crash", v1, v2)
    stable_generation = env.apps.read_namespaced_deployment("crash-stable", ns).metadata.generation
    with Recorder(env, ns, "crash") as rec, traffic(base, "crash", v1) as stats:
        at_step = wait_for(env, ns, "crash", lambda s: s.get("step") == 1, "the first step "
                           "to pass", 120, rec, stats)  # fmt: skip
        leader = operator.leader()
        assert leader is not None, operator.describe()
        restarts = operator.restarts(leader)
        operator.kill(leader)
        killed_at = time.monotonic()

        def acting_again() -> bool:
            now = operator.leader()
            return now is not None and (now != leader or operator.restarts(leader) > restarts)

        until(acting_again, "an operator to act again", 90, operator.describe)
        # The restarted operator reads the step from status: it neither restarts the
        # rollout nor replays the step it was at.
        after = env.md(ns, "crash")["status"]  # type: ignore[index]
        assert after["rollout"]["startedAt"] == at_step["rollout"]["startedAt"]
        assert after["step"] >= 1, explain(env, ns, "crash", rec, stats)
        done = wait_for(env, ns, "crash", phase_is("Promoted", "RolledBack", "Failed"),
                        "the rollout to finish", 150, rec, stats)  # fmt: skip
    why = explain(env, ns, "crash", rec, stats) + f"\n(killed {leader} at {killed_at:.1f})"
    assert done["phase"] == "Promoted", why
    assert [w for w in rec.canary_weights() if w] == STEPS, why
    assert steps_never_go_back(rec), why
    starts = {(s.get("rollout") or {}).get("startedAt") for _, s in rec.statuses}
    assert starts - {None} == {at_step["rollout"]["startedAt"]}, why
    # Promoted once: one Event, one history entry, and the stable Deployment's template
    # changed exactly once (to the canary's model).
    assert event_count(env, ns, "crash", "PromotionStarted") == 1, why
    assert event_count(env, ns, "crash", "StepAdvanced") == len(STEPS) - 1, why
    # Every transition the status shows has its Event, once, even the one decided just
    # before the kill (recorded in status, posted by the next operator).
    until(lambda: not every_transition_evented_once(env, ns, "crash"),
          "the Event of every recorded transition", 30,
          lambda: every_transition_evented_once(env, ns, "crash") + "\n" + why)  # fmt: skip
    recorded = [t["reason"] for t in env.md(ns, "crash")["status"]["transitions"]]
    assert recorded.count("StepAdvanced") == len(STEPS) - 1, why
    assert recorded.count("PromotionStarted") == 1, why
    assert [h["outcome"] for h in done["history"]] == ["Promoted"], why
    generation = env.apps.read_namespaced_deployment("crash-stable", ns).metadata.generation
    assert generation == stable_generation + 1, why
    assert stats.non_2xx == 0, why
