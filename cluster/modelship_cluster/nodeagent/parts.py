"""The node side of the local cluster, as `Cluster.up()` / `Cluster.down()` run it:
the pod network (before the apiserver, which listens on the bridge's gateway), then the
node agent, kube-proxy and Prometheus (after the control plane), and a teardown that
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelship_cluster import binaries, controlplane, pki, podnet, prometheus
from modelship_cluster.nodeagent import kubeproxy

if TYPE_CHECKING:
    from modelship_cluster.cluster import Cluster

NODE_NAME = "modelship-node"
AGENT, PROXY, PROM, PROM_SD = "node-agent", "kube-proxy", "prometheus", "prometheus-discovery"


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def enabled() -> bool:
    """Pods run unless MODELSHIP_PODS=0 (then the cluster is a control plane only)."""
    return os.environ.get("MODELSHIP_PODS", "1") != "0" and os.geteuid() == 0


def prometheus_port() -> int:
    return int(os.environ.get("MODELSHIP_PROMETHEUS_PORT", str(prometheus.DEFAULT_PORT)))


def scrape_interval() -> str:
    return os.environ.get("MODELSHIP_SCRAPE_INTERVAL", prometheus.DEFAULT_INTERVAL)


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


def _wait_node_ready(cluster: Cluster, timeout: float, alive: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{cluster._what(AGENT)} exited during start-up")
        try:
            node = _api(cluster, "GET", f"/api/v1/nodes/{NODE_NAME}")
            conditions = node.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"node {NODE_NAME} not Ready after {timeout:.0f}s: {cluster._what(AGENT)}")


def _grant_prometheus(cluster: Cluster, user: str) -> None:
    """Prometheus' identity may read pods cluster-wide (the built-in `view` role)."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "modelship:prometheus"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    try:
        _api(cluster, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise


def start(cluster: Cluster, timeout: float) -> None:
    """Node agent, kube-proxy and Prometheus, once the control plane is ready."""
    if not enabled():
        _say("pods disabled (MODELSHIP_PODS=0 or not root): no node agent")
        return
    root = cluster.root
    node_kc = _identity(cluster, "node", f"system:node:{NODE_NAME}", ("system:nodes",))
    proxy_kc = _identity(cluster, "kube-proxy", "system:kube-proxy", ())
    prom_kc = _identity(cluster, "prometheus", "modelship:prometheus", ())
    agent = cluster.processes.start(
        AGENT,
        [sys.executable, "-m", "modelship_cluster.nodeagent", "--state-dir", str(root / "node"),
         "run", "--kubeconfig", str(node_kc), "--node-name", NODE_NAME],
    )  # fmt: skip
    _wait_node_ready(cluster, timeout, agent.alive)
    net = podnet.DEFAULT
    _say(f"node {NODE_NAME} Ready (pods on {net.pod_cidr}, bridge {net.bridge})")
    proxy_config = kubeproxy.write_config(root / "kube-proxy", proxy_kc, NODE_NAME)
    proxy = cluster.processes.start(
        PROXY, kubeproxy.args(binaries.toolset().path("kube-proxy"), proxy_config)
    )
    controlplane.wait_healthy(
        f"http://{kubeproxy.HEALTHZ}/healthz",
        ca=None,
        client=None,
        timeout=timeout,
        alive=proxy.alive,
        what=cluster._what(PROXY),
    )
    _grant_prometheus(cluster, "modelship:prometheus")
    port = prometheus_port()
    binary = prometheus.binary()
    discovery_url = None
    if not prometheus.has_kubernetes_sd(binary):
        listen = f"127.0.0.1:{port + 1}"
        cluster.processes.start(
            PROM_SD,
            [sys.executable, "-m", "modelship_cluster.prometheus", "discover",
             "--kubeconfig", str(prom_kc), "--listen", listen],
        )  # fmt: skip
        discovery_url = f"http://{listen}/targets"
    key = cluster.pki_dir / "prometheus"
    cfg = prometheus.config(
        cluster.config.server_url,
        cluster.ca,
        key.with_suffix(".crt"),
        key.with_suffix(".key"),
        interval=scrape_interval(),
        discovery_url=discovery_url,
    )
    config_file = prometheus.write_config(root / "prometheus", cfg)
    host = podnet.DEFAULT.gateway  # reachable from the host and from pods, not from eth0
    prom = cluster.processes.start(
        PROM, prometheus.args(config_file, root / "prometheus" / "data", port, host)
    )
    controlplane.wait_healthy(
        f"{prometheus.url(port, host)}/-/ready",
        ca=None,
        client=None,
        timeout=timeout,
        alive=prom.alive,
        what=cluster._what(PROM),
    )
    _publish_prometheus(cluster, host, port)
    _say(
        f"Prometheus at {prometheus.url(port, host)}, in the cluster "
        f"{IN_CLUSTER_PROMETHEUS} (scrape interval {scrape_interval()})"
    )


#: How pods reach Prometheus: the same name a typical cluster install gives it.
IN_CLUSTER_PROMETHEUS = "http://prometheus.monitoring.svc:9090"


def _publish_prometheus(cluster: Cluster, host: str, port: int) -> None:
    """A selector-less Service `prometheus` in `monitoring` whose EndpointSlice points at
    the host's Prometheus, so pods (the operator) use the usual in-cluster URL."""
    labels = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/part-of": "modelship"}
    objects = [
        ("/api/v1/namespaces", {"metadata": {"name": "monitoring"}}),
        (
            "/api/v1/namespaces/monitoring/services",
            {
                "metadata": {"name": "prometheus", "labels": labels},
                "spec": {"ports": [{"name": "http", "port": 9090, "targetPort": port}]},
            },
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/monitoring/endpointslices",
            {
                "metadata": {
                    "name": "prometheus-host",
                    "labels": labels
                    | {
                        "kubernetes.io/service-name": "prometheus",
                        "endpointslice.kubernetes.io/managed-by": "modelship-cluster",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            },
        ),
    ]
    for path, body in objects:
        try:
            _api(cluster, "POST", path, body)
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise


def teardown(cluster: Cluster | None = None) -> None:
    """After every process stopped: kube-proxy's rules, the pod network, stray containers."""
    from modelship_cluster.nodeagent.agent import marked_processes

    node_dir = cluster.root / "node" if cluster else None
    for pid in marked_processes(node_dir):  # containers of an agent that could not stop them
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    proxy_bin = binaries.kubernetes_bin_dir() / "kube-proxy"
    config = cluster.root / "kube-proxy" / "kube-proxy.yaml" if cluster else None
    kubeproxy.cleanup(proxy_bin, config)
    podnet.teardown()


def leftovers() -> list[str]:
    """Everything of the pod side still on the machine (empty after `teardown()`)."""
    from modelship_cluster.nodeagent.agent import marked_processes

    found = podnet.leftovers() + kubeproxy.leftovers()
    found += [f"container process {pid}" for pid in marked_processes()]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {m.split()[4]}" for m in mounts if "/node/pods/" in m.split()[4]]
    return found


def prometheus_url() -> str:
    return prometheus.url(prometheus_port(), podnet.DEFAULT.gateway)
