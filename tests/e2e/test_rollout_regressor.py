"""A regressor rolled back on its error against the true values, end to end.

2.0.0 answers every request, as fast as 1.0.0: only the root mean squared error of its
predictions against the true values the client posts back (feedback) gives it away.
"""

from __future__ import annotations

from rollout_harness import (
    ROLLOUT_MARKS,
    Recorder,
    Rollout,
    deploy,
    explain,
    last_result,
    phase_is,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS


def test_a_regressor_worse_on_rmse_is_rolled_back(rollout: Rollout) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["diabetes-1.0.0"], models["diabetes-2.0.0"]
    checks = [
        {"name": "success-rate", "min": 99},
        {"name": "latency-p99", "max": 0.25},
        {"name": "rmse", "compareTo": "stable", "margin": {"relative": 0.25}},
    ]
    base = deploy(env, ns, "sugar", v1, v2, metrics=checks)
    with Recorder(env, ns, "sugar") as rec, traffic(base, "sugar", v1) as stats:
        done = wait_for(env, ns, "sugar", phase_is("RolledBack", "Promoting", "Promoted"),
                        "the regressor's rollout to be decided", 180, rec, stats)  # fmt: skip
    why = explain(env, ns, "sugar", rec, stats)
    assert done["phase"] == "RolledBack", why
    rmse = last_result(done, "rmse")
    assert rmse["verdict"] == "Failed", why
    # Measured over the same window as stable's (a few dozen rows at the first step, so the
    # values themselves vary from run to run): worse than stable's by more than the margin.
    assert rmse["value"] > 1.25 * rmse["stableValue"] > 0, why
    print(f"rolled back on rmse: canary {rmse['value']:.1f}, stable {rmse['stableValue']:.1f}")
    (entry,) = done["history"]
    assert entry["outcome"] == "RolledBack" and "rmse" in entry["reason"], why
    for check in ("success-rate", "latency-p99"):
        assert last_result(done, check)["verdict"] == "Successful", why
    assert stats.non_2xx == 0 and stats.feedback_sent > 0, why
