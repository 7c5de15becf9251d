"""The operator end to end on the local cluster, installed as a user would install it.

The operator runs in pods from ``manifests/operator`` (two replicas, one acting), as its own
ServiceAccount bound to exactly ``manifests/rbac/operator.yaml`` — never as admin — in a
namespace that enforces the ``restricted`` Pod Security profile, as do the namespaces the
ModelDeployments live in. Models are real scikit-learn estimators trained here and put in
the cluster's model store; predictions go through the router's Service.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import watch
from modelship_cluster import images
from modelship_operator.kinds import selector
from modelship_operator.observed import observe
from modelship_operator.reconcile import plan
from modelship_operator.render import router_name
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from modelship_serving.artifacts import save_model
from operator_harness import (
    ContinuousClient,
    Env,
    Model,
    Operator,
    label_restricted,
    model_deployment,
    names,
    pod_ready,
    predict,
    prometheus_query,
    router_url,
    serving,
    subset,
    training_data,
    until,
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("root"),
]

SERVING = "app.kubernetes.io/component=serving"
OPERATOR = "modelship-operator"
ROUTER = "app.kubernetes.io/component=router"
ROUTER_IMAGE = images.ROUTER


# This module's names for conftest.py's fixtures (the operator installed once per module).
@pytest.fixture(scope="module")
def env(cluster_env: Env) -> Env:
    return cluster_env


@pytest.fixture(scope="module")
def operator(installed_operator: Operator) -> Operator:
    return installed_operator


@pytest.fixture(scope="module")
def models(
    local_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Model]]:
    """v1 and v2 of a classifier (v2 answers differently), in the cluster's model store."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    X, y = training_data()
    folder = tmp_path_factory.mktemp("models")
    tag = uuid.uuid4().hex[:8]
    made: dict[str, Model] = {}
    for version, estimator in (
        ("1.0.0", LogisticRegression(max_iter=500).fit(X, y)),
        ("2.0.0", DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, 1 - y)),
    ):
        path = folder / f"churn-{version}.skops"
        save_model(estimator, path)
        stored = local_cluster.add_model(path, name=f"e2e-{tag}-churn-{version}.skops")
        made[version] = Model(version, stored.uri, stored.sha256, estimator, stored.path)
    yield made
    for model in made.values():
        Path(model.path).unlink(missing_ok=True)


@pytest.fixture
def ns(namespace: str, env: Env) -> str:
    """A fresh namespace enforcing the restricted Pod Security profile."""
    label_restricted(env, namespace)
    return namespace


CONTAINER_PROBE = """
import os
argv = open("/proc/1/cmdline", "rb").read().split(b"\\0")
print(next(a.decode() for a in argv if b"modelship-" in a))
print("uid", os.getuid())
try:
    open("/probe", "w")
    print("root writable")
except OSError:
    print("root read-only")
"""


def wait_ready(env: Env, namespace: str, name: str, limit: float = 150) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        # One read: the condition and the rest of the status must come from the same version
        # of the object (two reads could pair an older status with a newer Ready condition).
        obj = env.md(namespace, name)
        status = (obj or {}).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        cond = conditions.get("Ready")
        current = status.get("observedGeneration") == (obj or {})["metadata"]["generation"]
        return obj if current and cond and cond["status"] == "True" else None

    result: dict[str, Any] = until(
        ready, f"{namespace}/{name} to be Ready", limit, lambda: env.describe(namespace, name)
    )
    return result


# --- the whole life of a model ------------------------------------------------------------


def test_deploy_predict_roll_out_and_delete(
    env: Env, operator: Operator, models: dict[str, Model], ns: str
) -> None:
    v1, v2 = models["1.0.0"], models["2.0.0"]
    X, _ = training_data()
    rows = X[:16]
    describe = lambda: env.describe(ns, "churn")  # noqa: E731

    # The rollout below is judged on the test client's own traffic, a few requests a second
    # on a loaded machine: minSamples is what that traffic surely gives a 20 % step in 15 s.
    strategy = {"steps": [20, 60], "interval": "15s", "minSamples": 3}
    env.apply(ns, model_deployment("churn", v1, replicas=2, strategy=strategy))
    obj = wait_ready(env, ns, "churn")

    # Serving and router pods were admitted under `restricted` and are Ready.
    def two_ready() -> bool:
        pods = env.pods(ns, SERVING)
        return len(pods) == 2 and all(pod_ready(p) for p in pods)

    until(two_ready, "2 ready serving pods", 60, describe)
    assert all(pod_ready(p) for p in env.pods(ns, ROUTER)), describe()
    # Status follows the pods (the operator watches its Deployments).
    obj = until(lambda: (o := env.md(ns, "churn"))["status"]["stable"]["readyReplicas"] == 2
                and o, "status to count 2 ready pods", 30, describe)  # fmt: skip
    status = obj["status"]
    assert status["phase"] == "Idle"
    assert status["stable"]["version"] == "1.0.0" and status["stable"]["readyReplicas"] == 2
    assert status["rolledOut"]["current"]["sha256"] == v1.sha256
    # kopf left the resource alone: no finalizer, no annotations of its own.
    assert not obj["metadata"].get("finalizers"), obj["metadata"]
    assert not any("kopf" in k for k in obj["metadata"].get("annotations", {}))
    kinds = {kind for kind, _ in env.children(ns, "churn")}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding",
            "PodDisruptionBudget", "Pod"} <= kinds  # fmt: skip

    # Predictions through the router's Service are the model's own.
    base = router_url(env, ns, "churn")
    code, predictions, version = until(
        lambda: (r := predict(base, "churn", rows))[0] == 200 and r, "a prediction", 30, describe
    )
    assert predictions == v1.estimator.predict(rows).tolist()
    assert version == "1.0.0"
    # Each serving container runs the image's own entrypoint, as its non-root user, on a
    # read-only root filesystem (seen from inside the container, by the kernel).
    serving_pod = names(env.pods(ns, SERVING))[0]
    inside = env.kubectl("-n", ns, "exec", serving_pod, "-c", "serving", "--", "python3", "-c",
                         CONTAINER_PROBE).stdout.split("\n")  # fmt: skip
    assert inside[0].endswith("/modelship-serve"), inside
    assert inside[1] == "uid 65532", inside
    assert inside[2] == "root read-only", inside
    until(lambda: {"Idle", "Ready"} <= {e.reason for e in env.events(ns, "churn")},
          "the Idle and Ready Events", 30, describe)  # fmt: skip

    # The operator's metrics say the same.
    leader = operator.leader()
    assert leader is not None
    labels = {"modeldeployment_namespace": ns, "modeldeployment": "churn"}
    metrics = until(
        lambda: (m := operator.metrics(leader)).value(
            "modelship_operator_condition", condition="Ready", **labels) == 1 and m,
        "the Ready condition in the operator's metrics", 30,
    )  # fmt: skip
    assert metrics.value("modelship_operator_reconciles_total", result="success", **labels) >= 1
    assert metrics.value("modelship_operator_phase", phase="Idle", **labels) == 1
    assert metrics.value("modelship_operator_phase", phase="Progressing", **labels) == 0
    assert metrics.value("modelship_operator_canary_weight_percent", **labels) == 0
    assert metrics.value("modelship_operator_leader") == 1
    standby = [n for n in names(operator.pods()) if n != leader]
    for other in standby:  # the other replica stands by and does nothing
        idle = operator.metrics(other)
        assert idle.value("modelship_operator_leader") == 0
        assert idle.value("modelship_operator_reconciles_total") is None

    # A new stable model rolls out with every request answered.
    old_pods = set(names(env.pods(ns, SERVING)))
    with ContinuousClient(base, "churn", rows[:4]) as load:
        until(lambda: load.result.requests > 20, "the client to get going", 30)
        env.kubectl("-n", ns, "patch", "modeldeployment", "churn", "--type=merge",
                    "-p", f'{{"spec": {{"model": {model_json(v2)}}}}}')  # fmt: skip

        def rolled_out() -> bool:
            obj = env.md(ns, "churn") or {}
            return serving(obj.get("status") or {}, "2.0.0") and not (
                old_pods & set(names(env.pods(ns, SERVING)))
            )

        until(rolled_out, "stable to roll out 2.0.0 and the old pods to go", 180, describe)
        until(lambda: load.latest_versions(20) == ["2.0.0"] * 20,
              "the client to be answered by 2.0.0 only", 30, describe)  # fmt: skip
    result = load.result
    assert result.failures() == {}, f"{result.failures()} of {result.requests}\n{describe()}"
    assert "1.0.0" in result.versions and result.requests > 100, result.statuses
    code, predictions, version = predict(base, "churn", rows)
    assert (code, version) == (200, "2.0.0")
    assert predictions == v2.estimator.predict(rows).tolist()
    obj = wait_ready(env, ns, "churn")
    assert obj["status"]["rolledOut"]["previous"]["version"] == "1.0.0"
    assert env.condition(ns, "churn", "Progressing")["status"] == "False"

    # Deleting the resource deletes every child.
    env.kubectl("-n", ns, "delete", "modeldeployment", "churn", "--wait=true", timeout=60)
    until(lambda: env.children(ns, "churn") == [], "every child to be gone", 90, describe)


# --- a canary in the operator's metrics ------------------------------------------------------


def test_a_canary_shows_in_the_metrics_and_going_back_aborts_and_prunes(
    env: Env, operator: Operator, models: dict[str, Model], ns: str
) -> None:
    """Canary weight and phase as exported while a canary holds its first step (the interval
    is long, so no analysis decides anything here: tests/e2e/test_rollout_canary.py covers
    promotion and rollback); applying the serving model again (a reverted commit) aborts the
    rollout and deletes the canary's objects."""
    v1, v2 = models["1.0.0"], models["2.0.0"]
    X, _ = training_data()
    strategy = {"steps": [40, 80], "interval": "10m", "progressDeadline": "20m",
                "scaleDownDelay": "2s"}  # fmt: skip
    describe = lambda: env.describe(ns, "weights")  # noqa: E731
    env.apply(ns, model_deployment("weights", v1, strategy=strategy))
    until(lambda: serving((env.md(ns, "weights") or {}).get("status") or {}, "1.0.0"),
          "1.0.0 to serve", 150, describe)  # fmt: skip
    env.apply(ns, model_deployment("weights", v2, strategy=strategy))
    labels = {"modeldeployment_namespace": ns, "modeldeployment": "weights"}
    leader = operator.leader()
    assert leader is not None

    def at_step() -> dict[str, Any] | None:
        status = (env.md(ns, "weights") or {}).get("status") or {}
        return status if (status.get("traffic") or {}).get("canary") == 40 else None

    status = until(at_step, "the canary to take 40% of traffic", 150, describe)
    assert status["phase"] == "Progressing" and status["canary"]["version"] == "2.0.0", status
    metrics = until(
        lambda: (m := operator.metrics(leader)).value(
            "modelship_operator_canary_weight_percent", **labels) == 40 and m,
        "the canary weight in the operator's metrics", 30, describe,
    )  # fmt: skip
    assert metrics.value("modelship_operator_phase", phase="Progressing", **labels) == 1
    assert metrics.value("modelship_operator_phase", phase="Idle", **labels) == 0
    assert metrics.value("modelship_operator_condition", condition="Progressing", **labels) == 1
    base = router_url(env, ns, "weights")
    answered = until(lambda: {predict(base, "weights", X[:2])[2] for _ in range(40)} >= {
        "1.0.0", "2.0.0"}, "both versions to answer through the router", 30, describe)  # fmt: skip
    assert answered

    env.apply(ns, model_deployment("weights", v1, strategy=strategy))

    def aborted() -> dict[str, Any] | None:
        status = (env.md(ns, "weights") or {}).get("status") or {}
        left = {name for _, name in env.children(ns, "weights")}
        return status if status.get("phase") == "Idle" and "weights-canary" not in left else None

    status = until(aborted, "Idle with the canary's objects gone", 90, describe)
    assert status["history"][-1]["outcome"] == "Aborted", status["history"]
    until(lambda: not any(p.metadata.name.startswith("weights-canary")
                          for p in env.pods(ns, SERVING)),
          "the canary's pods to stop", 60, describe)  # fmt: skip
    metrics = operator.metrics(leader)
    assert metrics.value("modelship_operator_canary_weight_percent", **labels) == 0
    assert metrics.value("modelship_operator_phase", phase="Idle", **labels) == 1


def model_json(model: Model) -> str:
    import json

    return json.dumps(model.ref())


# --- what the API server refuses --------------------------------------------------------


INVALID = [
    ("replicas-negative", {"replicas": -1},
     "spec.replicas in body should be greater than or equal to 1"),
    ("unknown-strategy", {"strategy": {"type": "BlueGreen"}}, 'Unsupported value: "BlueGreen"'),
    ("unknown-field", {"replicaz": 2}, 'unknown field "spec.replicaz"'),
    ("steps-decreasing", {"strategy": {"steps": [10, 50, 25]}},
     "steps must be strictly increasing"),
    ("the-old-canary-field", {"canary": {"version": "2.0.0"}}, 'unknown field "spec.canary"'),
    ("bad-sha256", {"model": "bad-sha"}, "sha256 must be 64 hexadecimal characters"),
]  # fmt: skip


def test_invalid_resources_are_refused_by_the_api_server(
    env: Env, operator: Operator, models: dict[str, Model], ns: str
) -> None:
    v1 = models["1.0.0"]
    for case, spec, words in INVALID:
        body = model_deployment(f"bad-{case}", v1)
        if spec.get("model") == "bad-sha":
            body["spec"]["model"]["sha256"] = "abc123"
        else:
            body["spec"].update(spec)
        result = env.apply(ns, body, check=False)
        assert result.returncode != 0, f"{case} was accepted"
        assert words in result.stderr, f"{case}: {result.stderr}"
    listed = env.kubectl("-n", ns, "get", "modeldeployments", "-o", "name").stdout
    assert listed.strip() == ""


# --- errors a user causes ---------------------------------------------------------------


def test_missing_model_and_sha256_mismatch_are_degraded_with_the_reason(
    env: Env, operator: Operator, models: dict[str, Model], ns: str
) -> None:
    v1, v2 = models["1.0.0"], models["2.0.0"]
    leader = operator.leader()
    assert leader is not None
    restarts = {name: operator.restarts(name) for name in names(operator.pods())}
    missing = model_deployment("missing", v1)
    missing["spec"]["model"]["uri"] = v1.uri.replace("churn-1.0.0", "churn-0.9.9")
    tampered = model_deployment("tampered", v1)
    tampered["spec"]["model"]["sha256"] = v2.sha256
    misspelt = model_deployment("misspelt", v1, images={"serving": "modelship/serve:0.1.0"})
    env.apply(ns, missing, tampered, misspelt)

    def degraded(name: str, words: str) -> dict[str, Any] | None:
        cond = env.condition(ns, name, "Degraded")
        if cond and cond["status"] == "True" and words in cond["message"]:
            return cond
        return None

    describe = lambda: env.describe(ns, "missing") + env.describe(ns, "tampered", False)  # noqa: E731
    cond = until(lambda: degraded("missing", "HTTP 404"), "missing: Degraded with the 404", 120,
                 describe)  # fmt: skip
    assert cond["reason"] == "PodFailing"
    assert "churn-0.9.9" in cond["message"]
    cond = until(lambda: degraded("tampered", "sha256 mismatch"),
                 "tampered: Degraded with the sha256 mismatch", 120, describe)  # fmt: skip
    assert cond["reason"] == "PodFailing"
    cond = until(lambda: degraded("misspelt", "modelship/serve:0.1.0"),
                 "misspelt: Degraded naming the image", 60, describe)  # fmt: skip
    assert "ErrImagePull" in cond["message"] or "ImagePullBackOff" in cond["message"], cond
    assert "spec.images" in cond["message"]

    def reasons(name: str) -> list[str]:
        return [e.reason for e in env.events(ns, name) if e.source.component == OPERATOR]

    for name in ("missing", "tampered", "misspelt"):
        assert env.condition(ns, name, "Ready")["status"] == "False"
        until(lambda: "PodFailing" in reasons(name), f"{name}: the PodFailing Event", 30)  # noqa: B023
        # Announced once: a container between two crashes does not count as recovered.
        assert reasons(name).count("PodFailing") == 1, reasons(name)
        assert "Recovered" not in reasons(name), reasons(name)

    # The operator is unharmed: same pods, no restarts, healthy, still reconciling.
    assert {n: operator.restarts(n) for n in names(operator.pods())} == restarts, describe()
    assert operator.leader() == leader
    assert operator.healthz(leader) == 200
    metrics = operator.metrics(leader)
    for name in ("missing", "tampered", "misspelt"):
        labels = {"modeldeployment_namespace": ns, "modeldeployment": name}
        assert metrics.value("modelship_operator_condition", condition="Degraded", **labels) == 1


def test_an_oom_killed_and_an_exiting_container_are_degraded_with_the_cause(
    env: Env, operator: Operator, models: dict[str, Model], ns: str
) -> None:
    """The kernel kills a serving container over its memory limit; another image's
    entrypoint exits at once. The operator names each cause in Degraded."""
    v1 = models["1.0.0"]
    small = {"requests": {"memory": "24Mi"}, "limits": {"memory": "24Mi"}}
    starved = model_deployment("starved", v1, resources=small)
    # The router's image as the model server: its entrypoint exits (no routing config).
    exiting = model_deployment("exiting", v1, images={"serving": ROUTER_IMAGE})
    env.apply(ns, starved, exiting)
    describe = lambda: env.describe(ns, "starved") + env.describe(ns, "exiting", False)  # noqa: E731

    def degraded(name: str, words: str) -> dict[str, Any] | None:
        cond = env.condition(ns, name, "Degraded")
        if cond and cond["status"] == "True" and words in cond["message"]:
            return cond
        return None

    cond = until(lambda: degraded("starved", "OOMKilled"), "starved: Degraded, OOMKilled",
                 120, describe)  # fmt: skip
    assert "spec.resources.limits.memory" in cond["message"], cond
    assert "exit code 137" in cond["message"], cond
    cond = until(lambda: degraded("exiting", "exit code"), "exiting: Degraded with the exit",
                 120, describe)  # fmt: skip
    assert cond["reason"] == "PodFailing"
    # The entrypoint's own last words, from the container's log (FallbackToLogsOnError).
    assert "MODELSHIP_ROUTER_DEPLOYMENT" in cond["message"], cond


def test_a_refused_child_is_degraded_backs_off_and_recovers(
    env: Env, operator: Operator, models: dict[str, Model], ns: str
) -> None:
    """A quota that forbids Deployments: the API refuses the operator's apply. The operator
    says so in status and metrics, retries with back-off, and recovers once it is lifted."""
    env.apply(ns, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-deploy"},
                   "spec": {"hard": {"count/deployments.apps": "0"}}})  # fmt: skip
    # Admission enforces a quota once the quota controller has computed its usage.
    until(lambda: env.core.read_namespaced_resource_quota("no-deploy", ns).status.hard,
          "the quota to be in force", 30)  # fmt: skip
    env.apply(ns, model_deployment("quota", models["1.0.0"]))
    describe = lambda: env.describe(ns, "quota")  # noqa: E731

    def refused() -> dict[str, Any] | None:
        cond = env.condition(ns, "quota", "Degraded")
        return cond if cond and cond["reason"] == "ApplyFailed" else None

    cond = until(refused, "Degraded ApplyFailed", 60, describe)
    assert "exceeded quota" in cond["message"] and "quota-stable" in cond["message"], cond
    until(lambda: any(e.reason == "ApplyFailed" for e in env.events(ns, "quota")),
          "the ApplyFailed Event (posted just after status)", 30, describe)  # fmt: skip

    leader = operator.leader()
    assert leader is not None
    labels = {"modeldeployment_namespace": ns, "modeldeployment": "quota"}

    def reconciles() -> float:
        return operator.metrics(leader).value("modelship_operator_reconciles_total", **labels) or 0

    first, started = reconciles(), time.monotonic()
    time.sleep(6)
    count, elapsed = reconciles() - first, time.monotonic() - started
    # Back-off (1, 2, 4, ... s), not a hot loop: at most one attempt per second elapsed.
    assert 1 <= count <= elapsed + 1, (count, elapsed)
    metrics = operator.metrics(leader)
    assert metrics.value("modelship_operator_reconcile_errors_total", reason="Forbidden",
                         **labels) >= 1  # fmt: skip
    assert metrics.value("modelship_operator_reconciles_total", result="refused", **labels) >= 1
    assert operator.healthz(leader) == 200

    env.kubectl("-n", ns, "delete", "resourcequota", "no-deploy")
    until(lambda: env.condition(ns, "quota", "Degraded")["reason"] != "ApplyFailed",
          "the refusal to clear once the quota is gone", 90, describe)  # fmt: skip
    until(lambda: env.apps.read_namespaced_deployment("quota-stable", ns),
          "the stable Deployment to exist", 30, describe)  # fmt: skip


# --- crash safety -----------------------------------------------------------------------


def test_operator_killed_during_reconcile_converges(
    env: Env, operator: Operator, models: dict[str, Model], ns: str
) -> None:
    leader = until(operator.leader, "a leader among the ready replicas", 120, operator.describe)
    restarts = operator.restarts(leader)
    pid = operator.process_id(leader)  # found before the resource exists: the kill is immediate
    seen: dict[str, Any] = {}
    # The reconcile cannot complete before the kill, whatever the timing: a quota refuses
    # the PodDisruptionBudget (the last child a reconcile applies) until it is lifted.
    env.core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "no-budgets"},
             "spec": {"hard": {"count/poddisruptionbudgets.policy": "0"}}},
    )  # fmt: skip

    def kill_on_first_child() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            env.core.list_namespaced_service_account, ns, label_selector=selector("killed"),
            timeout_seconds=60,
        ):  # fmt: skip
            if event["type"] == "ADDED":
                os.kill(pid, signal.SIGKILL)
                seen["children"] = env.children(ns, "killed")
                seen["status"] = (env.md(ns, "killed") or {}).get("status")
                stream.stop()

    killer = threading.Thread(target=kill_on_first_child, daemon=True)
    killer.start()
    time.sleep(0.5)  # the watch is open
    env.apply(ns, model_deployment("killed", models["1.0.0"], replicas=2))
    killer.join(timeout=70)
    assert "children" in seen, "the operator never created the first child"
    assert ("PodDisruptionBudget", "killed-stable") not in seen["children"], seen
    env.core.delete_namespaced_resource_quota("no-budgets", ns)

    describe = lambda: env.describe(ns, "killed")  # noqa: E731
    until(lambda: operator.leader() is not None and (
        operator.leader() != leader or operator.restarts(leader) > restarts),
        "the operator to be back (restarted, or the standby leading)", 120, describe)  # fmt: skip
    wait_ready(env, ns, "killed", limit=180)

    # Converged: what exists is exactly what the operator's plan asks for, and the plan
    # from here changes nothing (no deletion, no status change, no Event). Ready comes
    # with one router pod of two; the status follows the second one's readiness a watch
    # event later, so the check is repeated (bounded) until it holds.
    def divergence() -> str:
        obj = env.md(ns, "killed") or {}
        md = ModelDeployment.from_api(obj)
        children = env.child_objects(ns, "killed")
        pods = env.pod_dicts(ns, selector("killed"))
        observed = observe(children, pods, routing_configmap=router_name("killed"))
        again = plan(md, observed, OperatorSettings(), datetime.now(UTC))
        if again.delete != ():
            return f"would delete {again.delete}"
        live = {(c["kind"], c["metadata"]["name"]): c for c in children}
        wanted_keys = {(o["kind"], o["metadata"]["name"]) for o in again.apply}
        if set(live) != wanted_keys:
            return f"children {sorted(live)} but the plan wants {sorted(wanted_keys)}"
        for wanted in again.apply:
            have = live[(wanted["kind"], wanted["metadata"]["name"])]
            problems = subset({k: v for k, v in wanted.items() if k != "metadata"}, have)
            problems += subset(wanted["metadata"]["labels"], have["metadata"]["labels"], "labels")
            if problems:
                return f"{wanted['kind']} {wanted['metadata']['name']}: {problems}"
        if again.status.to_api() != obj.get("status"):
            return f"status would still change: {again.status.to_api()} != {obj.get('status')}"
        if again.events != ():
            return f"would post {again.events}"
        return ""

    until(lambda: not divergence(), "the operator's plan to change nothing more", 60,
          lambda: divergence() + "\n" + describe())  # fmt: skip
    print(f"killed with {len(seen['children'])} children present; status then: "
          f"{sorted(seen['status'] or {})}")  # fmt: skip


def test_another_replica_takes_over_when_the_leader_stops(
    env: Env, operator: Operator, models: dict[str, Model], ns: str
) -> None:
    leader = until(operator.leader, "a leader among the ready replicas", 120, operator.describe)
    assert len(operator.pods()) == 2, operator.describe()
    # A graceful stop (SIGTERM) releases the Lease: the standby (or the replica replacing
    # the stopped one, whichever asks first) need not wait for it to expire.
    env.kubectl("-n", "modelship-system", "delete", "pod", leader, "--wait=false")
    until(lambda: operator.leader() not in (None, leader), "another replica to take the Lease",
          60, operator.describe)  # fmt: skip
    env.apply(ns, model_deployment("after", models["1.0.0"], router={"type": "none"}))
    obj = wait_ready(env, ns, "after")
    assert "after-router" not in {name for _, name in env.children(ns, "after")}
    assert obj["status"]["stable"]["readyReplicas"] == 1
    operator.wait_available()  # the Deployment replaced the stopped replica


# --- scraping -----------------------------------------------------------------------------


def test_prometheus_scrapes_the_operator(env: Env, operator: Operator) -> None:
    """The chart's PodMonitor makes Prometheus scrape every operator replica; exactly one
    leads, the Lease's holder (once a scrape after the last change of leader is in: the
    operator's PodMonitor scrapes every 30 s)."""

    def leaders() -> list[dict[str, Any]] | None:
        result = prometheus_query('modelship_operator_leader{namespace="modelship-system"}')
        live = {p.metadata.name for p in operator.pods()}
        if {s["metric"]["pod"] for s in result} != live:
            return None
        leading = [s["metric"]["pod"] for s in result if float(s["value"][1]) == 1.0]
        return result if leading == [operator.leader()] else None

    def diagnose() -> str:
        from modelship_cluster.node import prometheus_url

        targets = httpx.get(f"{prometheus_url()}/api/v1/targets", timeout=10).json()
        mine = [
            {k: t.get(k) for k in ("labels", "health", "lastError", "lastScrape")}
            for t in targets["data"]["activeTargets"]
            if "operator" in t["labels"].get("job", "")
        ]
        series = prometheus_query('modelship_operator_leader{namespace="modelship-system"}')
        return f"targets: {mine}\nseries: {series}\nlease: {operator.leader()}\n" + (
            operator.describe()
        )

    series = until(leaders, "Prometheus to scrape every operator replica, one leading", 180,
                   diagnose)  # fmt: skip
    assert sorted(float(s["value"][1]) for s in series) == [0.0] * (len(series) - 1) + [1.0]
