"""The operator's API calls over real HTTP, against the API stand-in (kube_standin): what
each sends (paths, content types, preconditions), and kopf's login from the same
credentials. The real API server's answers to these are test_apiserver's and the e2e
tests'; here the point is the wire."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kube_standin import ApiStandIn, Recorded, Reply, status
from modelship_kube.credentials import Credentials, StaticAuth, Tls, TokenFile, load
from modelship_kube.errors import Conflict, NotFound
from modelship_kube.request import Client
from modelship_operator.kinds import CHILD_KINDS, ChildRef
from modelship_operator.kopf_wiring import connection_info
from modelship_operator.kube import Kube

MD = "/apis/modelship.io/v1alpha2/namespaces/ml/modeldeployments/churn"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/sys/leases"


def script(request: Recorded) -> Reply:
    if request.path == "/apis/modelship.io/v1alpha2":
        return Reply(200, {"resources": [{"name": "modeldeployments"}]})
    if request.path == "/apis/other.io/v1":
        return Reply(404, status(404, "NotFound", "the server could not find it"))
    if request.path == f"{MD}/status":
        if request.json()["metadata"]["resourceVersion"] != "7":
            return Reply(409, status(409, "Conflict", "the object has been modified"))
        return Reply(200, {"metadata": {"resourceVersion": "8"}})
    if request.path.endswith("/leases/gone") or request.path.endswith("/deployments/old"):
        return Reply(404, status(404, "NotFound", "not found"))
    if request.method == "GET" and request.query.get("labelSelector"):
        kind = request.path.rsplit("/", 1)[1]
        return Reply(200, {"kind": "List", "metadata": {"resourceVersion": "1"},
                           "items": [{"metadata": {"name": f"{kind}-1"}}]})  # fmt: skip
    return Reply(200, {"kind": "Echo"})


def test_the_operators_calls_on_the_wire() -> None:
    with ApiStandIn(script) as server:

        async def main() -> list[dict[str, Any]]:
            kube = Kube(Client(Credentials(server.url, auth=StaticAuth.bearer("op"))))
            try:
                assert await kube.serves("modelship.io/v1alpha2", "modeldeployments")
                assert not await kube.serves("other.io/v1", "things")
                await kube.get_model_deployment("ml", "churn")
                answer = await kube.patch_status("ml", "churn", {"phase": "Stable"}, "7")
                assert answer["metadata"]["resourceVersion"] == "8"
                with pytest.raises(Conflict):
                    await kube.patch_status("ml", "churn", {"phase": "Stable"}, "6")
                deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                              "metadata": {"name": "churn-stable", "namespace": "ml"}}  # fmt: skip
                await kube.apply(deployment, "modelship-operator")
                await kube.delete(ChildRef("apps/v1", "Deployment", "old"), "ml")  # gone: fine
                await kube.post_event(
                    {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}},
                    "Normal", "Promoted", "1.5.0 is stable", "modelship-operator", "pod-1",
                    now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                )  # fmt: skip
                await kube.post_event(
                    {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}},
                    "Normal", "StepAdvanced", "50%", "modelship-operator", "pod-1",
                    name="churn.u1.7",
                )  # fmt: skip
                assert await kube.get_lease("sys", "gone") is None
                await kube.create_lease("sys", "lead", {"holderIdentity": "a"})
                lease = {"metadata": {"name": "lead", "namespace": "sys", "resourceVersion": "3"}}
                await kube.update_lease(lease, {"holderIdentity": "b"})
                return await kube.list_children("ml", "modelship.io/deployment=churn")
            finally:
                await kube.close()

        children = asyncio.run(main())
    assert len(children) == len(CHILD_KINDS)
    assert {(c["apiVersion"], c["kind"]) for c in children} == {
        (k.api_version, k.kind) for k in CHILD_KINDS
    }
    by: dict[tuple[str, str], Recorded] = {}
    for r in server.requests:
        by.setdefault((r.method, r.path), r)  # the first of each
    patch = by[("PATCH", f"{MD}/status")]
    assert patch.headers["content-type"] == "application/merge-patch+json"
    assert patch.json() == {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Stable"}}
    apply = by[("PATCH", "/apis/apps/v1/namespaces/ml/deployments/churn-stable")]
    assert apply.headers["content-type"] == "application/apply-patch+yaml"
    assert apply.query == {"fieldManager": "modelship-operator", "force": "true"}
    delete = by[("DELETE", "/apis/apps/v1/namespaces/ml/deployments/old")]
    assert delete.json() == {"propagationPolicy": "Background"}
    event = by[("POST", "/api/v1/namespaces/ml/events")].json()
    assert event["involvedObject"]["kind"] == "ModelDeployment"
    assert event["metadata"] == {"generateName": "churn.", "namespace": "ml"}
    assert event["firstTimestamp"] == "2026-01-02T03:04:05Z"
    named = [r.json() for r in server.requests if r.path == "/api/v1/namespaces/ml/events"][1]
    assert named["metadata"] == {"name": "churn.u1.7", "namespace": "ml"}
    assert by[("POST", LEASES)].json()["spec"] == {"holderIdentity": "a"}
    update = by[("PUT", f"{LEASES}/lead")].json()
    assert update["metadata"]["resourceVersion"] == "3"
    assert update["spec"] == {"holderIdentity": "b"}
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer op"}


def test_a_missing_object_is_none_and_other_errors_raise() -> None:
    def refuse(request: Recorded) -> Reply:
        return Reply(404, status(404, "NotFound", "not found"))

    with ApiStandIn(refuse) as server:

        async def main() -> None:
            kube = Kube(Client(Credentials(server.url)))
            try:
                assert await kube.get_model_deployment("ml", "churn") is None
                meta = {"name": "x", "namespace": "ml"}
                with pytest.raises(NotFound):
                    await kube.apply(
                        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}, "op"
                    )
            finally:
                await kube.close()

        asyncio.run(main())


def test_kopf_logs_in_with_the_operators_credentials(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("sa-token")
    found = Credentials(
        "https://10.0.0.1:443",
        tls=Tls(ca_file=tmp_path / "ca.crt"),
        auth=TokenFile(token),
        namespace="modelship-system",
    )
    info = connection_info(found, asyncio.run(found.authorization()))
    assert (info.server, info.scheme) == ("https://10.0.0.1:443", "Bearer")
    assert info.token == "sa-token"
    assert info.ca_path == str(tmp_path / "ca.crt") and info.ca_data is None
    assert info.default_namespace == "modelship-system" and not info.insecure

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "current-context: t\n"
        "clusters: [{name: t, cluster: {server: 'https://k:6443', insecure-skip-tls-verify: true,"
        " certificate-authority-data: LS0tLS1CRUdJTg==}}]\n"
        "users: [{name: u, user: {client-certificate: c.crt, client-key: c.key}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: u, namespace: ml}}]\n"
    )
    local = load(kubeconfig)
    info = connection_info(local, asyncio.run(local.authorization()))
    assert info.token is None and info.scheme is None and info.insecure
    assert info.ca_data == "-----BEGIN" and info.ca_path is None
    assert info.certificate_path == str(tmp_path / "c.crt")
    assert info.private_key_path == str(tmp_path / "c.key")
