"""The reconcile plan, driven through the life of a ModelDeployment.

The cluster is represented by data: ``listed()`` turns the objects a plan applied into what
the API would list back (Deployments with the status their controller would report).
That is the only stand-in; everything under test is the real planning code.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mdep_fixtures import ACCESS, SHA_CANARY, base_resource, rolling_out
from modelship_operator.conditions import Failure
from modelship_operator.events import recorded_since
from modelship_operator.kinds import ChildRef
from modelship_operator.observed import Observed, observe
from modelship_operator.reconcile import (
    Plan,
    describe_invalid,
    next_router_generation,
    plan,
    plan_invalid,
    settle,
    status_patch,
)
from modelship_operator.rollout import PAUSED_BY_USER
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ABTestStatus, ABVariantStats, ConditionType
from modelship_router.config import RoutingConfig
from pydantic import ValidationError

T0 = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(serving_image="modelship/serving:1", router_image="modelship/router:1")
CANARY = {"version": "1.5.0", "uri": "file:///models/churn-1.5.0.skops", "sha256": SHA_CANARY}


def listed(
    objects: tuple[dict[str, Any], ...], ready: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """Objects as the API lists them after apply; Deployments report their pods' state.

    ``ready`` maps Deployment name to ready pods (default: all of them, fully rolled out).
    """
    out = []
    for obj in objects:
        item = copy.deepcopy(obj)
        if item["kind"] == "Deployment":
            want = item["spec"].get("replicas", 1)  # the API's default (an autoscaler's)
            count = want if ready is None else ready.get(item["metadata"]["name"], want)
            item["metadata"]["generation"] = 1
            item["status"] = {
                "observedGeneration": 1,
                "replicas": want,
                "readyReplicas": count,
                "updatedReplicas": want,
                "availableReplicas": count,
            }
        out.append(item)
    return out


def md(
    status: Any = None, generation: int = 1, canary: dict[str, Any] | None = None, **spec: Any
) -> ModelDeployment:
    """A resource; ``canary``: spec.model is that model while 1.4.0 serves (recorded in
    status.rolledOut.current unless ``status`` records another serving model)."""
    body = base_resource(**spec)
    body["metadata"]["generation"] = generation
    if status is not None:
        body["status"] = status.to_api() if hasattr(status, "to_api") else status
    if canary is not None:
        rolling_out(body, canary)
    return ModelDeployment.from_api(body)


def cluster(p: Plan, ready: dict[str, int] | None = None) -> Observed:
    return observe(listed(p.apply, ready), routing_configmap="churn-router")


def deployment(p: Plan, name: str) -> dict[str, Any]:
    return next(o for o in p.apply if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def env(p: Plan, name: str) -> dict[str, str]:
    (container,) = deployment(p, name)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def routing(p: Plan) -> RoutingConfig:
    cm = next(o for o in p.apply if o["kind"] == "ConfigMap")
    return RoutingConfig.from_json(cm["data"]["routing.json"])


def cond(p: Plan, kind: ConditionType) -> tuple[str, str]:
    c = p.status.condition(kind)
    assert c is not None
    return c.status, c.reason


def message(p: Plan, kind: ConditionType) -> str:
    c = p.status.condition(kind)
    assert c is not None
    return str(c.message)


def reasons(p: Plan) -> list[str]:
    return [e.reason for e in p.events]


def converge(resource: ModelDeployment, rounds: int = 3, **kw: Any) -> Plan:
    """Plan, let the cluster apply it, feed status back; ``rounds`` times."""
    observed = Observed()
    p = plan(resource, observed, SETTINGS, T0)
    for _ in range(rounds):
        body = base_resource()
        body["metadata"] = resource.metadata.to_api()
        body["spec"] = resource.spec.to_api()
        body["status"] = p.status.to_api()
        resource = ModelDeployment.from_api(body)
        p = plan(resource, cluster(p, **kw), SETTINGS, T0)
    return p


# --- a stable model -------------------------------------------------------------------------


def test_first_reconcile_creates_everything_and_reports_pending() -> None:
    p = plan(md(), Observed(), SETTINGS, T0)
    assert {(o["kind"], o["metadata"]["name"]) for o in p.apply} >= {
        ("Deployment", "churn-stable"),
        ("Service", "churn-stable"),
        ("Deployment", "churn-router"),
        ("ConfigMap", "churn-router"),
    }
    assert p.delete == ()
    assert p.status.phase == "Idle"
    assert p.status.observed_generation == 1
    assert cond(p, "Ready") == ("False", "Pending")
    assert cond(p, "Degraded") == ("False", "AsExpected")
    assert p.status.router_config_generation == 1
    assert p.status.traffic is not None and p.status.traffic.stable == 100
    assert reasons(p) == ["Idle"]


def test_converged_state_is_ready_and_stable_under_repetition() -> None:
    p = converge(md())
    assert cond(p, "Ready") == ("True", "Available")
    assert cond(p, "Progressing") == ("False", "Idle")
    assert p.status.stable is not None and p.status.stable.version == "1.4.0"
    assert p.status.stable.ready_replicas == 1
    assert p.status.rolled_out is not None and p.status.rolled_out.current is not None
    assert p.status.rolled_out.current.version == "1.4.0"
    again = converge(md(), rounds=5)
    assert again.apply == p.apply
    assert again.status == p.status
    assert again.events == ()
    assert again.status.router_config_generation == 1


def test_same_plan_whenever_it_is_run_again_after_a_crash() -> None:
    resource = md(canary=CANARY, replicas=2)
    observed = cluster(plan(resource, Observed(), SETTINGS, T0))
    first = plan(resource, observed, SETTINGS, T0)
    assert plan(resource, observed, SETTINGS, T0) == first


def test_before_anything_serves_a_changed_model_goes_straight_to_stable() -> None:
    first = plan(md(), Observed(), SETTINGS, T0)  # 1.4.0 applied; no pod ready yet
    fixed = {"version": "1.4.1", "uri": "file:///models/churn-1.4.1.skops", "sha256": "c" * 64}
    changed = md(status=first.status, generation=2, model=fixed)
    during = plan(changed, cluster(first, ready={"churn-stable": 0}), SETTINGS, T0)
    assert env(during, "churn-stable")["MODELSHIP_MODEL_VERSION"] == "1.4.1"
    assert during.status.phase == "Idle" and during.status.rollout is None
    assert not any(o["metadata"]["name"] == "churn-canary" for o in during.apply)
    after = plan(md(status=during.status, generation=2, model=fixed), cluster(during), SETTINGS, T0)
    assert after.status.rolled_out is not None and after.status.rolled_out.current is not None
    assert after.status.rolled_out.current.version == "1.4.1"
    assert cond(after, "Progressing") == ("False", "Idle")


def test_a_new_model_rolls_out_from_the_serving_one() -> None:
    served = converge(md())
    assert served.status.rolled_out is not None and served.status.rolled_out.current is not None
    assert served.status.rolled_out.current.version == "1.4.0"
    new = md(status=served.status, generation=2, model={**CANARY})
    p = plan(new, cluster(served), SETTINGS, T0)
    assert p.status.phase == "Progressing"
    assert env(p, "churn-stable")["MODELSHIP_MODEL_VERSION"] == "1.4.0"  # stable keeps serving
    assert env(p, "churn-canary")["MODELSHIP_MODEL_VERSION"] == "1.5.0"
    assert p.status.rollout is not None and p.status.rollout.candidate is not None
    assert p.status.rollout.candidate.version == "1.5.0"


# --- a canary -------------------------------------------------------------------------------


def test_canary_waits_for_a_ready_pod_then_enters_at_the_first_step() -> None:
    p = converge(md())
    with_canary = md(status=p.status, generation=2, canary=CANARY)
    waiting = plan(with_canary, cluster(p), SETTINGS, T0)
    assert waiting.status.phase == "Progressing"
    assert waiting.status.step == 0
    assert routing(waiting).weights() == {"stable": 100.0, "canary": 0.0}
    assert "waiting for a ready pod" in message(waiting, "Progressing")
    assert "RolloutProgressing" in reasons(waiting)
    assert env(waiting, "churn-canary")["MODELSHIP_VARIANT"] == "canary"
    # A canary that never gets ready changes nothing: look again at progressDeadline (10m).
    assert waiting.requeue_after == pytest.approx(600)

    live = plan(
        md(status=waiting.status, generation=2, canary=CANARY), cluster(waiting), SETTINGS, T0
    )
    assert routing(live).weights() == {"stable": 90.0, "canary": 10.0}
    assert live.status.traffic is not None and live.status.traffic.canary == 10
    assert live.status.canary is not None and live.status.canary.version == "1.5.0"
    assert waiting.status.router_config_generation is not None
    assert live.status.router_config_generation == waiting.status.router_config_generation + 1
    assert cond(live, "Progressing") == ("True", "CanaryRollout")


@pytest.mark.parametrize(
    ("strategy", "stable", "canary", "mirror"),
    [
        ({"type": "Canary", "steps": [5, 50]}, 95, 5, 0),
        ({"type": "ABTest", "abTest": {"split": 30}}, 70, 30, 0),
        ({"type": "Shadow", "shadow": {"mirrorPercent": 25}}, 100, 0, 25),
    ],
)
def test_entry_traffic_per_strategy(
    strategy: dict[str, Any], stable: int, canary: int, mirror: int
) -> None:
    p = converge(md(canary=CANARY, strategy=strategy, access=ACCESS))
    assert p.status.traffic is not None
    assert (p.status.traffic.stable, p.status.traffic.canary, p.status.traffic.mirror) == (
        stable,
        canary,
        mirror,
    )


def test_pause_and_resume_by_the_user() -> None:
    running = converge(md(canary=CANARY))
    paused = plan(md(status=running.status, canary=CANARY, paused=True), Observed(), SETTINGS, T0)
    assert paused.status.phase == "Paused"
    assert paused.status.rollout is not None
    assert paused.status.rollout.pause_reason == PAUSED_BY_USER
    assert paused.status.traffic == running.status.traffic  # traffic held where it was
    assert "RolloutPaused" in reasons(paused)
    resumed = plan(md(status=paused.status, canary=CANARY), Observed(), SETTINGS, T0)
    assert resumed.status.phase == "Progressing"
    assert resumed.status.rollout is not None and resumed.status.rollout.pause_reason is None


def test_a_pause_for_errors_is_not_lifted_by_the_user_flag() -> None:
    running = converge(md(canary=CANARY))
    assert running.status.rollout is not None
    engine_paused = running.status.model_copy(
        update={
            "phase": "Paused",
            "rollout": running.status.rollout.model_copy(
                update={"pause_reason": "4 analyses in a row failed: Prometheus unreachable"}
            ),
        }
    )
    p = plan(md(status=engine_paused, canary=CANARY), Observed(), SETTINGS, T0)
    assert p.status.phase == "Paused"


def test_promotion_rolls_stable_to_the_candidate_then_completes_by_itself() -> None:
    running = converge(md(canary=CANARY, replicas=2))
    promoting_status = running.status.model_copy(update={"phase": "Promoting"})
    promoting = plan(
        md(status=promoting_status, canary=CANARY, replicas=2), cluster(running), SETTINGS, T0
    )
    assert promoting.status.phase == "Promoting"
    assert env(promoting, "churn-stable")["MODELSHIP_MODEL_VERSION"] == "1.5.0"
    assert env(promoting, "churn-stable")["MODELSHIP_MODEL_SHA256"] == SHA_CANARY
    # Traffic stays where the last step left it while stable rolls.
    assert promoting.status.traffic == running.status.traffic

    done = plan(
        md(status=promoting.status, canary=CANARY, replicas=2), cluster(promoting), SETTINGS, T0
    )
    assert done.status.phase == "Promoted"
    assert routing(done).weights() == {"stable": 100.0, "canary": 0.0}
    assert [h.outcome for h in done.status.history] == ["Promoted"]
    assert "Promoted" in reasons(done)
    assert message(done, "Progressing") == "stable serves 1.5.0"
    # What serves is recorded: the spec (1.5.0) is now simply what runs, nothing to edit.
    assert done.status.rolled_out is not None and done.status.rolled_out.current is not None
    assert done.status.rolled_out.current.version == "1.5.0"
    assert done.status.rolled_out.previous is not None
    assert done.status.rolled_out.previous.version == "1.4.0"
    # The canary keeps the pods it runs (its 10 % share of 2: one) for scaleDownDelay
    # (30s), then its objects go.
    assert deployment(promoting, "churn-canary")["spec"]["replicas"] == 1
    assert deployment(done, "churn-canary")["spec"]["replicas"] == 1
    assert done.requeue_after == pytest.approx(30)
    same_manifest = md(status=done.status, canary=CANARY, replicas=2)
    during_delay = plan(same_manifest, cluster(done), SETTINGS, T0 + timedelta(seconds=10))
    assert during_delay.status.phase == "Promoted"
    assert deployment(during_delay, "churn-canary")["spec"]["replicas"] == 1
    later = plan(
        md(status=during_delay.status, canary=CANARY, replicas=2),
        cluster(during_delay),
        SETTINGS,
        T0 + timedelta(seconds=31),
    )
    assert later.status.phase == "Promoted"
    assert env(later, "churn-stable")["MODELSHIP_MODEL_VERSION"] == "1.5.0"
    assert later.events == ()
    assert set(later.delete) == {
        ChildRef("apps/v1", "Deployment", "churn-canary"),
        ChildRef("v1", "Service", "churn-canary"),
    }
    assert later.status.canary is None


def test_a_rejected_model_stays_rejected_while_it_is_desired() -> None:
    running = converge(md(canary=CANARY))
    assert running.status.rollout is not None
    rolled_back = running.status.model_copy(
        update={
            "phase": "RolledBack",
            "rollout": running.status.rollout.model_copy(update={"finished_at": T0}),
        }
    )
    p = plan(md(status=rolled_back, canary=CANARY), cluster(running), SETTINGS, T0)
    assert routing(p).weights() == {"stable": 100.0, "canary": 0.0}
    assert env(p, "churn-stable")["MODELSHIP_MODEL_VERSION"] == "1.4.0"
    assert deployment(p, "churn-canary")["spec"]["replicas"] == 1
    assert "1.5.0 was rejected" in message(p, "Progressing")
    late = plan(md(status=p.status, canary=CANARY), cluster(p), SETTINGS, T0 + timedelta(minutes=1))
    assert ChildRef("apps/v1", "Deployment", "churn-canary") in late.delete
    assert late.status.phase == "RolledBack"
    # The same manifest applied again, and a strategy edit alone: nothing restarts.
    again = plan(md(status=late.status, canary=CANARY), cluster(late), SETTINGS, T0)
    assert again.status.phase == "RolledBack" and again.status.rollout == late.status.rollout
    edited = md(status=late.status, canary=CANARY, strategy={"steps": [5, 50]})
    assert plan(edited, cluster(late), SETTINGS, T0).status.phase == "RolledBack"
    # A new model starts a new rollout.
    newer = {**CANARY, "version": "1.6.0", "sha256": "d" * 64}
    fresh = plan(md(status=late.status, canary=newer), cluster(late), SETTINGS, T0)
    assert fresh.status.phase == "Progressing"


def test_a_new_canary_version_restarts_the_rollout() -> None:
    running = converge(md(canary=CANARY, strategy={"steps": [20, 60]}))
    running_status = running.status.model_copy(update={"step": 1})
    newer = {**CANARY, "version": "1.6.0", "sha256": "d" * 64}
    p = plan(
        md(status=running_status, canary=newer, strategy={"steps": [20, 60]}),
        cluster(running, ready={"churn-canary": 0}),
        SETTINGS,
        T0,
    )
    assert p.status.phase == "Progressing"
    assert p.status.step == 0
    assert p.status.traffic is not None and p.status.traffic.canary == 0
    assert [(h.version, h.outcome) for h in p.status.history] == [("1.5.0", "Superseded")]
    assert p.status.rollout is not None and p.status.rollout.candidate is not None
    assert p.status.rollout.candidate.version == "1.6.0"


def test_ab_test_results_belong_to_their_rollout() -> None:
    strategy = {"type": "ABTest"}
    running = converge(md(canary=CANARY, strategy=strategy, access=ACCESS))
    scored = running.status.model_copy(
        update={
            "ab_test": ABTestStatus(canary=ABVariantStats(successes=90, trials=100), p_value=0.2)
        }
    )
    kept = plan(md(status=scored.to_api(), canary=CANARY, strategy=strategy, access=ACCESS),
                Observed(), SETTINGS, T0)  # fmt: skip
    assert kept.status.ab_test is not None and kept.status.ab_test.p_value == 0.2
    newer = {**CANARY, "version": "1.6.0"}
    reset = plan(md(status=scored.to_api(), canary=newer, strategy=strategy, access=ACCESS),
                 Observed(), SETTINGS, T0)  # fmt: skip
    assert reset.status.ab_test is None


def test_going_back_to_the_serving_model_mid_rollout_aborts_it_and_prunes_it() -> None:
    running = converge(md(canary=CANARY))
    reverted = md(status=running.status)  # spec.model is 1.4.0 again (a reverted commit)
    p = plan(reverted, cluster(running), SETTINGS, T0)
    assert p.status.phase == "Idle"
    assert [h.outcome for h in p.status.history] == ["Aborted"]
    assert "Aborted" in reasons(p)
    assert routing(p).weights() == {"stable": 100.0, "canary": 0.0}
    assert deployment(p, "churn-canary")["spec"]["replicas"] == 1  # until scaleDownDelay
    gone = plan(md(status=p.status), cluster(p), SETTINGS, T0 + timedelta(minutes=1))
    assert ChildRef("apps/v1", "Deployment", "churn-canary") in gone.delete
    assert routing(gone).weights() == {"stable": 100.0}
    assert gone.status.rollout is None and gone.status.step is None


# --- errors ---------------------------------------------------------------------------------


def test_failed_api_calls_make_it_degraded_with_the_same_decisions() -> None:
    resource = md()
    ok = plan(resource, Observed(), SETTINGS, T0)
    failures = [Failure("ApplyFailed", "Deployment churn-stable: admission webhook denied it")]
    bad = settle(ok.decided, Observed(), failures, T0)
    assert bad.model_copy(update={"conditions": [], "transitions": []}) == ok.decided.model_copy(
        update={"conditions": [], "transitions": []}
    )
    degraded = bad.condition("Degraded")
    assert degraded is not None and (degraded.status, degraded.reason) == ("True", "ApplyFailed")
    assert [e.reason for e in recorded_since(ok.decided, bad)] == ["ApplyFailed"]


def test_a_failing_canary_pod_is_reported_with_its_own_words() -> None:
    p = converge(md(canary=CANARY), ready={"churn-canary": 0})
    crashing_pod = {
        "metadata": {"name": "churn-canary-6f7c", "labels": {"modelship.io/variant": "canary"}},
        "status": {
            "containerStatuses": [
                {
                    "name": "serving",
                    "ready": False,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 1,
                            "message": "sha256 mismatch: expected bbbb, got 0000",
                        }
                    },
                }
            ]
        },
    }
    observed = observe(listed(p.apply, {"churn-canary": 0}), [crashing_pod], "churn-router")
    degraded_plan = plan(md(status=p.status, canary=CANARY), observed, SETTINGS, T0)
    status, reason = cond(degraded_plan, "Degraded")
    assert (status, reason) == ("True", "PodFailing")
    text = message(degraded_plan, "Degraded")
    assert "churn-canary-6f7c" in text and "sha256 mismatch" in text
    assert cond(degraded_plan, "Ready")[0] == "True"  # stable still serves
    assert routing(degraded_plan).weights()["canary"] == 0


def test_unusable_spec_touches_nothing_and_says_why() -> None:
    body = base_resource()
    body["spec"]["strategy"] = {"steps": [50, 10]}
    body["metadata"]["generation"] = 3
    with pytest.raises(ValidationError) as info:
        ModelDeployment.from_api(body)
    problem = describe_invalid(info.value)
    assert "steps must be strictly increasing" in problem
    p = plan_invalid(body, problem, T0)
    assert p.apply == () and p.delete == ()
    assert cond(p, "Degraded") == ("True", "InvalidSpec")
    assert p.status.observed_generation == 3
    assert reasons(p) == ["InvalidSpec"]


# --- router configuration generations -------------------------------------------------------


def config_json(generation: int, canary: float = 0) -> str:
    variants = [
        {"name": "stable", "modelVersion": "1", "service": "s", "weight": 100 - canary},
        {"name": "canary", "modelVersion": "2", "service": "c", "weight": canary},
    ]
    return json.dumps({"deployment": "churn", "generation": generation, "variants": variants})


@pytest.mark.parametrize(
    ("observed", "status_gen", "expected"),
    [
        (None, None, 1),
        (None, 7, 8),
        (config_json(5), 5, 5),
        (config_json(5, canary=10), 5, 6),
        (config_json(5, canary=10), 9, 10),
        ("{not json", 3, 4),
    ],
    ids=["first", "configmap-lost", "unchanged", "changed", "status-ahead", "unreadable"],
)
def test_router_generation(observed: str | None, status_gen: int | None, expected: int) -> None:
    assert next_router_generation(config_json(0), observed, status_gen) == expected


# --- status patches -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        (None, {"phase": "Idle"}, {"phase": "Idle"}),
        ({"phase": "Idle"}, {"phase": "Idle"}, {}),
        ({"phase": "Idle", "canary": {"version": "1"}}, {"phase": "Idle"}, {"canary": None}),
        (
            {"traffic": {"stable": 90, "canary": 10}},
            {"traffic": {"stable": 100, "canary": 10}},
            {"traffic": {"stable": 100}},
        ),
        ({"history": [1]}, {"history": [1, 2]}, {"history": [1, 2]}),
    ],
)
def test_status_patch_is_a_json_merge_patch(
    old: dict[str, Any] | None, new: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert status_patch(old, new) == patch


# --- capacity: a canary's share, autoscaling ------------------------------------------------


def kinds(p: Plan, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in p.apply if o["kind"] == kind}


def test_a_canary_runs_its_share_of_the_pods_one_step_ahead() -> None:
    strategy = {"steps": [10, 50, 80]}
    waiting = plan(md(canary=CANARY, replicas=10, strategy=strategy), Observed(), SETTINGS, T0)
    # Before it enters, it is sized for the first step: 10 % of 10.
    assert deployment(waiting, "churn-canary")["spec"]["replicas"] == 1
    entered = converge(md(canary=CANARY, replicas=10, strategy=strategy))
    assert entered.status.traffic is not None and entered.status.traffic.canary == 10
    # At 10 % it already runs the pods of the next step (50 %): they are up before it moves.
    assert deployment(entered, "churn-canary")["spec"]["replicas"] == 5
    assert deployment(entered, "churn-stable")["spec"]["replicas"] == 10
    assert "churn-canary" in kinds(entered, "PodDisruptionBudget")


def test_autoscaling_renders_an_autoscaler_per_variant_and_leaves_replicas_to_it() -> None:
    scaling = {"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilization": 60,
               "scaleDownStabilization": "30s"}  # fmt: skip
    resource = md(canary=CANARY, autoscaling=scaling, strategy={"steps": [10, 50]})
    entered = converge(resource)
    for name in ("churn-stable", "churn-canary"):
        assert "replicas" not in deployment(entered, name)["spec"]
    hpas = kinds(entered, "HorizontalPodAutoscaler")
    stable, canary = hpas["churn-stable"]["spec"], hpas["churn-canary"]["spec"]
    assert stable["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "churn-stable"
    }  # fmt: skip
    assert (stable["minReplicas"], stable["maxReplicas"]) == (2, 10)
    assert stable["metrics"] == [
        {"type": "Resource",
         "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
    ]  # fmt: skip
    assert stable["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30
    # The canary at 10 %, sized for its next step (50 %): half the range, at least one.
    assert (canary["minReplicas"], canary["maxReplicas"]) == (1, 5)
    assert set(kinds(entered, "PodDisruptionBudget")) == {
        "churn-stable",
        "churn-canary",
        "churn-router",
    }


def test_an_ended_rollout_holds_the_canary_pods_without_an_autoscaler() -> None:
    scaling = {"maxReplicas": 4}
    running = converge(md(canary=CANARY, autoscaling=scaling))
    resource = md(status=running.status, canary=CANARY, autoscaling=scaling)
    resource.metadata.annotations["modelship.io/action"] = "abort"
    aborted = plan(resource, cluster(running), SETTINGS, T0)
    assert aborted.status.phase == "RolledBack"
    assert deployment(aborted, "churn-canary")["spec"]["replicas"] == 1  # what it ran
    assert set(kinds(aborted, "HorizontalPodAutoscaler")) == {"churn-stable"}
    assert ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", "churn-canary") in set(
        aborted.delete
    )


def autoscaled(p: Plan, stable: int, canary: int, stable_available: int | None = None) -> Observed:
    """The cluster after ``p`` once the autoscalers run ``stable`` and ``canary`` pods
    (``stable_available`` of stable's available; default all)."""
    items = listed(p.apply)
    for item in items:
        name = item["metadata"]["name"]
        if item["kind"] == "Deployment" and name in ("churn-stable", "churn-canary"):
            want = stable if name == "churn-stable" else canary
            up = stable_available if name == "churn-stable" and stable_available else want
            item["spec"]["replicas"] = want
            item["status"].update(
                replicas=want, readyReplicas=up, updatedReplicas=want, availableReplicas=up
            )
    return observe(items, routing_configmap="churn-router")


def test_promotion_scales_an_autoscaled_stable_for_the_whole_load_before_traffic_moves() -> None:
    spec: dict[str, Any] = {
        "autoscaling": {"minReplicas": 2, "maxReplicas": 10},
        "strategy": {"steps": [80]},
    }
    running = converge(md(canary=CANARY, **spec))
    assert running.status.traffic is not None and running.status.traffic.canary == 80
    promoting_status = running.status.model_copy(update={"phase": "Promoting"})

    def stable_min(p: Plan) -> int:
        return int(kinds(p, "HorizontalPodAutoscaler")["churn-stable"]["spec"]["minReplicas"])

    def after(p: Plan, status: Any, stable: int, canary: int, seconds: int = 0) -> Plan:
        """The next plan once the autoscalers of ``p`` run these pods, ``seconds`` in."""
        resource = md(status=status, canary=CANARY, **spec)
        observed = autoscaled(p, stable=stable, canary=canary)
        return plan(resource, observed, SETTINGS, T0 + timedelta(seconds=seconds))

    # The canary's autoscaler runs 4 pods for its 80 %, stable's 1 for its 20 %: before
    # the canary's traffic moves, stable's floor is what the whole load needs, 4 / 0.8.
    promoting = after(running, promoting_status, stable=1, canary=4)
    assert promoting.status.phase == "Promoting"
    assert stable_min(promoting) == 5
    assert promoting.status.traffic == running.status.traffic
    # Stable runs the candidate on every pod it has, but only 2: not promoted yet.
    short = after(promoting, promoting.status, stable=2, canary=4)
    assert short.status.phase == "Promoting"
    assert short.status.traffic == running.status.traffic
    assert "stable scales to 5 pods" in message(short, "Progressing")
    # With 5 available the traffic moves, and the floor stays for FLOOR_HOLD (60 s), so the
    # autoscaler does not scale stable down on the CPU it measured with a fifth of the load.
    done = after(short, short.status, stable=5, canary=4)
    assert done.status.phase == "Promoted"
    assert routing(done).weights() == {"stable": 100.0, "canary": 0.0}
    assert stable_min(done) == 5
    assert done.requeue_after == pytest.approx(30)  # the canary's scaleDownDelay comes first
    held = after(done, done.status, stable=5, canary=4, seconds=40)
    assert stable_min(held) == 5
    assert held.requeue_after == pytest.approx(20)
    lifted = after(held, held.status, stable=5, canary=0, seconds=61)
    assert lifted.status.phase == "Promoted"
    assert stable_min(lifted) == 2
    assert lifted.requeue_after is None


def test_promotion_without_autoscaling_has_no_floor() -> None:
    running = converge(md(canary=CANARY, replicas=3))
    promoting_status = running.status.model_copy(update={"phase": "Promoting"})
    promoting = plan(
        md(status=promoting_status, canary=CANARY, replicas=3), cluster(running), SETTINGS, T0
    )
    assert promoting.status.rollout is not None
    assert promoting.status.rollout.stable_floor is None
    assert kinds(promoting, "HorizontalPodAutoscaler") == {}


@pytest.mark.parametrize(
    ("scaling", "resources", "says"),
    [
        ({"minReplicas": 5, "maxReplicas": 2}, None, "minReplicas must not exceed maxReplicas"),
        ({"maxReplicas": 3}, {"requests": {"memory": "1Gi"}}, "set resources.requests.cpu"),
        ({"maxReplicas": 3, "targetCPUUtilization": 5}, None, "targetCPUUtilization"),
    ],
)
def test_invalid_autoscaling_is_refused_saying_what_to_fix(
    scaling: dict[str, Any], resources: dict[str, Any] | None, says: str
) -> None:
    extra = {"resources": resources} if resources is not None else {}
    with pytest.raises(ValidationError, match=says):
        md(autoscaling=scaling, **extra)
