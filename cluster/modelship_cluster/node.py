"""The local cluster's node, as `Cluster.up()` / `Cluster.down()` run it: a real kubelet
with containerd, runc and the CNI bridge plugin, the project's images imported into
containerd, kube-proxy, cluster DNS (CoreDNS) and monitoring as users run it: the
Prometheus Operator in a pod, managing a Prometheus in a pod that PodMonitors and
ServiceMonitors configure (:mod:`modelship_cluster.monitoring`), and an S3 object store
(SeaweedFS, :mod:`modelship_cluster.objectstore`) that models can be loaded from.

Start order: the pod bridge (before the apiserver, which listens on its gateway address),
then after the control plane: images, containerd, kubelet (node Ready), kube-proxy,
CoreDNS, the monitoring CRDs and objects, the object store. `stop()` removes every pod
sandbox through CRI while containerd still runs, so CNI releases addresses and interfaces;
`teardown()` then
removes what stays on the machine (mounts, cgroups, iptables rules, the bridge) and
`leftovers()` lists whatever would still be there (the tests assert it is empty).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from modelship_cluster import (
    binaries,
    cni,
    containerd,
    controlplane,
    coredns,
    images,
    kubelet,
    kubeproxy,
    metricsserver,
    monitoring,
    netpolagent,
    objectstore,
    pki,
    podnet,
)

if TYPE_CHECKING:
    from modelship_cluster.cluster import Cluster

NODE_NAME = "modelship-node"
CONTAINERD, KUBELET, PROXY = "containerd", "kubelet", "kube-proxy"
FIREWALL = "kube-router"
#: Node processes, in the order `stop()` ends them.
STOP_ORDER = (KUBELET, CONTAINERD, FIREWALL, PROXY)
DNS_SERVICE_IP = "10.96.0.10"
RUN_DIR = Path("/run/modelship")
#: crictl reads it from CONTAINER_RUNTIME_ENDPOINT (`modelship-cluster env` exports it).
CRI_ENDPOINT = f"unix://{containerd.SOCKET}"


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def enabled() -> bool:
    """Pods run unless MODELSHIP_PODS=0 (then the cluster is a control plane only)."""
    return os.environ.get("MODELSHIP_PODS", "1") != "0" and os.geteuid() == 0


def why_disabled() -> str:
    if os.environ.get("MODELSHIP_PODS", "1") == "0":
        return "MODELSHIP_PODS=0"
    return "not root (a kubelet and containerd need root)"


#: The `prometheus` Service's address, fixed in the static band of the Service range so
#: the host (tests, benchmarks, `modelship-cluster status`) reaches it without a lookup.
PROMETHEUS_IP = "10.96.0.90"
#: The object store's Service (:mod:`modelship_cluster.objectstore`), fixed like Prometheus'.
OBJECT_STORE_IP = "10.96.0.91"


def scrape_interval() -> str:
    return os.environ.get("MODELSHIP_SCRAPE_INTERVAL", monitoring.SCRAPE_INTERVAL)


def runtime_config() -> containerd.RuntimeConfig:
    return containerd.RuntimeConfig(root=containerd.default_root())


def kubelet_paths(cluster: Cluster) -> kubelet.KubeletPaths:
    return kubelet.KubeletPaths(cluster.root / "node")


def before_control_plane() -> None:
    """The bridge must exist before the apiserver binds to its gateway address."""
    if enabled():
        podnet.ensure_bridge()


def _identity(cluster: Cluster, basename: str, user: str, groups: tuple[str, ...]) -> Path:
    ca = pki.CertPair(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key")
    pair = pki.issue(ca, cluster.pki_dir, basename, user, organizations=groups, client=True)
    path = cluster.root / f"{basename}.kubeconfig"
    path.write_text(
        controlplane.kubeconfig_yaml(
            cluster.config.name, cluster.config.server_url, ca.cert, pair, basename
        )
    )
    path.chmod(0o600)
    return path


def _api(cluster: Cluster, method: str, path: str, body: Any = None) -> Any:
    context = ssl.create_default_context(cafile=str(cluster.ca))
    context.load_cert_chain(str(cluster.admin_cert.cert), str(cluster.admin_cert.key))
    request = urllib.request.Request(
        cluster.config.server_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.loads(response.read() or b"{}")


def _create(cluster: Cluster, path: str, body: dict[str, Any]) -> None:
    try:
        _api(cluster, "POST", path, body)
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise


def kubectl_apply(cluster: Cluster, docs: list[dict[str, Any]]) -> None:
    result = subprocess.run(
        [str(binaries.toolset().kubectl), f"--kubeconfig={cluster.kubeconfig}", "apply",
         "--server-side", "--force-conflicts", "--field-manager=modelship-cluster", "-f", "-"],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {result.stderr.strip()}")


def _wait(what: str, check: Any, timeout: float, alive: Any, diagnose: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{diagnose()} exited during start-up")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} after {timeout:.0f}s: {diagnose()}")


def _node_ready(cluster: Cluster) -> bool:
    node = _api(cluster, "GET", f"/api/v1/nodes/{NODE_NAME}")
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _deployment_available(cluster: Cluster, namespace: str, name: str) -> bool:
    obj = _api(cluster, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    status = obj.get("status", {})
    return bool(status.get("availableReplicas")) and status.get("observedGeneration", 0) >= obj[
        "metadata"
    ].get("generation", 1)


def start(cluster: Cluster, timeout: float) -> None:
    """Images, containerd, kubelet, kube-proxy, the NetworkPolicy agent, CoreDNS and
    monitoring."""
    if not enabled():
        _say(f"pods disabled ({why_disabled()}): control plane only")
        return
    started = time.monotonic()
    root = cluster.root
    node_kc = _identity(cluster, "node", f"system:node:{NODE_NAME}", ("system:nodes",))
    proxy_kc = _identity(cluster, "kube-proxy", "system:kube-proxy", ())
    firewall_kc = _identity(cluster, "kube-router", netpolagent.USER, ())

    built = images.ensure_images()
    runtime = runtime_config()
    containerd.write_config(runtime)
    cni.write(runtime.cni_conf_dir, runtime.state / "cni-ipam")
    ctrd = cluster.processes.start(CONTAINERD, containerd.args(runtime))
    containerd.wait_ready(runtime, timeout, ctrd.alive)
    containerd.import_images(runtime, [(b.ref, b.archive, b.key) for b in built])

    ca = pki.CertPair(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key")
    serving = pki.issue(
        ca,
        cluster.pki_dir,
        "kubelet",
        f"system:node:{NODE_NAME}",
        dns_names=(NODE_NAME,),
        ip_addresses=(podnet.DEFAULT.gateway,),
        server=True,
    )
    paths = kubelet_paths(cluster)
    kubelet.prepare(
        paths,
        kubelet.config_yaml(
            node_ip=podnet.DEFAULT.gateway,
            ca_file=ca.cert,
            cert_file=serving.cert,
            key_file=serving.key,
            runtime_socket=runtime.socket,
            cluster_dns=DNS_SERVICE_IP,
            paths=paths,
        ),
    )
    agent = cluster.processes.start(
        KUBELET,
        kubelet.args(
            binaries.toolset().path("kubelet"), paths, node_kc, NODE_NAME, podnet.DEFAULT.gateway
        ),
    )
    _wait(
        f"node {NODE_NAME} not Ready",
        lambda: _node_ready(cluster),
        timeout,
        agent.alive,
        lambda: cluster._what(KUBELET),
    )
    _say(f"node {NODE_NAME} Ready (kubelet + containerd, pods on {podnet.DEFAULT.pod_cidr})")

    proxy_config = kubeproxy.write_config(root / "kube-proxy", proxy_kc, NODE_NAME)
    cluster.start_healthy(
        PROXY,
        kubeproxy.args(binaries.toolset().path("kube-proxy"), proxy_config),
        f"http://{kubeproxy.HEALTHZ}/healthz",
        timeout,
    )
    # Before any workload: NetworkPolicies are enforced from the first pod on.
    kubectl_apply(cluster, netpolagent.manifests())
    cluster.start_healthy(
        FIREWALL,
        netpolagent.args(
            binaries.toolset().path(binaries.NETWORK_POLICIES_COMMAND),
            firewall_kc,
            NODE_NAME,
            cluster.config.service_cidr,
        ),
        f"http://127.0.0.1:{netpolagent.HEALTH_PORT}/healthz",
        timeout,
    )
    kubectl_apply(cluster, coredns.manifests(DNS_SERVICE_IP))
    _start_monitoring(cluster)
    kubectl_apply(cluster, metricsserver.manifests(serving=_metrics_server_serving(cluster, ca)))
    kubectl_apply(cluster, objectstore.manifests(cluster_ip=OBJECT_STORE_IP))
    _wait(
        "cluster DNS (CoreDNS) not available",
        lambda: _deployment_available(cluster, coredns.NAMESPACE, coredns.NAME),
        timeout,
        agent.alive,
        lambda: (
            f"kube-system/coredns (see `kubectl -n kube-system describe pods`); "
            f"{cluster._what(KUBELET)}"
        ),
    )
    _wait_monitoring(cluster, timeout)
    _wait_object_store(cluster, timeout)
    _wait_metrics_server(cluster, timeout)
    _say(f"node parts up in {time.monotonic() - started:.1f}s (DNS at {DNS_SERVICE_IP})")


def _start_monitoring(cluster: Cluster) -> None:
    """The Prometheus Operator's CRDs (server-side: the Prometheus CRD is too large for
    client-side apply), then the operator and the Prometheus it manages
    (:mod:`modelship_cluster.monitoring`); `_wait_monitoring` waits for them."""
    crds = binaries.prometheus_operator_crds()
    files = [arg for path in crds for arg in ("-f", str(path))]
    _kubectl(cluster, "apply", "--server-side", "--force-conflicts",
             "--field-manager=modelship-cluster", *files)  # fmt: skip
    _kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", *files)
    kubectl_apply(
        cluster, monitoring.manifests(interval=scrape_interval(), cluster_ip=PROMETHEUS_IP)
    )


def _wait_for(
    cluster: Cluster, what: str, namespace: str, waits: Iterable[Sequence[str]], timeout: float
) -> None:
    """``kubectl wait`` with each of WAITS in turn; on a timeout, fail naming WHAT with the
    pods and Events of NAMESPACE."""
    for args in waits:
        try:
            _kubectl(cluster, "wait", *args, f"--timeout={timeout:.0f}s", timeout=timeout + 10)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            pods = _kubectl(cluster, "-n", namespace, "get", "pods,events", check=False)
            raise RuntimeError(f"{what} not up ({error}); in {namespace}:\n{pods}") from None


def _wait_monitoring(cluster: Cluster, timeout: float) -> None:
    _wait_for(cluster, "monitoring", monitoring.NAMESPACE, monitoring.WAIT_FOR, timeout)
    _say(
        f"Prometheus (Prometheus Operator {binaries.PROMETHEUS_OPERATOR_VERSION}) at "
        f"{prometheus_url()}, in the cluster {monitoring.URL} "
        f"(scrape interval {scrape_interval()}; PodMonitors and ServiceMonitors configure it)"
    )


def _metrics_server_serving(cluster: Cluster, ca: pki.CertPair) -> metricsserver.Serving:
    """metrics-server's serving certificate from the cluster CA: the apiserver verifies it
    (the APIService's caBundle) instead of skipping TLS verification."""
    pair = pki.issue(
        ca,
        cluster.pki_dir,
        "metrics-server",
        "metrics-server",
        dns_names=metricsserver.SERVING_DNS_NAMES,
        server=True,
    )
    return metricsserver.Serving(
        ca.cert.read_bytes(), pair.cert.read_bytes(), pair.key.read_bytes()
    )


def _wait_metrics_server(cluster: Cluster, timeout: float) -> None:
    _wait_for(cluster, "metrics-server", metricsserver.NAMESPACE, metricsserver.WAIT_FOR, timeout)
    _say(
        f"metrics-server v{binaries.METRICS_SERVER_VERSION}: {metricsserver.APISERVICE} "
        "available (HorizontalPodAutoscalers on CPU, kubectl top)"
    )


def _wait_object_store(cluster: Cluster, timeout: float) -> None:
    _wait_for(cluster, "object store", objectstore.NAMESPACE, objectstore.WAIT_FOR, timeout)
    _say(
        f"S3 object store (SeaweedFS) at {s3_endpoint()}, in the cluster {objectstore.URL} "
        f"(bucket {objectstore.BUCKET}; read-only key {objectstore.READER.access_key})"
    )


def s3_endpoint() -> str:
    """The test bed's S3 endpoint as the host reaches it."""
    return objectstore.s3_endpoint(OBJECT_STORE_IP)


def filer_url() -> str:
    """The object store's filer as the host reaches it (uploads without S3)."""
    return objectstore.filer_url(OBJECT_STORE_IP)


def _kubectl(cluster: Cluster, *argv: str, timeout: float = 90, check: bool = True) -> str:
    result = subprocess.run(
        [str(binaries.toolset().kubectl), f"--kubeconfig={cluster.kubeconfig}", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise RuntimeError(f"`kubectl {' '.join(argv[:3])} ...` failed: {detail}")
    return result.stdout


def stop(cluster: Cluster) -> None:
    """End the node's processes: the kubelet, then every pod through CRI while
    containerd still runs, then containerd and kube-proxy."""
    runtime = runtime_config()
    for name in STOP_ORDER:
        if name == CONTAINERD:
            crictl = binaries.toolset().path("crictl") if _has_crictl() else None
            containerd.remove_all_pods(runtime, crictl)
        cluster.processes.stop(name)


def _has_crictl() -> bool:
    try:
        binaries.toolset().path("crictl")
    except FileNotFoundError:
        return False
    return True


def crictl(*argv: str, timeout: float = 30) -> str:
    """Run crictl against the node's containerd; raise with its stderr."""
    result = subprocess.run(
        [str(binaries.toolset().path("crictl")), f"--runtime-endpoint={CRI_ENDPOINT}", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`crictl {' '.join(argv)}` failed: {result.stderr.strip()}")
    return result.stdout


def container_pid(container_id: str) -> int:
    """The host pid of a container's main process (`containerd://...` ids accepted)."""
    info = json.loads(crictl("inspect", "-o", "json", container_id.removeprefix("containerd://")))
    return int(info["info"]["pid"])


def shim_processes(runtime: containerd.RuntimeConfig | None = None) -> list[int]:
    """containerd shims of this node's containerd (they outlive a killed containerd)."""
    address = str((runtime or runtime_config()).socket)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address.encode() in argv:
            found.append(int(entry.name))
    return found


def _kill_tree(pids: list[int]) -> None:
    """SIGKILL each shim and every process below it (the containers it started)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    todo, seen = list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    for pid in seen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def teardown(cluster: Cluster | None = None) -> None:
    """After every process stopped: stray shims and containers, mounts, cgroups,
    kube-proxy's rules, the pod network."""
    runtime = runtime_config()
    _kill_tree(shim_processes(runtime))
    if cluster is not None:
        kubelet.unmount_all(kubelet_paths(cluster).root_dir)
    kubelet.unmount_all(runtime.state)
    kubelet.remove_cgroups()
    proxy_bin = binaries.kubernetes_bin_dir() / "kube-proxy"
    config = cluster.root / "kube-proxy" / "kube-proxy.yaml" if cluster else None
    kubeproxy.cleanup(proxy_bin, config)
    netpolagent.cleanup()
    podnet.teardown()
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR, ignore_errors=True)


def leftovers() -> list[str]:
    """Everything of the node still on the machine (empty after `teardown()`)."""
    runtime = runtime_config()
    found = podnet.leftovers() + kubeproxy.leftovers() + netpolagent.leftovers()
    found += [f"containerd shim process {pid}" for pid in shim_processes(runtime)]
    points = kubelet.mount_points()
    found += [f"mount {p}" for p in points if "/node/kubelet" in p or p.startswith(str(RUN_DIR))]
    found += [f"cgroup {p}" for p in kubelet.cgroup_leftovers()]
    if RUN_DIR.exists():
        found.append(f"runtime folder {RUN_DIR}")
    return found


def prometheus_url() -> str:
    """Prometheus as the host reaches it (its Service, through kube-proxy)."""
    return f"http://{PROMETHEUS_IP}:{monitoring.PORT}"
