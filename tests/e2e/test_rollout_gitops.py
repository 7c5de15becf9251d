"""A whole GitOps history applied as manifests, the way Argo CD or Flux applies a repository:
each commit's manifest is applied (and some applied again), and each state is checked. The
operator never writes spec; promotion needs no manual finish; a rejected model stays
rejected while it stays in git; the next version rolls out from what serves.

v1 (1.0.0) is deployed directly; v2 (2.0.0, better) is promoted; v2 re-applied changes
nothing; v3 (3.0.0, wrong on large tumours) is rolled back on accuracy measured against
ground truth; v3 re-applied changes nothing; v4 (2.0.0's artifact as 4.0.0) is promoted
from 2.0.0.
"""

from __future__ import annotations

import time
from typing import Any

from rollout_harness import (
    ROLLOUT_MARKS,
    Recorder,
    Rollout,
    deploy,
    event_count,
    explain,
    model_deployment,
    phase_is,
    serving,
    strategy,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS

NAME = "gitops"
#: Long enough for the operator to act on a re-applied manifest (an analysis interval).
SETTLE = 6
# 3.0.0 is about 40 points worse than stable on accuracy; the margin leaves room for the
# sampling noise of a few dozen labelled answers per window (4.0.0 is 2.0.0's artifact).
METRICS = [
    {"name": "success-rate", "min": 99},
    {"name": "accuracy", "compareTo": "stable", "margin": {"absolute": 10}},
]


def promoted_to(version: str) -> Any:
    return lambda status: status.get("phase") == "Promoted" and serving(status, version)


def test_a_gitops_history_converges_at_every_commit(rollout: Rollout) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2, v3 = models["1.0.0"], models["2.0.0"], models["3.0.0"]
    rules = strategy(metrics=METRICS, minSamples=20, maxFailedChecks=2)

    def commit(model: dict[str, Any]) -> None:
        env.apply(ns, model_deployment(NAME, model, rules))

    def spec() -> dict[str, Any]:
        body = env.md(ns, NAME)
        assert body is not None
        return {"spec": body["spec"], "generation": body["metadata"]["generation"]}

    # v1: the first apply deploys it directly.
    base = deploy(env, ns, NAME, v1, None, metrics=METRICS, minSamples=20, maxFailedChecks=2)
    first = wait_for(env, ns, NAME, lambda s: serving(s, "1.0.0"), "1.0.0 to serve", 60)
    assert first["phase"] == "Idle" and not first.get("history"), first
    with Recorder(env, ns, NAME) as rec, traffic(base, NAME, v1, seconds=420) as stats:
        # v2: rolled out and promoted by itself; stable then serves it and spec says it.
        commit(v2.ref())
        wrote = spec()
        promoted = wait_for(env, ns, NAME, promoted_to("2.0.0"), "2.0.0 promoted", 180, rec, stats)
        assert spec() == wrote, "the operator wrote spec"
        history = [h["outcome"] for h in promoted["history"]]
        assert history == ["Promoted"], explain(env, ns, NAME, rec, stats)
        entered = event_count(env, ns, NAME, "CanaryEntered")

        # v2 again: nothing restarts, nothing reverts.
        commit(v2.ref())
        time.sleep(SETTLE)
        again = wait_for(env, ns, NAME, phase_is("Promoted"), "still Promoted", 10)
        assert serving(again, "2.0.0") and again["history"] == promoted["history"], again
        assert event_count(env, ns, NAME, "CanaryEntered") == entered

        # v3: rejected on accuracy against ground truth; 2.0.0 keeps serving.
        commit(v3.ref())
        rejected = wait_for(env, ns, NAME, lambda s: s.get("phase") == "RolledBack" or (
                            s.get("phase") == "Promoted" and serving(s, "3.0.0")),
                            "3.0.0 to be rejected", 180, rec, stats)  # fmt: skip
        why = explain(env, ns, NAME, rec, stats)
        assert rejected["phase"] == "RolledBack", why
        assert serving(rejected, "2.0.0"), why
        assert rejected["history"][-1]["version"] == "3.0.0", why
        assert "accuracy" in rejected["history"][-1]["reason"], why
        progressing = next(c for c in rejected["conditions"] if c["type"] == "Progressing")
        assert "3.0.0 was rejected" in progressing["message"], why
        entered = event_count(env, ns, NAME, "CanaryEntered")

        # v3 again (the manifest is still in git): it stays rejected, 2.0.0 serves.
        commit(v3.ref())
        time.sleep(SETTLE)
        held = wait_for(env, ns, NAME, phase_is("RolledBack"), "still RolledBack", 10)
        assert serving(held, "2.0.0") and held["history"] == rejected["history"], held
        assert held["rollout"]["key"] == rejected["rollout"]["key"], held
        assert event_count(env, ns, NAME, "CanaryEntered") == entered

        # v4: rolled out from 2.0.0 (what serves, not the rejected 3.0.0) and promoted.
        commit(v2.ref("4.0.0"))
        final = wait_for(env, ns, NAME, promoted_to("4.0.0"), "4.0.0 promoted", 180, rec, stats)
        why = explain(env, ns, NAME, rec, stats)
        assert final["rolledOut"]["previous"]["version"] == "2.0.0", why
        outcomes = [(h["version"], h["outcome"]) for h in final["history"]]
        assert outcomes == [("2.0.0", "Promoted"), ("3.0.0", "RolledBack"),
                            ("4.0.0", "Promoted")], why  # fmt: skip
    assert stats.non_2xx == 0, explain(env, ns, NAME, rec, stats)
