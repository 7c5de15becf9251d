"""The reconcile wiring against the local cluster's API server, driven one call at a time.

No operator pod here: a Reconciler runs in the test process (admin credentials), so each
reconcile can be called and inspected on its own. The serving image is one the node has
no command for, so pods stay waiting and nothing heavy runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml
from modelship_kube.errors import ApiError
from modelship_operator.kube import Kube
from modelship_operator.metrics import OperatorMetrics
from modelship_operator.reconciler import Reconciler
from modelship_operator.settings import OperatorSettings
from modelship_operator.workqueue import WorkQueue

pytestmark = pytest.mark.cluster

SHA_1, SHA_2 = "1" * 64, "2" * 64
CRD = "manifests/crds/modeldeployments.yaml"


def resource(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"version": "1.0.0", "uri": "http://10.244.0.1:8000/x.skops", "sha256": SHA_1},
            "images": {"serving": "modelship/not-an-image:1", "router": "modelship/not-an-image:1"},
            **spec,
        },
    }


@pytest.fixture
def crd(kubectl: Any) -> None:
    from operator_harness import ROOT

    kubectl("apply", "-f", str(ROOT / CRD))
    kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelship.io")


def play(
    local_cluster: Any, scenario: Callable[[Reconciler, Kube], Awaitable[None]], **kube: Any
) -> None:
    async def main() -> None:
        api = kube.get("api") or Kube.connect(local_cluster.kubeconfig)
        reconciler = Reconciler(api, OperatorSettings(), OperatorMetrics(), "test")
        try:
            await asyncio.wait_for(scenario(reconciler, api), 60)
        finally:
            await reconciler.close()
            await api.close()

    asyncio.run(main())


def versions(kubectl: Any, namespace: str, name: str) -> dict[str, str]:
    """Each child's resourceVersion (a Deployment's generation: its status keeps moving)."""
    out = kubectl("-n", namespace, "get", "deployments,services,configmaps,serviceaccounts,roles,"
                  "rolebindings,poddisruptionbudgets", "-l", f"modelship.io/deployment={name}",
                  "-o", "yaml").stdout  # fmt: skip
    return {
        f"{o['kind']}/{o['metadata']['name']}": str(
            o["metadata"]["generation"] if o["kind"] == "Deployment"
            else o["metadata"]["resourceVersion"]
        )
        for o in yaml.safe_load(out)["items"]
    }  # fmt: skip


def reasons(kubectl: Any, namespace: str) -> list[str]:
    out = kubectl("-n", namespace, "get", "events", "-o", "yaml").stdout
    return [e["reason"] for e in yaml.safe_load(out)["items"] if e["source"].get("component")
            == "modelship-operator"]  # fmt: skip


def test_a_second_reconcile_changes_nothing(
    local_cluster: Any, kubectl: Any, namespace: str, crd: None
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource("idem")))

    async def scenario(reconciler: Reconciler, kube: Kube) -> None:
        assert (await reconciler.reconcile(namespace, "idem")).result == "success"
        children = versions(kubectl, namespace, "idem")
        assert {"Deployment/idem-stable", "Deployment/idem-router", "Service/idem-stable",
                "Service/idem-router", "ConfigMap/idem-router", "ServiceAccount/idem-router",
                "Role/idem-router", "RoleBinding/idem-router",
                "PodDisruptionBudget/idem-router"} == set(children)  # fmt: skip
        body = await kube.get_model_deployment(namespace, "idem")
        assert body is not None and body["status"]["observedGeneration"] == 1
        assert body["status"]["phase"] == "Idle"

        for _ in range(2):
            assert (await reconciler.reconcile(namespace, "idem")).result == "success"
        # Server-side apply of unchanged objects writes nothing; a transition is announced
        # once.
        assert versions(kubectl, namespace, "idem") == children
        assert reasons(kubectl, namespace).count("Idle") == 1

    play(local_cluster, scenario)


def test_a_spec_changed_meanwhile_is_never_overwritten_by_a_stale_status(
    local_cluster: Any, kubectl: Any, namespace: str, crd: None
) -> None:
    """The resource changes between the operator's read and its status write (a race no
    test can time, so this Kube subclass makes the change right before the write)."""
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource("racy")))

    class ChangeBeforeStatusWrite(Kube):
        changed = False

        async def patch_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            if not self.changed:
                self.changed = True
                kubectl("-n", namespace, "patch", "modeldeployment", "racy", "--type=merge",
                        "-p", '{"spec": {"replicas": 2}}')  # fmt: skip
            return await super().patch_status(*args, **kwargs)

    async def scenario(reconciler: Reconciler, kube: Kube) -> None:
        first = await reconciler.reconcile(namespace, "racy")
        assert first.result == "conflict"
        body = await kube.get_model_deployment(namespace, "racy")
        assert body is not None and "status" not in body  # nothing stale was written
        second = await reconciler.reconcile(namespace, "racy")
        assert second.result == "success"
        body = await kube.get_model_deployment(namespace, "racy")
        assert body is not None and body["status"]["observedGeneration"] == 2
        replicas = kubectl("-n", namespace, "get", "deployment", "racy-stable",
                           "-o", "jsonpath={.spec.replicas}").stdout  # fmt: skip
        assert replicas == "2"

    api = ChangeBeforeStatusWrite.from_credentials(_config(local_cluster))
    play(local_cluster, scenario, api=api)


def test_what_the_spec_no_longer_asks_for_is_deleted(
    local_cluster: Any, kubectl: Any, namespace: str, crd: None
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-",
            input=yaml.safe_dump(resource("prune", replicas=2)))  # fmt: skip

    async def scenario(reconciler: Reconciler, kube: Kube) -> None:
        await reconciler.reconcile(namespace, "prune")
        router = {"Deployment/prune-router", "Service/prune-router", "ConfigMap/prune-router"}
        assert router | {"PodDisruptionBudget/prune-stable"} <= set(
            versions(kubectl, namespace, "prune")
        )
        kubectl("-n", namespace, "patch", "modeldeployment", "prune", "--type=merge", "-p",
                '{"spec": {"router": {"type": "none"}, "replicas": 1}}')  # fmt: skip
        assert (await reconciler.reconcile(namespace, "prune")).result == "success"
        left = set(versions(kubectl, namespace, "prune"))
        assert not (router | {"PodDisruptionBudget/prune-stable"}) & left, left
        assert "Deployment/prune-stable" in left

    play(local_cluster, scenario)


def test_a_spec_the_operator_cannot_use_is_degraded_and_nothing_is_touched(
    local_cluster: Any, kubectl: Any, namespace: str, crd: None
) -> None:
    """A resource stored before a validation rule existed (the CRD was upgraded since) is
    not re-validated by the API server. Faked by reading the stored body with decreasing
    steps, which today's CRD refuses at admission."""
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource("legacy")))

    class OlderObject(Kube):
        async def get_model_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
            body = await super().get_model_deployment(ns, name)
            if body is not None:
                body["spec"]["strategy"]["steps"] = [50, 10]
            return body

    async def scenario(reconciler: Reconciler, kube: Kube) -> None:
        outcome = await reconciler.reconcile(namespace, "legacy")
        assert outcome.result == "invalid"
        body = await kube.get_model_deployment(namespace, "legacy")
        assert body is not None
        (degraded,) = [c for c in body["status"]["conditions"] if c["type"] == "Degraded"]
        assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
        assert "steps must be strictly increasing" in degraded["message"]
        assert versions(kubectl, namespace, "legacy") == {}  # nothing was created
        assert reasons(kubectl, namespace) == ["InvalidSpec"]

    api = OlderObject.from_credentials(_config(local_cluster))
    play(local_cluster, scenario, api=api)


def test_a_resource_that_is_gone_stops_its_worker(
    local_cluster: Any, kubectl: Any, namespace: str, crd: None
) -> None:
    async def scenario(reconciler: Reconciler, kube: Kube) -> None:
        assert (await reconciler.reconcile(namespace, "never-was")).result == "gone"
        queue = WorkQueue(reconciler.reconcile, reconciler.metrics)
        queue.poke(namespace, "never-was", urgent=True)
        for _ in range(50):
            if not queue._workers:
                break
            await asyncio.sleep(0.1)
        assert queue._workers == {}
        await queue.close()

    play(local_cluster, scenario)


def test_api_errors_carry_the_api_servers_reason(
    local_cluster: Any, kubectl: Any, namespace: str
) -> None:
    async def scenario(reconciler: Reconciler, kube: Kube) -> None:
        bad = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "Not_A_Name", "namespace": namespace}}  # fmt: skip
        with pytest.raises(ApiError) as caught:
            await kube.apply(bad, "modelship-operator")
        assert caught.value.status == 422 and caught.value.reason == "Invalid"
        assert not caught.value.transient
        assert "Not_A_Name" in caught.value.message

    play(local_cluster, scenario)


def _config(local_cluster: Any) -> Any:
    from modelship_kube.credentials import load

    return load(local_cluster.kubeconfig)
