"""The local control plane is real Kubernetes: schema and CEL validation, controllers,
the scheduler, garbage collection, RBAC and PodSecurity admission all act for real."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from modelship_cluster import images

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.modelship.io
spec:
  group: test.modelship.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [min, max]
              x-kubernetes-validations:
                - rule: "self.min < self.max"
                  message: "min must be below max"
              properties:
                min: {type: integer, minimum: 0}
                max: {type: integer, maximum: 100}
"""


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def widget(name: str, lo: object, hi: object) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "test.modelship.io/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"min": lo, "max": hi},
        }
    )


@pytest.fixture(scope="module")
def widget_crd(kubectl: Callable[..., Any]) -> Iterator[None]:
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.test.modelship.io", "--timeout=60s")
    yield
    kubectl("delete", "crd", "widgets.test.modelship.io", "--wait=false")


def test_crd_accepts_valid_and_refuses_invalid_with_the_schemas_message(
    widget_crd: None, kubectl: Callable[..., Any], namespace: str
) -> None:
    ok = kubectl("apply", "-n", namespace, "-f", "-", input=widget("good", 1, 5))
    assert "widget.test.modelship.io/good created" in ok.stdout

    cel = kubectl("apply", "-n", namespace, "-f", "-", input=widget("bad", 7, 5), check=False)
    assert cel.returncode != 0
    assert "min must be below max" in cel.stderr

    schema = kubectl("apply", "-n", namespace, "-f", "-", input=widget("big", 1, 500), check=False)
    assert schema.returncode != 0
    assert "spec.max" in schema.stderr and "less than or equal to 100" in schema.stderr

    typed = kubectl("apply", "-n", namespace, "-f", "-", input=widget("str", "a", 5), check=False)
    assert typed.returncode != 0
    assert "spec.min" in typed.stderr

    names = kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout.split()
    assert names == ["widget.test.modelship.io/good"]


@pytest.fixture
def test_node(kube_api: client.ApiClient) -> Iterator[str]:
    """A Node object with no kubelet behind it: the scheduler can bind pods to it."""
    core = client.CoreV1Api(kube_api)
    name = f"test-node-{uuid.uuid4().hex[:6]}"
    core.create_node(
        client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={"test-node": name}))
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    capacity = {"cpu": "4", "memory": "8Gi", "pods": "20"}
    core.patch_node_status(
        name,
        {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "TestNode",
                        "message": "created by the test",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        },
    )
    yield name
    core.delete_node(name)


def test_deployment_becomes_replicaset_and_scheduled_pods_and_is_garbage_collected(
    kube_api: client.ApiClient, namespace: str, test_node: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"test-node": test_node},
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "web", "image": images.TESTBED}],
                    },
                },
            },
        },
    )

    def replicasets() -> list[client.V1ReplicaSet]:
        return apps.list_namespaced_replica_set(namespace).items

    rs = wait_for(replicasets, what="the Deployment's ReplicaSet")[0]
    assert rs.metadata.owner_references[0].kind == "Deployment"

    def bound_pods() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace).items
        return pods if len(pods) == 2 and all(p.spec.node_name for p in pods) else []

    pods = wait_for(bound_pods, what="2 pods bound by the scheduler")
    assert {p.spec.node_name for p in pods} == {test_node}
    assert all(p.metadata.owner_references[0].name == rs.metadata.name for p in pods)

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(lambda: not replicasets(), what="the garbage collector to delete the ReplicaSet")

    def pods_deleted() -> bool:
        # Without a kubelet on this node a pod stays Terminating; the collector's delete is
        # what this test checks (tests/cluster/test_node_e2e.py covers a real node).
        return all(p.metadata.deletion_timestamp for p in core.list_namespaced_pod(namespace).items)

    wait_for(pods_deleted, what="the garbage collector to delete the pods")
    for pod in core.list_namespaced_pod(namespace).items:
        core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)


def test_service_account_with_a_narrow_role_is_refused_outside_it(
    kube_api: client.ApiClient, local_cluster: Any, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token

    configuration = client.Configuration()
    configuration.host = local_cluster.config.server_url
    configuration.ssl_ca_cert = str(local_cluster.ca)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(configuration) as as_reader:
        reader = client.CoreV1Api(as_reader)
        # RBAC changes propagate to the authorizer's cache within moments.
        wait_for(lambda: reader.list_namespaced_pod(namespace) is not None, what="pod list")
        for forbidden in (
            lambda: reader.list_namespaced_secret(namespace),
            lambda: reader.list_namespaced_pod("default"),
            lambda: reader.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}}),
        ):
            with pytest.raises(ApiException) as refused:
                forbidden()
            assert refused.value.status == 403
            assert f"system:serviceaccount:{namespace}:reader" in refused.value.body


def test_pod_security_admission_enforces_restricted(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )

    def pod(name: str, security: dict[str, Any]) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {
                "containers": [{"name": "c", "image": "modelship/testserver:1", **security}],
                "nodeSelector": {"no-such-node": "x"},
            },
        }

    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, pod("root", {}))
    assert refused.value.status == 403
    assert "violates PodSecurity" in refused.value.body and "restricted" in refused.value.body

    restricted = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    }
    created = core.create_namespaced_pod(namespace, pod("nonroot", restricted))
    assert created.metadata.name == "nonroot"
