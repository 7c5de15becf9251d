"""The CRD, RBAC and rendered objects against a real kube-apiserver (no nodes needed).

What the unit tests check with a stand-in is checked here by the real thing: the CRD is
accepted, every invalid resource of the table is refused with the expected words, every
valid one is stored with the same defaults the operator's models apply, and the operator's
ServiceAccount, with exactly the RBAC in manifests/rbac, can apply, read and prune every
child it renders (including the router's Role, which Kubernetes only lets a holder of
those permissions create) and write status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_spec
from apiserver import ApiServer, install_crd, start_apiserver
from mdep_fixtures import SHA_CANARY, base_resource
from modelship_operator.crd import dump_yaml
from modelship_operator.observed import Observed
from modelship_operator.reconcile import plan, status_patch
from modelship_operator.render import render, state_from_spec
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ModelRef
from test_reconcile import T0, cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "--as=system:serviceaccount:modelship-system:modelship-operator"
ROUTER = "--as=system:serviceaccount:ml:churn-router"
CANARY = {"version": "1.5.0", "uri": "file:///models/churn-1.5.0.skops", "sha256": SHA_CANARY}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    for server in start_apiserver(tmp_path_factory.mktemp("apiserver")):
        install_crd(server)
        # The OpenAPI document (kubectl explain, strict field validation) follows shortly.
        deadline = time.monotonic() + 60
        while server.kubectl("explain", "modeldeployment", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the CRD's OpenAPI was never published"
            time.sleep(0.5)
        for namespace in ("modelship-system", "ml"):
            server.kubectl("create", "namespace", namespace)
        server.kubectl("apply", "-f", str(ROOT / "manifests/rbac/operator.yaml"))
        yield server


def in_namespace(body: dict[str, Any], name: str | None = None) -> str:
    obj = json.loads(json.dumps(body))
    obj["metadata"] = {"name": name or obj["metadata"]["name"], "namespace": "ml"}
    obj.pop("status", None)
    return json.dumps(obj)


def test_explain_describes_the_strategy(api: ApiServer) -> None:
    out = api.kubectl("explain", "modeldeployment.spec.strategy").stdout
    assert "How the canary is rolled out and analysed." in out
    assert "strictly increasing" in out


@pytest.mark.parametrize(("body", "api_words", "py_words"),
                         [c[1:] for c in test_spec.INVALID],
                         ids=[c[0] for c in test_spec.INVALID])  # fmt: skip
def test_invalid_resources_are_refused_with_the_reason(
    api: ApiServer, body: dict[str, Any], api_words: str, py_words: str
) -> None:
    result = api.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-f", "-",
        input=in_namespace(body), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    # The API server words a path as "<path>: Invalid value: <v>: <path> in body ..."; the
    # table keeps "<path>: <message>": compare the message part.
    assert api_words.split(": ", 1)[-1] in result.stderr, result.stderr


@pytest.mark.parametrize("body", [c[1] for c in test_spec.VALID],
                         ids=[c[0] for c in test_spec.VALID])  # fmt: skip
def test_valid_resources_are_stored_with_the_models_defaults(
    api: ApiServer, body: dict[str, Any]
) -> None:
    result = api.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-",
        input=in_namespace(body),
    )  # fmt: skip
    stored = json.loads(result.stdout)["spec"]
    assert stored == ModelDeployment.from_api(body).spec.to_api()


def test_operator_account_applies_reads_and_prunes_every_child(api: ApiServer) -> None:
    resource = ModelDeployment.from_api(base_resource(replicas=2, router={"replicas": 2}))
    candidate = ModelRef(**{"format": "auto", **CANARY})
    objects = render(resource, OperatorSettings(), state_from_spec(resource, candidate=candidate))
    manifest = "".join("---\n" + dump_yaml(o) for o in objects)
    apply = ("apply", OPERATOR, "--server-side", "--field-manager=modelship-operator", "-f", "-")
    out = api.kubectl(*apply, input=manifest).stdout
    assert out.count("serverside-applied") == len(objects)
    api.kubectl(*apply, input=manifest)  # idempotent: a second apply changes nothing
    listed = api.kubectl(
        OPERATOR, "-n", "ml", "get", "deployments,services,configmaps,serviceaccounts,roles,"
        "rolebindings,poddisruptionbudgets,networkpolicies", "-l", "modelship.io/deployment=churn",
        "-o", "name",
    ).stdout.split()  # fmt: skip
    assert len(listed) == len(objects)
    api.kubectl(OPERATOR, "-n", "ml", "get", "pods,endpointslices")
    api.kubectl(
        OPERATOR, "-n", "ml", "delete",
        "deployment/churn-canary", "service/churn-canary", "poddisruptionbudget/churn-canary",
    )  # fmt: skip
    refused = api.kubectl(OPERATOR, "-n", "ml", "get", "secrets", check=False)
    assert "forbidden" in refused.stderr


def test_router_account_reads_only_its_own_configmap(api: ApiServer) -> None:
    resource = ModelDeployment.from_api(base_resource())
    manifest = "".join("---\n" + dump_yaml(o) for o in render(resource, OperatorSettings()))
    api.kubectl("apply", OPERATOR, "--server-side", "--field-manager=modelship-operator",
                "-f", "-", input=manifest)  # fmt: skip
    api.kubectl(ROUTER, "-n", "ml", "get", "configmap", "churn-router")
    api.kubectl(ROUTER, "-n", "ml", "get", "configmaps",
                "--field-selector=metadata.name=churn-router", "--watch=false")  # fmt: skip
    api.kubectl(ROUTER, "-n", "ml", "get", "endpointslices")
    assert api.kubectl(ROUTER, "-n", "ml", "get", "configmaps", check=False).returncode != 0
    assert api.kubectl(ROUTER, "-n", "ml", "get", "pods", check=False).returncode != 0


def test_operator_account_writes_the_status_plan_computes(api: ApiServer) -> None:
    body = base_resource(name="scored")
    api.kubectl("create", "-f", "-", input=in_namespace(body))

    def reconcile(observed: Observed) -> Observed:
        """One plan against the stored resource, its status written as the operator does."""
        stored = json.loads(api.kubectl("-n", "ml", "get", "mdep", "scored", "-o", "json").stdout)
        p = plan(ModelDeployment.from_api(stored), observed, OperatorSettings(), T0)
        patch = {"status": status_patch(stored.get("status"), p.status.to_api())}
        api.kubectl(OPERATOR, "-n", "ml", "patch", "mdep", "scored", "--subresource=status",
                    "--type=merge", "-p", json.dumps(patch))  # fmt: skip
        return cluster(p)

    served = reconcile(reconcile(Observed()))  # 1.4.0 deployed and running
    new_model = json.dumps({"spec": {"model": CANARY}})
    api.kubectl("-n", "ml", "patch", "mdep", "scored", "--type=merge", "-p", new_model)
    reconcile(reconcile(served))  # the canary deployed, then entered at its first step
    row = api.kubectl("-n", "ml", "get", "mdep", "scored", "--no-headers").stdout.split()
    assert row[:7] == ["scored", "Progressing", "True", "1.5.0", "1.4.0", "1.5.0", "10"]
    # The operator may annotate (kopf's progress) but never delete a ModelDeployment.
    api.kubectl(OPERATOR, "-n", "ml", "annotate", "mdep", "scored", "modelship.io/x=1")
    assert api.kubectl(OPERATOR, "-n", "ml", "delete", "mdep", "scored", check=False).returncode


def test_the_shared_client_against_the_real_api_server(api: ApiServer) -> None:
    """modelship_kube as the operator and the router use it, on the real wire: kubeconfig
    token auth, discovery, server-side apply and its conflicts, preconditions, a
    list-and-watch that sees every change, a watch the server ends. (A real server answers
    410 only once etcd compacted past a version, so the faults it will not make on demand
    are tests/kube's, against a stand-in.)"""
    import asyncio

    from modelship_kube.errors import Conflict, NotFound
    from modelship_kube.informer import SYNC, ListWatch
    from modelship_kube.paths import collection_path, object_path
    from modelship_kube.watch import Watch
    from modelship_operator.kube import Kube

    cms = collection_path("v1", "configmaps", "ml")
    path = object_path("v1", "configmaps", "ml", "kube-client")
    meta = {"name": "kube-client", "namespace": "ml", "labels": {"test": "kube-client"}}

    def cm(value: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": value}}

    async def main() -> None:
        kube = Kube.connect(api.kubeconfig)
        client = kube.client
        events = aiter(ListWatch(client, cms, {"labelSelector": "test=kube-client"}, what="t"))
        try:
            assert await kube.serves("modelship.io/v1alpha2", "modeldeployments")
            assert not await kube.serves("nothing.example/v1", "things")
            kind, listing = await anext(events)
            assert kind == SYNC and listing["items"] == []
            version = listing["metadata"]["resourceVersion"]

            first = await client.apply(path, cm("1"), "modelship-test")
            assert [f["manager"] for f in first["metadata"]["managedFields"]] == ["modelship-test"]
            kind, obj = await anext(events)
            assert (kind, obj["data"]) == ("ADDED", {"a": "1"})
            await client.apply(path, cm("2"), "modelship-test")
            kind, obj = await anext(events)
            assert (kind, obj["data"]) == ("MODIFIED", {"a": "2"})

            with pytest.raises(Conflict):  # another manager's field, without force
                await client.apply(path, cm("3"), "someone-else", force=False)
            stale = {
                **cm("4"),
                "metadata": {**meta, "resourceVersion": first["metadata"]["resourceVersion"]},
            }
            with pytest.raises(Conflict):  # an out-of-date resourceVersion precondition
                await client.replace(path, stale)

            await client.delete(path)
            kind, obj = await anext(events)
            assert kind == "DELETED" and obj["metadata"]["name"] == "kube-client"
            with pytest.raises(NotFound):
                await client.get(path)

            # A watch the server ends (timeoutSeconds) just ends: the caller resumes it.
            watch = Watch(client, cms, resource_version=version, timeout_seconds=1)
            async for _ in watch:
                pass
            assert watch.resource_version is not None

            await kube.create_lease("ml", "kube-client", {"holderIdentity": "a"})
            lease = await kube.get_lease("ml", "kube-client")
            assert lease is not None and lease["spec"]["holderIdentity"] == "a"
            await kube.update_lease(lease, {"holderIdentity": "b"})
            with pytest.raises(Conflict):  # written since it was read
                await kube.update_lease(lease, {"holderIdentity": "c"})
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            await kube.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_scale_to_zero_and_back_only_through_the_scale_subresource(api: ApiServer) -> None:
    import asyncio

    from modelship_operator.kube import Kube
    from modelship_router.activate import KubernetesWaker

    spec = {"autoscaling": {"minReplicas": 0, "maxReplicas": 3},
            "resources": {"requests": {"cpu": "100m"}}}  # fmt: skip
    resource = ModelDeployment.from_api(base_resource(name="sleepy", **spec))
    manifest = "".join("---\n" + dump_yaml(o) for o in render(resource, OperatorSettings()))
    api.kubectl("apply", OPERATOR, "--server-side", "--field-manager=modelship-operator",
                "-f", "-", input=manifest)  # fmt: skip
    router = "--as=system:serviceaccount:ml:sleepy-router"

    def can(*args: str) -> bool:
        answer = api.kubectl("auth", "can-i", "-n", "ml", *args, check=False).stdout.strip()
        return answer == "yes"

    # The router may scale its stable Deployment, and nothing else of it or of others.
    assert can(router, "patch", "deployments/sleepy-stable", "--subresource=scale")
    assert not can(router, "patch", "deployments/sleepy-stable")
    assert not can(router, "patch", "deployments/sleepy-router", "--subresource=scale")
    assert can(OPERATOR, "patch", "deployments/sleepy-stable", "--subresource=scale")

    def replicas() -> int:
        out = api.kubectl("-n", "ml", "get", "deployment", "sleepy-stable",
                          "-o", "jsonpath={.spec.replicas}").stdout  # fmt: skip
        return int(out)

    async def flow() -> list[object]:
        kube = Kube.connect(api.kubeconfig)
        waker = KubernetesWaker(kube.client, "ml")
        try:
            seen: list[object] = [replicas()]
            seen.append(await kube.scale("ml", "sleepy-stable", 1, 0))  # idle: to zero
            seen.append(await kube.scale("ml", "sleepy-stable", 1, 0))  # not at 1 any more
            seen.append(replicas())
            seen.append(await waker.wake("sleepy-stable"))  # a request: from 0 to 1
            api.kubectl("-n", "ml", "scale", "deployment/sleepy-stable", "--replicas=3")
            seen.append(await waker.wake("sleepy-stable"))  # the autoscaler's 3 stays
            seen.append(replicas())
            return seen
        finally:
            await kube.close()

    assert asyncio.run(flow()) == [
        1, True, False, 0, "scaled from 0 to 1",
        "not at 0 replicas (scaled meanwhile): left as it is", 3,
    ]  # fmt: skip
