"""Canary rollouts decided from what Prometheus measures, end to end on the local cluster.

The operator runs in its pods as its own ServiceAccount (``operator_harness``); serving and
router pods run the real code; Prometheus scrapes them every 2 s; the client's traffic is
the demo's bounded generator through the router's Service, with ground-truth feedback. The
models are genuinely good, failing or slow (``rollout_harness``): nothing is injected.
Intervals are 5 s and ``minSamples`` small, so each rollout takes well under a minute.
"""

from __future__ import annotations

import time
from typing import Any

from operator_harness import until
from rollout_harness import (
    ROLLOUT_MARKS,
    STEPS,
    Recorder,
    Rollout,
    dashboard_without_data,
    deploy,
    event_count,
    explain,
    kubectl_modelship,
    last_result,
    phase_is,
    reasons,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS

# --- 1. a good canary goes through every step ----------------------------------------------


def test_a_good_canary_is_promoted_through_every_step_with_only_2xx(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    base = deploy(env, ns, "good", v1, v2)
    with Recorder(env, ns, "good") as rec, traffic(base, "good", v1) as stats:
        promoted = wait_for(env, ns, "good", phase_is("Promoted"), "the canary to be promoted",
                            150, rec, stats)  # fmt: skip
        # Traffic is back on stable (now running 2.0.0) at the router; keep the client on
        # a little longer, through the canary's scale-down.
        until_router = time.monotonic() + 20
        while time.monotonic() < until_router and (
            rec.router_canary_weights()[-1:] != [0.0] or rec.canary_weights()[-1:] != [0]
        ):
            time.sleep(0.2)
        time.sleep(3)
    why = explain(env, ns, "good", rec, stats)
    assert stats.non_2xx == 0, why
    assert stats.total > 200, why
    # Every step in turn, in status and at the router, then all traffic back to stable.
    assert [w for w in rec.canary_weights() if w] == STEPS, why
    assert rec.canary_weights()[-1] == 0, why
    assert [w for w in rec.router_canary_weights() if w] == [20.0, 50.0, 80.0], why
    assert rec.router_canary_weights()[-1] == 0.0, why
    assert promoted["rolledOut"]["current"]["version"] == "2.0.0", why
    assert [h["outcome"] for h in promoted["history"]] == ["Promoted"], why
    assert all(a["verdict"] == "Successful" for a in promoted["lastAnalysis"]), why
    said = reasons(env, ns, "good")
    for reason in ("CanaryEntered", "StepAdvanced", "PromotionStarted", "Promoted"):
        assert reason in said, why
    assert event_count(env, ns, "good", "StepAdvanced") == len(STEPS) - 1, why
    assert event_count(env, ns, "good", "PromotionStarted") == 1, why
    # Stable serves the canary's model; clients were answered by both versions on the way.
    assert {v for v, _ in stats.answers} == {"stable", "canary"}, why


# --- 2. a canary failing part of its requests --------------------------------------------------


def test_a_canary_failing_part_of_its_requests_is_rolled_back_at_its_first_step(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, broken = models["wine-1.0.0"], models["wine-2.0.0"]
    # About a quarter of the canary's requests fail, so a window must hold enough of them
    # that none failing is out of the question: at 20 % of 30 rps, a 10 s window over 2 s
    # scrapes sees at least ~32 canary requests when 40 are counted (increase() extrapolates
    # to the window), and 0.73**32 < 1e-4. A 5 s window sees as few as 12 (0.73**12 = 2 %).
    base = deploy(env, ns, "wine", v1, broken, interval="10s", minSamples=40)
    with Recorder(env, ns, "wine") as rec, traffic(base, "wine", v1) as stats:
        status = wait_for(env, ns, "wine", phase_is("RolledBack", "Promoting", "Promoted"),
                          "the failing canary to be rolled back", 120, rec, stats)  # fmt: skip
        weights = rec.router_canary_weights()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            rec.router_canary_weights()[-1:] != [0.0] or rec.canary_weights()[-1:] != [0]
        ):
            time.sleep(0.1)
    why = explain(env, ns, "wine", rec, stats)
    assert status["phase"] == "RolledBack", why
    assert status["step"] == 0 and status["failedChecks"] == 1, why  # at its first step
    assert [w for w in rec.canary_weights() if w] == [STEPS[0]], why
    assert rec.canary_weights()[-1] == 0, why
    assert rec.router_canary_weights()[-1] == 0.0, (weights, why)
    check = last_result(status, "success-rate")
    assert check["verdict"] == "Failed" and check["threshold"] == ">= 99", why
    # The wine rows of the lost class (about a quarter) fail: far below 99 %, not all.
    assert 0 < check["value"] < 95, why
    (entry,) = status["history"]
    assert entry["outcome"] == "RolledBack" and "success-rate = " in entry["reason"], why
    condition = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert "success-rate" in condition["message"], why
    # Only the canary failed clients (and only while it had its step's share).
    failed = {v for (v, code), n in stats.answers.items() if code >= 500}
    assert failed == {"canary"} and not stats.errors, why
    assert "AnalysisFailed" in reasons(env, ns, "wine"), why
    # What a team watches: every panel of the chart's Grafana dashboard has data for this
    # rollout (the split, requests, the canary's 5xx, latency, accuracy from feedback, the
    # analysis verdicts), scraped through the chart's PodMonitors.
    until(lambda: not dashboard_without_data(ns, "wine"), "every dashboard query to have data",
          120, lambda: "no data:\n" + "\n".join(dashboard_without_data(ns, "wine")))  # fmt: skip


# --- 3. a slow canary ------------------------------------------------------------------------


def test_a_slow_canary_is_rolled_back_on_latency(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, slow = models["1.0.0"], models["slow"]
    metrics = [{"name": "success-rate", "min": 99}, {"name": "latency-p99", "max": 0.02}]
    base = deploy(env, ns, "slow", v1, slow, metrics=metrics)
    with Recorder(env, ns, "slow") as rec, traffic(base, "slow", v1, rate=25) as stats:
        status = wait_for(env, ns, "slow", phase_is("RolledBack", "Promoting", "Promoted"),
                          "the slow canary to be rolled back", 120, rec, stats)  # fmt: skip
    why = explain(env, ns, "slow", rec, stats)
    assert status["phase"] == "RolledBack", why
    latency = last_result(status, "latency-p99")
    assert latency["verdict"] == "Failed" and latency["threshold"] == "<= 0.02", why
    assert latency["value"] > 0.02, why
    assert last_result(status, "success-rate")["verdict"] == "Successful", why
    assert "latency-p99" in status["history"][-1]["reason"], why
    assert stats.non_2xx == 0, why  # slow, not failing


# --- 4. no traffic ---------------------------------------------------------------------------


def test_without_traffic_the_analysis_is_inconclusive_and_decides_nothing(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    deploy(env, ns, "idle", v1, v2)
    with Recorder(env, ns, "idle") as rec:
        first = wait_for(env, ns, "idle", lambda s: bool(s.get("lastAnalysis")),
                         "a first analysis", 90, rec)  # fmt: skip
        seen = {first["rollout"]["lastAnalysisTime"]}

        def three_analyses(status: dict[str, Any]) -> bool:
            seen.add((status.get("rollout") or {}).get("lastAnalysisTime"))
            return len(seen) >= 3

        status = wait_for(env, ns, "idle", three_analyses, "three analyses", 60, rec)
    why = explain(env, ns, "idle", rec)
    assert rec.phases() == ["Progressing"], why
    assert status["step"] == 0 and status["traffic"]["canary"] == STEPS[0], why
    assert status["failedChecks"] == 0 and not status.get("history"), why
    for result in status["lastAnalysis"]:
        assert result["verdict"] == "Inconclusive", why
        assert "minSamples" in result["message"], why
    condition = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert condition["status"] == "True" and "inconclusive" in condition["message"], why
    said = reasons(env, ns, "idle")
    assert not {"StepAdvanced", "PromotionStarted", "RolledBack", "AnalysisFailed"} & set(said)


# --- the kubectl plugin steers a rollout through the operator ---------------------------------


def test_the_kubectl_plugin_pauses_resumes_aborts_retries_and_promotes(
    rollout: Rollout,
    local_cluster: Any,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    deploy(env, ns, "steer", v1, v2)  # no traffic: the analysis alone would never decide

    def run(*args: str) -> str:
        return kubectl_modelship(local_cluster, ns, *args, "steer")

    with Recorder(env, ns, "steer") as rec:
        wait_for(env, ns, "steer", lambda s: (s.get("traffic") or {}).get("canary") == 20,
                 "the canary to enter", 60, rec)  # fmt: skip
        run("pause")
        paused = wait_for(env, ns, "steer", phase_is("Paused"), "paused", 30, rec)
        assert paused["rollout"]["pauseReason"] == "paused by spec.paused"
        assert paused["traffic"]["canary"] == 20
        run("resume")
        wait_for(env, ns, "steer", phase_is("Progressing"), "resumed", 30, rec)
        run("abort")
        aborted = wait_for(env, ns, "steer", phase_is("RolledBack"), "aborted", 30, rec)
        assert aborted["history"][-1]["outcome"] == "Aborted"
        assert aborted["traffic"]["canary"] == 0
        run("retry")
        wait_for(env, ns, "steer", lambda s: s.get("phase") == "Progressing"
                 and (s.get("traffic") or {}).get("canary") == 20, "retried", 60, rec)  # fmt: skip
        run("promote")
        promoted = wait_for(env, ns, "steer", phase_is("Promoted"), "promoted", 90, rec)
        shown = run("status")
    why = explain(env, ns, "steer", rec)
    assert [h["outcome"] for h in promoted["history"]] == ["Aborted", "Promoted"], why
    assert promoted["rolledOut"]["current"]["version"] == "2.0.0", why
    assert "Promoted" in shown, shown
    order = [p for p in rec.phases() if p in ("Paused", "RolledBack", "Promoted")]
    assert order == ["Paused", "RolledBack", "Promoted"], why
    said = reasons(env, ns, "steer")
    assert {"Aborted", "RolloutRetried", "PromotionStarted"} <= set(said), why
