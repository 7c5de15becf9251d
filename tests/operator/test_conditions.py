"""Status logic: condition transitions, the three conditions, observed views, Events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from modelship_operator.conditions import (
    Event,
    Failure,
    Verdict,
    degraded,
    progressing,
    ready,
    set_condition,
    transition_events,
)
from modelship_operator.observed import DeploymentView, deployment_view, observe, pod_problems
from modelship_operator.status import Condition, ModelDeploymentStatus, ModelRef

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5, microseconds=123)
MODEL = ModelRef(version="1.4.0", uri="file:///m", sha256="a" * 64)


def cond(status: str, reason: str = "R", message: str = "", at: datetime = T0) -> Condition:
    return Condition(
        type="Ready", status=status, reason=reason, message=message, last_transition_time=at
    )


@pytest.mark.parametrize(
    ("before", "verdict", "expected_time"),
    [
        (None, Verdict("False", "Pending", ""), T1.replace(microsecond=0)),
        (cond("False"), Verdict("False", "Other", "new message"), T0),
        (cond("False"), Verdict("True", "Available", ""), T1.replace(microsecond=0)),
        (cond("True"), Verdict("True", "Available", "2/2"), T0),
        (cond("True"), Verdict("Unknown", "Lost", ""), T1.replace(microsecond=0)),
    ],
    ids=["first", "same-status-new-reason", "flip", "same", "to-unknown"],
)
def test_transition_time_changes_only_with_status(
    before: Condition | None, verdict: Verdict, expected_time: datetime
) -> None:
    result = set_condition([before] if before else [], "Ready", verdict, T1, generation=4)
    (ready_condition,) = result
    assert ready_condition.last_transition_time == expected_time
    assert (ready_condition.status, ready_condition.reason) == (verdict.status, verdict.reason)
    assert ready_condition.message == verdict.message
    assert ready_condition.observed_generation == 4


def test_conditions_keep_a_canonical_order() -> None:
    conditions: list[Condition] = []
    for kind in ("Degraded", "Ready", "Progressing"):
        conditions = set_condition(conditions, kind, Verdict("False", "X", ""), T0, 1)  # type: ignore[arg-type]
    assert [c.type for c in conditions] == ["Ready", "Progressing", "Degraded"]


def view(**fields: Any) -> DeploymentView:
    base: dict[str, Any] = {
        "name": "churn-stable",
        "variant": "stable",
        "model_version": "1.4.0",
        "sha256": "a" * 64,
        "desired": 2,
        "total": 2,
        "ready": 2,
        "updated": 2,
        "available": 2,
        "generation": 3,
        "observed_generation": 3,
    }
    return DeploymentView(**(base | fields))


ROUTER = view(name="churn-router", variant=None, model_version=None, sha256=None)


@pytest.mark.parametrize(
    ("stable", "router", "expected", "reason"),
    [
        (None, ROUTER, "False", "Pending"),
        (view(ready=0), ROUTER, "False", "StableUnavailable"),
        (view(), None, "False", "Pending"),
        (view(), view(name="churn-router", ready=0), "False", "RouterUnavailable"),
        (view(ready=1), ROUTER, "True", "Available"),
        (view(), ROUTER, "True", "Available"),
    ],
    ids=["no-stable", "stable-down", "no-router", "router-down", "partly", "all"],
)
def test_ready(
    stable: DeploymentView | None, router: DeploymentView | None, expected: str, reason: str
) -> None:
    verdict = ready(stable, router, router_expected=True)
    assert (verdict.status, verdict.reason) == (expected, reason)


def test_ready_without_a_router_needs_only_stable() -> None:
    assert ready(view(), None, router_expected=False).status == "True"


@pytest.mark.parametrize(
    ("phase", "stable", "expected", "reason"),
    [
        ("Idle", view(), "False", "Idle"),
        ("Idle", view(updated=1), "True", "RollingUpdate"),
        ("Idle", view(observed_generation=2), "True", "RollingUpdate"),
        ("Idle", view(model_version="1.3.0"), "True", "RollingUpdate"),
        ("Idle", view(sha256="c" * 64), "True", "RollingUpdate"),
        ("Progressing", view(), "True", "CanaryRollout"),
        ("Paused", view(), "False", "Paused"),
        ("Promoting", view(), "True", "Promoting"),
        ("Promoted", view(), "False", "Promoted"),
        ("RolledBack", view(), "False", "RolledBack"),
        ("Failed", view(), "False", "Failed"),
        ("Idle", None, "False", "Idle"),
    ],
)
def test_progressing(phase: Any, stable: DeploymentView | None, expected: str, reason: str) -> None:
    verdict = progressing(phase, stable, MODEL)
    assert (verdict.status, verdict.reason) == (expected, reason)


def deployment_obj(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "churn-canary", "generation": 2},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {
                    "labels": {
                        "modelship.io/variant": "canary",
                        "modelship.io/model-version": "1.5",
                    }
                },
                "spec": {
                    "containers": [
                        {
                            "name": "serving",
                            "env": [{"name": "MODELSHIP_MODEL_SHA256", "value": "b"}],
                        }
                    ]
                },
            },
        },
        "status": status,
    }


def test_deployment_view_from_the_api_object() -> None:
    obj = deployment_obj(
        observedGeneration=2, replicas=3, readyReplicas=2, updatedReplicas=2, availableReplicas=2
    )
    v = deployment_view(obj)
    assert (v.variant, v.model_version, v.sha256) == ("canary", "1.5", "b")
    assert (v.desired, v.total, v.ready, v.updated) == (2, 3, 2, 2)
    assert not v.rolled_out  # an old pod is still around
    done = deployment_view(
        deployment_obj(
            observedGeneration=2,
            replicas=2,
            readyReplicas=2,
            updatedReplicas=2,
            availableReplicas=2,
        )
    )
    assert done.rolled_out


def test_a_fresh_deployment_has_no_status_yet() -> None:
    v = deployment_view(deployment_obj())
    assert (v.ready, v.observed_generation) == (0, 0)
    assert not v.rolled_out


def test_stalled_rollouts_are_noticed() -> None:
    obj = deployment_obj(
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "churn-canary-5d" has timed out progressing.',
            }
        ]
    )
    v = deployment_view(obj)
    assert v.stalled is not None and "timed out" in v.stalled
    verdict = degraded(observe([obj]))
    assert (verdict.status, verdict.reason) == ("True", "RolloutStalled")


def pod(*containers: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "churn-canary-abc", "labels": {"modelship.io/variant": "canary"}},
        "status": {"containerStatuses": list(containers), **status},
    }


SHA_MISMATCH = (
    "Traceback ...\nmodelship_serving.errors.IntegrityError: sha256 mismatch for "
    "file:///models/churn-1.5.0.skops: expected bbbb, got cccc"
)


@pytest.mark.parametrize(
    ("obj", "reason", "words"),
    [
        (
            pod(
                {
                    "name": "serving",
                    "ready": False,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                    "lastState": {"terminated": {"exitCode": 2, "message": SHA_MISMATCH}},
                }
            ),
            "CrashLoopBackOff",
            "exit code 2: Traceback ... modelship_serving.errors.IntegrityError: sha256 mismatch",
        ),
        (
            pod(
                {
                    "name": "serving",
                    "ready": False,
                    "restartCount": 3,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    "lastState": {"terminated": {"exitCode": 2, "message": SHA_MISMATCH}},
                }
            ),
            "Restarting",
            "exit code 2: Traceback ... modelship_serving.errors.IntegrityError: sha256 mismatch",
        ),
        (
            pod(
                {
                    "name": "serving",
                    "ready": False,
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "modelship/serving:nope"',
                        }
                    },
                }
            ),
            "ImagePullBackOff",
            "check the image name",
        ),
        (
            pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient memory.",
                    }
                ]
            ),
            "Unschedulable",
            "Insufficient memory",
        ),
        (
            pod(phase="Failed", reason="Evicted", message="low on memory"),
            "Evicted",
            "low on memory",
        ),
        (
            pod(
                {
                    "name": "serving",
                    "ready": False,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ),
            "OOMKilled",
            "more memory than its limit: raise spec.resources.limits.memory, or serve a smaller "
            "model): exit code 137: OOMKilled",
        ),
    ],
    ids=[
        "sha256-mismatch",
        "sha256-mismatch-between-retries",
        "bad-image",
        "unschedulable",
        "evicted",
        "oom-killed",
    ],
)
def test_pod_problems_say_what_to_fix(obj: dict[str, Any], reason: str, words: str) -> None:
    (problem,) = pod_problems(obj)
    assert problem.reason == reason
    assert problem.variant == "canary"
    assert words in problem.describe()
    verdict = degraded(observe([], [obj]))
    assert (verdict.status, verdict.reason) == ("True", "PodFailing")
    assert words in verdict.message


@pytest.mark.parametrize(
    "obj",
    [
        pod(
            {
                "name": "serving",
                "ready": False,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
        ),
        pod({"name": "serving", "ready": True, "state": {"running": {}}}),
        pod({"name": "serving", "ready": False, "state": {"running": {}}}),
        pod(
            {
                "name": "serving",
                "ready": True,
                "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}},
            }
        ),
        {
            "metadata": {"name": "old", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Failed"},
        },
    ],
    ids=["starting", "running", "not-yet-ready", "recovered-after-a-crash", "terminating"],
)
def test_pods_that_are_fine_or_going_away_are_not_problems(obj: dict[str, Any]) -> None:
    assert pod_problems(obj) == []


def test_failures_of_the_operator_itself_come_first() -> None:
    verdict = degraded(observe([]), [Failure("ApplyFailed", "Deployment churn-stable: forbidden")])
    assert (verdict.status, verdict.reason) == ("True", "ApplyFailed")
    assert "forbidden" in verdict.message


def status(**fields: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(fields)


def conditions(ready_s: str, degraded_s: str, reason: str = "PodFailing") -> list[dict[str, Any]]:
    at = T0.isoformat()
    return [
        {"type": "Ready", "status": ready_s, "reason": "X", "message": "m",
         "lastTransitionTime": at},
        {"type": "Degraded", "status": degraded_s, "reason": reason, "message": "d",
         "lastTransitionTime": at},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (status(), status(phase="Idle"), [("Normal", "Idle")]),
        (status(phase="Idle"), status(phase="Idle"), []),
        (status(phase="Idle"), status(phase="Progressing"), [("Normal", "RolloutProgressing")]),
        (status(phase="Progressing"), status(phase="RolledBack"), [("Warning", "RolledBack")]),
        (
            status(conditions=conditions("False", "False")),
            status(conditions=conditions("True", "False")),
            [("Normal", "Ready")],
        ),
        (
            status(conditions=conditions("True", "False")),
            status(conditions=conditions("False", "True")),
            [("Warning", "NotReady"), ("Warning", "PodFailing")],
        ),
        (
            status(conditions=conditions("True", "True")),
            status(conditions=conditions("True", "True")),
            [],
        ),
        (
            status(conditions=conditions("True", "True")),
            status(conditions=conditions("True", "True", reason="ApplyFailed")),
            [("Warning", "ApplyFailed")],
        ),
        (
            status(conditions=conditions("True", "True")),
            status(conditions=conditions("True", "False")),
            [("Normal", "Recovered")],
        ),
        (status(), status(conditions=conditions("False", "False")), []),
    ],
    ids=[
        "first-phase",
        "unchanged",
        "rollout",
        "rollback",
        "ready",
        "breaks",
        "still-degraded",
        "new-problem",
        "recovered",
        "first-reconcile-not-ready",
    ],
)
def test_events_mark_transitions_only(
    old: ModelDeploymentStatus, new: ModelDeploymentStatus, expected: list[tuple[str, str]]
) -> None:
    events = transition_events(old, new)
    assert [(e.type, e.reason) for e in events] == expected
    assert all(isinstance(e, Event) and e.message for e in events)
