"""Pods on the local cluster's real node, end to end: the control plane schedules, the
kubelet runs the pods in containerd (runc, the project's images), CoreDNS resolves Service
names, kube-proxy routes Services, a PodMonitor makes Prometheus scrape a pod, and
`kubectl logs`, `exec` and `port-forward` work as on any cluster.

Uses the session cluster (`local_cluster`, started once). The last test stops the cluster,
checks that nothing of it is left on the machine, and starts it again with its data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from modelship_cluster import binaries, containerd, images, monitoring, node

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.usefixtures("root"),
]

IMAGE = images.TESTBED


def until(check: Callable[[], Any], what: str, limit: float = 90.0) -> Any:
    """Poll `check` until it returns something truthy (its value is returned)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, client.ApiException):
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def http_get(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _try_get(url: str) -> tuple[int, str] | None:
    try:
        return http_get(url)
    except OSError:
        return None


def apply(kubectl: Any, namespace: str, *docs: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def web_deployment(replicas: int) -> dict[str, Any]:
    env = [
        {"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}}
        for n, p in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                     ("POD_IP", "status.podIP"))
    ]  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": IMAGE,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": env,
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "http"},
                                "periodSeconds": 1,
                                "failureThreshold": 1,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 5,
                            },
                        }
                    ],
                },
            },
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
}


def client_pod(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
            "containers": [{"name": "main", "image": extra.pop("image", IMAGE), **extra}],
        },
    }


def ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    return [
        p
        for p in live
        if p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def slice_addresses(discovery: client.DiscoveryV1Api, namespace: str) -> tuple[set[str], set[str]]:
    """(ready, not ready) addresses of the `web` Service's EndpointSlices."""
    ready, other = set(), set()
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=web"
    ).items
    for s in slices:
        for e in s.endpoints or []:
            (ready if e.conditions and e.conditions.ready else other).update(e.addresses)
    return ready, other


def fetch_from(pod_ip: str, url: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"url": url})
    status, body = http_get(f"http://{pod_ip}:8080/fetch?{query}")
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def test_deployment_runs_routes_scales_heals_and_follows_readiness(
    namespace: str, kubectl: Any, kube_api: Any
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    discovery = client.DiscoveryV1Api(kube_api)
    apply(kubectl, namespace, web_deployment(2), SERVICE, client_pod("client"))

    pods = until(lambda: len(ready_pods(core, namespace, "app=web")) == 2
                 and ready_pods(core, namespace, "app=web"), "2 ready web pods")  # fmt: skip
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(ip.startswith("10.244.") for ip in ips)
    # From the host, by pod IP: each pod answers with its own identity.
    for pod in pods:
        status, body = http_get(f"http://{pod.status.pod_ip}:8080/")
        assert status == 200
        assert json.loads(body) == {
            "pod": pod.metadata.name,
            "namespace": namespace,
            "ip": pod.status.pod_ip,
            "hostname": pod.metadata.name,
        }
    until(lambda: slice_addresses(discovery, namespace)[0] == ips, "EndpointSlice lists both")
    svc = core.read_namespaced_service("web", namespace)
    cluster_ip = svc.spec.cluster_ip
    # From the host through the cluster IP (once kube-proxy has written its rules).
    status, body = until(lambda: _try_get(f"http://{cluster_ip}/"), "cluster IP routes")
    assert status == 200 and json.loads(body)["ip"] in ips

    # From another pod, through the Service's name (short and full) and its cluster IP.
    def client_ip() -> str | None:
        pod = core.read_namespaced_pod("client", namespace)
        return pod.status.pod_ip if pod.status.phase == "Running" else None

    from_ip = until(client_ip, "client pod running")
    until(lambda: fetch_from(from_ip, "http://web/").get("status") == 200, "name resolves")
    for url in (
        "http://web/",
        f"http://web.{namespace}.svc.cluster.local/",
        f"http://{cluster_ip}/",
    ):
        answer = fetch_from(from_ip, url)
        assert answer.get("status") == 200, (url, answer)
        assert json.loads(answer["body"])["ip"] in ips

    # Scale to 3, then back to 1.
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 3}})
    until(lambda: len(slice_addresses(discovery, namespace)[0]) == 3, "3 ready endpoints")
    assert len(ready_pods(core, namespace, "app=web")) == 3
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    until(lambda: len(core.list_namespaced_pod(namespace, label_selector="app=web").items) == 1,
          "scaled down to 1 pod")  # fmt: skip
    until(lambda: len(slice_addresses(discovery, namespace)[0]) == 1, "1 ready endpoint")

    # A deleted pod is replaced.
    (survivor,) = ready_pods(core, namespace, "app=web")
    core.delete_namespaced_pod(survivor.metadata.name, namespace)
    replacement = until(
        lambda: [p for p in ready_pods(core, namespace, "app=web")
                 if p.metadata.name != survivor.metadata.name],
        "replacement pod",
    )[0]  # fmt: skip

    # A killed container process is restarted, and its restartCount grows.
    pid = container_pid(replacement)
    os.kill(pid, signal.SIGKILL)

    def restarted() -> Any:
        pod = core.read_namespaced_pod(replacement.metadata.name, namespace)
        (cs,) = pod.status.container_statuses
        return cs.restart_count >= 1 and cs.ready and cs

    status_after = until(restarted, "restart after SIGKILL")
    assert status_after.last_state.terminated.exit_code == 137
    ip = replacement.status.pod_ip

    # Readiness: failing -> out of the EndpointSlice's ready set; recovered -> back.
    assert http_get(f"http://{ip}:8080/fail-ready", "POST")[0] == 200
    until(lambda: ip not in slice_addresses(discovery, namespace)[0], "endpoint not ready")
    assert ready_pods(core, namespace, "app=web") == []
    assert http_get(f"http://{ip}:8080/recover", "POST")[0] == 200
    until(lambda: ip in slice_addresses(discovery, namespace)[0], "endpoint ready again")


def container_pid(pod: Any) -> int:
    """The host pid of the pod's (only) container, from the runtime itself."""
    (status,) = pod.status.container_statuses
    pid = node.container_pid(status.container_id)
    assert pid > 0 and Path(f"/proc/{pid}").exists()
    return pid


IN_CLUSTER = """
import json, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
def get(path):
    request = urllib.request.Request(f"https://kubernetes.default.svc{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, None
status, pods = get("/api/v1/namespaces/NAMESPACE/pods")
print("pods-allowed", len(pods["items"]) if status == 200 else status)
status, _ = get("/api/v1/namespaces/NAMESPACE/secrets")
print("secrets-allowed" if status == 200 else f"secrets-refused {status}")
status, _ = get("/api/v1/namespaces/kube-system/pods")
print("other-namespace-allowed" if status == 200 else f"other-namespace-refused {status}")
"""


def test_pod_uses_in_cluster_config_within_its_role(
    namespace: str, kubectl: Any, kube_api: Any, local_cluster: Any
) -> None:
    core = client.CoreV1Api(kube_api)
    rbac = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader"}],
        },
    ]  # fmt: skip
    # The ServiceAccount token, the CA and the `kubernetes.default.svc` name (CoreDNS) as any
    # in-cluster client uses them.
    pod = client_pod(
        "in-cluster", command=["python3", "-c", IN_CLUSTER.replace("NAMESPACE", namespace)]
    )
    pod["spec"]["serviceAccountName"] = "reader"
    pod["spec"]["restartPolicy"] = "Never"
    apply(kubectl, namespace, *rbac, pod)

    def finished() -> Any:
        phase = core.read_namespaced_pod("in-cluster", namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = until(finished, "in-cluster pod to finish")
    logs = kubectl("logs", "in-cluster", "-n", namespace, check=False)
    assert phase == "Succeeded", logs.stdout + logs.stderr
    lines = logs.stdout.split("\n")
    assert lines[0] == "pods-allowed 1"
    assert lines[1] == "secrets-refused 403"
    assert lines[2] == "other-namespace-refused 403"


def test_a_podmonitor_makes_prometheus_scrape_a_pod(namespace: str, kubectl: Any) -> None:
    """Scraping is configured the way users configure it: the Prometheus Operator turns a
    PodMonitor into Prometheus configuration; the series get the scrape's labels only."""
    pod = client_pod(
        "metrics",
        ports=[{"name": "http", "containerPort": 8080}],
        metadata={"labels": {"app": "metrics", "modelship.io/variant": "canary"}},
    )
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "metrics"},
        "spec": {
            "selector": {"matchLabels": {"app": "metrics"}},
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics"}],
        },
    }
    apply(kubectl, namespace, pod, monitor)
    query = urllib.parse.urlencode({"query": f'testserver_ready{{namespace="{namespace}"}}'})

    def series() -> Any:
        status, body = http_get(f"{node.prometheus_url()}/api/v1/query?{query}")
        result = json.loads(body)["data"]["result"] if status == 200 else []
        return result

    try:
        (found,) = until(series, "the pod's series in Prometheus", 180)
    except AssertionError as error:
        _, targets = http_get(f"{node.prometheus_url()}/api/v1/targets?scrapePool=podMonitor/"
                              f"{namespace}/metrics/0")  # fmt: skip
        pods = kubectl("get", "pods,podmonitors", "-n", namespace, "-o", "wide", check=False)
        raise AssertionError(f"{error}\ntargets: {targets[:2000]}\n{pods.stdout}") from None
    labels = found["metric"]
    assert labels["pod"] == "metrics"
    assert labels["namespace"] == namespace
    assert labels["job"] == f"{namespace}/metrics"
    assert not any(k.startswith("modelship_io") for k in labels), labels  # no relabelling
    assert found["value"][1] == "1"


#: The prometheus-community chart's `kubernetes-pods` job: what plain Prometheus users run
#: to scrape pods by their prometheus.io/* annotations (the route the chart's pods keep).
ANNOTATION_JOB_RELABELLING: list[dict[str, Any]] = [
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
     "action": "keep", "regex": "true"},
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scheme"],
     "action": "replace", "regex": "(https?)", "target_label": "__scheme__"},
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
     "action": "replace", "target_label": "__metrics_path__", "regex": "(.+)"},
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_port",
                       "__meta_kubernetes_pod_ip"],
     "action": "replace", "regex": r"(\d+);((([0-9]+?)(\.|$)){4})",
     "replacement": "$2:$1", "target_label": "__address__"},
    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
    {"source_labels": ["__meta_kubernetes_namespace"], "action": "replace",
     "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "action": "replace",
     "target_label": "pod"},
    {"source_labels": ["__meta_kubernetes_pod_phase"],
     "regex": "Pending|Succeeded|Failed|Completed", "action": "drop"},
]  # fmt: skip


def test_plain_prometheus_scrapes_an_annotated_pod_with_the_community_relabelling(
    namespace: str, kubectl: Any, local_cluster: Any, tmp_path: Path
) -> None:
    """Without the Prometheus Operator: Prometheus (the same build) with
    `kubernetes_sd_configs` and the prometheus-community chart's annotation job finds the
    pod by its annotations and gives its series `namespace`, the one label the analysis
    needs from a scrape."""
    pod = client_pod(
        "annotated",
        ports=[{"name": "http", "containerPort": 8080}],
        metadata={"annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                                  "prometheus.io/path": "/metrics"}},
    )  # fmt: skip
    apply(kubectl, namespace, pod)
    admin = local_cluster.admin_cert
    tls = {"ca_file": str(local_cluster.ca), "cert_file": str(admin.cert),
           "key_file": str(admin.key)}  # fmt: skip
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{
            "job_name": "kubernetes-pods",
            "honor_labels": True,
            "kubernetes_sd_configs": [{
                "role": "pod", "api_server": local_cluster.config.server_url,
                "tls_config": tls, "namespaces": {"names": [namespace]},
            }],
            "relabel_configs": ANNOTATION_JOB_RELABELLING,
        }],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(binaries.toolset().path("prometheus")), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        query = urllib.parse.urlencode({"query": "testserver_ready"})

        def series() -> Any:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            status, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?{query}")
            return json.loads(body)["data"]["result"] if status == 200 else []

        (found,) = until(series, "the annotated pod's series", 120)
        assert found["metric"]["namespace"] == namespace
        assert found["metric"]["pod"] == "annotated"
        assert found["value"][1] == "1"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def free_port() -> int:
    from modelship_cluster.ports import free_port as pick

    return pick()


def test_pods_reach_prometheus_at_its_in_cluster_address(namespace: str, kubectl: Any) -> None:
    """The operator, in a pod, queries Prometheus by the usual in-cluster URL."""
    apply(kubectl, namespace, client_pod("asker"))

    def pod_ip() -> str | None:
        out = kubectl("get", "pod", "asker", "-n", namespace, "-o", "json").stdout
        status = json.loads(out)["status"]
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        return status.get("podIP") if ready else None

    ip = until(pod_ip, "the asking pod to be ready")
    query = urllib.parse.urlencode({"url": f"{monitoring.URL}/-/ready"})
    # Ready (no probe) comes as the process starts, a moment before it listens.
    status, body = until(lambda: _try_get(f"http://{ip}:8080/fetch?{query}"), "the pod to answer")
    assert status == 200, body
    answer = json.loads(body)
    assert answer.get("status") == 200, answer
    assert "Ready" in answer["body"]


def test_the_node_runs_the_project_images_from_containerd(local_cluster: Any) -> None:
    listed = node.crictl("images", "-o", "json")
    tags = {t for image in json.loads(listed)["images"] for t in image.get("repoTags") or []}
    for ref in (images.OPERATOR, images.SERVING, images.ROUTER, images.TESTBED):
        assert ref in tags, f"{ref} not in containerd: {sorted(tags)}"
    assert node.runtime_config().sandbox_image in tags
    # ctr sees the same, in the CRI namespace.
    assert images.SERVING in containerd.image_names(node.runtime_config())


RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

PROBE = """
import os
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
try:
    open("/written-to-root", "w")
    root = "writable"
except OSError as error:
    root = f"read-only ({error.errno})"
print("uid", os.getuid(), "gid", os.getgid())
print("root", root)
print("caps", status["CapEff"].strip(), status["CapBnd"].strip())
print("seccomp", status["Seccomp"].strip(), "nnp", status["NoNewPrivs"].strip())
"""


def test_runtime_enforces_the_restricted_profile_inside_the_container(
    namespace: str, kubectl: Any, kube_api: Any
) -> None:
    """Not only admission: the container really runs as the image's non-root user, with a
    read-only root filesystem, no capabilities, seccomp filtering and no_new_privs."""
    core = client.CoreV1Api(kube_api)
    pod = client_pod("probe", command=["python3", "-c", PROBE], securityContext=RESTRICTED)
    pod["spec"]["restartPolicy"] = "Never"
    apply(kubectl, namespace, pod)

    def finished() -> Any:
        phase = core.read_namespaced_pod("probe", namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    assert until(finished, "the probe pod to finish") == "Succeeded"
    out = kubectl("logs", "probe", "-n", namespace).stdout.splitlines()
    assert out[0] == "uid 65532 gid 65532"
    assert out[1] == "root read-only (30)"  # EROFS
    assert out[2] == "caps 0000000000000000 0000000000000000"
    assert out[3] == "seccomp 2 nnp 1"


def test_kubectl_logs_exec_and_port_forward_reach_the_container(
    namespace: str, kubectl: Any, kube_api: Any, local_cluster: Any
) -> None:
    core = client.CoreV1Api(kube_api)
    apply(kubectl, namespace, client_pod("web", ports=[{"containerPort": 8080}]))
    until(lambda: ready_pods(core, namespace, "") or None, "the pod to be ready")
    exec_out = kubectl("exec", "web", "-n", namespace, "--", "sh", "-c", "echo $((6 * 7)); id -u")
    assert exec_out.stdout.split() == ["42", "65532"]
    # The test server logs each request it answers; ask it something, then read its log.
    ip = core.read_namespaced_pod("web", namespace).status.pod_ip
    assert http_get(f"http://{ip}:8080/healthz")[0] == 200
    until(lambda: "/healthz" in kubectl("logs", "web", "-n", namespace).stdout, "request log")

    forward = subprocess.Popen(
        [str(binaries.toolset().kubectl), f"--kubeconfig={local_cluster.kubeconfig}",
         "port-forward", "-n", namespace, "pod/web", "18480:8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        status, body = until(lambda: _try_get("http://127.0.0.1:18480/"), "the forwarded port")
        assert status == 200 and json.loads(body)["hostname"] == "web"
    finally:
        forward.terminate()
        forward.wait(10)


def test_memory_limit_is_enforced_and_the_kill_reported_as_oomkilled(
    namespace: str, kubectl: Any, kube_api: Any
) -> None:
    core = client.CoreV1Api(kube_api)
    pod = client_pod(
        "hog",
        command=["python3", "-c", "b = bytearray(400 * 2**20); print('survived')"],
        resources={"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}},
    )
    pod["spec"]["restartPolicy"] = "Never"
    apply(kubectl, namespace, pod)

    def terminated() -> Any:
        statuses = core.read_namespaced_pod("hog", namespace).status.container_statuses or []
        return statuses and statuses[0].state.terminated

    state = until(terminated, "the memory hog to end")
    assert state.reason == "OOMKilled", state
    assert state.exit_code == 137
    assert "survived" not in kubectl("logs", "hog", "-n", namespace, check=False).stdout


def test_cluster_down_leaves_nothing_then_comes_back(local_cluster: Any, kube_api: Any) -> None:
    """Last in this module: stop everything (keeping certificates and etcd data), check the
    machine is clean, start again so later tests find the cluster as before."""
    local_cluster.down(keep_data=True)
    try:
        assert node.leftovers() == []
        assert not any(s.running for s in local_cluster.status())
        assert "mship0" not in subprocess.run(["ip", "link"], capture_output=True,
                                              text=True).stdout  # fmt: skip
    finally:
        local_cluster.up()
    core = client.CoreV1Api(kube_api)
    ready = core.read_node(node.NODE_NAME)
    assert any(c.type == "Ready" and c.status == "True" for c in ready.status.conditions)
