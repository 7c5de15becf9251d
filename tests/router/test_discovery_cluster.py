"""Endpoint discovery and live configuration against the local Kubernetes cluster.

Real apiserver, real EndpointSlice controller, real pods (the test bed image's test server):
readiness changes move traffic within a second of the EndpointSlice change, ConfigMap
changes apply live, and the router also runs as a pod on its service account.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from modelship_cluster import images
from router_harness import free_port, stop, wait_http

pytestmark = pytest.mark.cluster

T = TypeVar("T")

RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def wait_for(check: Callable[[], T], what: str, timeout: float = 90.0, every: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def server_deployment(name: str, variant: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "churn", "variant": variant}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": images.TESTBED,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": 8080},
                                "periodSeconds": 1,
                                "failureThreshold": 1,
                            },
                            "securityContext": RESTRICTED,
                        }
                    ],
                },
            },
        },
    }


def service(name: str, variant: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": "churn", "variant": variant},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def routing_configmap(generation: int, canary_weight: float) -> dict[str, Any]:
    routing = {
        "deployment": "churn",
        "generation": generation,
        "variants": [
            {"name": "stable", "modelVersion": "1.0.0", "service": "churn-stable", "port": "http"},
            {
                "name": "canary",
                "modelVersion": "2.0.0",
                "service": "churn-canary",
                "port": "http",
                "weight": canary_weight,
            },
        ],
    }
    return {"metadata": {"name": "churn-router"}, "data": {"routing.json": json.dumps(routing)}}


@pytest.fixture
def workloads(kube_api: Any, namespace: str) -> dict[str, list[Any]]:
    """2 stable and 1 canary test-server pods behind their Services, all Ready."""
    from kubernetes import client

    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, server_deployment("churn-stable", "stable", 2))
    apps.create_namespaced_deployment(namespace, server_deployment("churn-canary", "canary", 1))
    core.create_namespaced_service(namespace, service("churn-stable", "stable"))
    core.create_namespaced_service(namespace, service("churn-canary", "canary"))

    def ready_pods(variant: str, count: int) -> list[Any]:
        pods = core.list_namespaced_pod(namespace, label_selector=f"variant={variant}").items
        ready = [
            p
            for p in pods
            if p.status.pod_ip
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ready if len(ready) == count else []

    return {
        "stable": wait_for(lambda: ready_pods("stable", 2), "2 ready stable pods", every=0.2),
        "canary": wait_for(lambda: ready_pods("canary", 1), "1 ready canary pod", every=0.2),
    }


class _Alive:
    """Stands in for a local process in wait_http: the pod's process is not ours to poll."""

    def poll(self) -> None:
        return None


def slice_ready(kube_api: Any, namespace: str, service_name: str, ip: str) -> bool | None:
    """The EndpointSlice's ready condition for ``ip`` (None if not listed)."""
    from kubernetes import client

    slices = client.DiscoveryV1Api(kube_api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service_name}"
    )
    for item in slices.items:
        for endpoint in item.endpoints or []:
            if ip in endpoint.addresses:
                ready = endpoint.conditions.ready if endpoint.conditions else None
                return ready is None or bool(ready)
    return None


def served_by(url: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(n):
            resp = client.get("/")
            assert resp.status_code == 200, resp.text
            seen[f"{resp.headers['x-modelship-variant']}/{resp.json()['pod']}"] += 1
    return seen


def upstream_count(url: str, variant: str) -> int:
    detail = httpx.get(f"{url}/readyz", timeout=5).json()
    return int(detail.get("variants", {}).get(variant, {}).get("upstreams", -1))


def test_discovery_follows_readiness_and_configmap_changes(
    kube_api: Any,
    local_cluster: Any,
    namespace: str,
    workloads: dict[str, list[Any]],
    tmp_path: Path,
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(namespace, routing_configmap(1, 0))
    port = free_port()
    log_path = tmp_path / "router.log"
    router = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "modelship-router"),
            "--deployment=churn",
            f"--namespace={namespace}",
            f"--kubeconfig={local_cluster.kubeconfig}",
            "--host=127.0.0.1",
            f"--port={port}",
        ],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    router.log_path = log_path  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", router)
        wait_for(lambda: upstream_count(url, "stable") == 2, "the router to see 2 stable pods")
        stable_names = {p.metadata.name for p in workloads["stable"]}
        seen = served_by(url, 40)
        assert set(seen) == {f"stable/{name}" for name in stable_names}

        # A pod failing readiness leaves the EndpointSlice; the router follows within 1 s.
        victim = workloads["stable"][0]
        ip = victim.status.pod_ip
        assert httpx.post(f"http://{ip}:8080/fail-ready", timeout=5).status_code == 200
        wait_for(
            lambda: slice_ready(kube_api, namespace, "churn-stable", ip) is False,
            "the EndpointSlice to mark the pod not ready",
        )
        changed = time.monotonic()
        wait_for(lambda: upstream_count(url, "stable") == 1, "the router to drop the pod", 10)
        dropped_after = time.monotonic() - changed
        seen = served_by(url, 30)
        assert f"stable/{victim.metadata.name}" not in seen
        assert sum(seen.values()) == 30

        assert httpx.post(f"http://{ip}:8080/recover", timeout=5).status_code == 200
        wait_for(
            lambda: slice_ready(kube_api, namespace, "churn-stable", ip) is True,
            "the EndpointSlice to mark the pod ready again",
        )
        changed = time.monotonic()
        wait_for(lambda: upstream_count(url, "stable") == 2, "the router to add the pod", 10)
        added_after = time.monotonic() - changed
        print(f"router followed EndpointSlice changes in {dropped_after:.3f}s / {added_after:.3f}s")
        # The issue's acceptance bound; the watch is event-driven (typically tens of ms).
        assert dropped_after < 1.0 and added_after < 1.0

        # A ConfigMap change applies live: all traffic to the canary.
        core.replace_namespaced_config_map("churn-router", namespace, routing_configmap(2, 100))
        changed = time.monotonic()
        wait_for(
            lambda: httpx.get(f"{url}/readyz", timeout=5).json().get("generation") == 2,
            "generation 2 to apply",
            10,
        )
        print(f"router applied the new ConfigMap in {time.monotonic() - changed:.3f}s")
        canary_pod = workloads["canary"][0].metadata.name
        resp = httpx.get(f"{url}/", timeout=10)
        assert resp.headers["x-modelship-variant"] == "canary"
        assert resp.headers["x-model-version"] == "2.0.0"
        assert resp.json()["pod"] == canary_pod

        # No canary pod at all: canary traffic falls back to stable, never an error.
        apps = client.AppsV1Api(kube_api)
        apps.patch_namespaced_deployment_scale("churn-canary", namespace, {"spec": {"replicas": 0}})
        wait_for(lambda: upstream_count(url, "canary") == 0, "the canary pod to go", 60)
        seen = served_by(url, 20)
        assert all(key.startswith("stable/") for key in seen), seen
    finally:
        stop(router)


def test_router_runs_in_a_pod_on_its_service_account(
    kube_api: Any, namespace: str, workloads: dict[str, list[Any]]
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "churn-router"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "churn-router"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["churn-router"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "churn-router"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "churn-router",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "churn-router"}],
        },
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "churn-router", "labels": {"app": "churn-router"}},
            "spec": {
                "serviceAccountName": "churn-router",
                "containers": [
                    {
                        "name": "router",
                        "image": images.ROUTER,
                        "args": ["--deployment=churn"],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": 8080},
                            "periodSeconds": 1,
                        },
                        "securityContext": RESTRICTED,
                    }
                ],
            },
        },
    )

    def running_ip() -> str | None:
        pod = core.read_namespaced_pod("churn-router", namespace)
        return pod.status.pod_ip if pod.status.phase == "Running" else None

    # Started before its ConfigMap exists: alive, not ready, and says why.
    ip = wait_for(running_ip, "the router pod to run", 120, 0.2)
    wait_http(f"http://{ip}:8080/healthz", _Alive())
    waiting = httpx.get(f"http://{ip}:8080/readyz", timeout=5)
    assert waiting.status_code == 503
    assert waiting.json()["reason"] == "no routing configuration applied yet"
    core.create_namespaced_config_map(namespace, routing_configmap(1, 0))

    def ready() -> bool:
        pod = core.read_namespaced_pod("churn-router", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    wait_for(ready, "the router pod to be Ready (config + stable endpoints)", 120, 0.2)
    seen = served_by(f"http://{ip}:8080", 20)
    stable_names = {p.metadata.name for p in workloads["stable"]}
    assert {key.split("/", 1)[1] for key in seen} <= stable_names
    assert all(key.startswith("stable/") for key in seen)
