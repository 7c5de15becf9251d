"""The control plane's processes: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler. Argument lists are built by pure functions so they can be read and tested
on their own; `ClusterConfig` holds every address and port in one place.
"""

from __future__ import annotations

import base64
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from modelship_cluster.binaries import Toolset
from modelship_cluster.pki import FRONT_PROXY_CLIENT, CertPair, front_proxy_paths


class ClusterConfig(BaseModel):
    """Addresses, ports and ranges of one local cluster (all on this machine only)."""

    name: str = "modelship"
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    apiserver_bind: str = Field(
        default="10.244.0.1",
        description="Address kube-apiserver listens on; the pod network's gateway once pods run.",
    )
    apiserver_advertise: str = Field(
        default="10.244.0.1",
        description="Address published in the `kubernetes` Service's endpoints (not loopback).",
    )
    apiserver_port: int = 6443
    controller_manager_port: int = 10257
    scheduler_port: int = 10259
    service_cidr: str = "10.96.0.0/16"
    pod_cidr: str = "10.244.0.0/16"
    kubernetes_service_ip: str = "10.96.0.1"

    @property
    def server_url(self) -> str:
        return f"https://{self.apiserver_bind}:{self.apiserver_port}"


def etcd_args(toolset: Toolset, config: ClusterConfig, data_dir: Path) -> list[str]:
    client = f"http://127.0.0.1:{config.etcd_client_port}"
    peer = f"http://127.0.0.1:{config.etcd_peer_port}"
    return [
        str(toolset.path("etcd")),
        "--name=local",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        "--log-level=warn",
        # A throwaway cluster: losing its data on a power cut is fine, waiting on fsync is not.
        "--unsafe-no-fsync",
        "--quota-backend-bytes=1073741824",
    ]


def apiserver_args(toolset: Toolset, config: ClusterConfig, pki: Path) -> list[str]:
    return [
        str(toolset.path("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{config.etcd_client_port}",
        f"--bind-address={config.apiserver_bind}",
        f"--advertise-address={config.apiserver_advertise}",
        f"--secure-port={config.apiserver_port}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--api-audiences=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={config.service_cidr}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=false",
        "--profiling=false",
        "--endpoint-reconciler-type=lease",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        *aggregation_args(pki),
        "--v=1",
    ]


def aggregation_args(pki: Path) -> list[str]:
    """The aggregation layer (APIServices such as metrics.k8s.io): the apiserver proxies to
    an aggregated API server with the front-proxy client certificate and publishes the
    front-proxy CA and these header names in kube-system/extension-apiserver-authentication,
    where the aggregated server reads them. It runs on the host, where pod IPs are routed,
    so it dials the Service's endpoints itself (--enable-aggregator-routing)."""
    front_proxy_ca, client = front_proxy_paths(pki)
    return [
        f"--requestheader-client-ca-file={front_proxy_ca.cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={client.cert}",
        f"--proxy-client-key-file={client.key}",
        "--enable-aggregator-routing=true",
    ]


def controller_manager_args(toolset: Toolset, config: ClusterConfig, root: Path) -> list[str]:
    pki = root / "pki"
    kubeconfig = root / "controller-manager.kubeconfig"
    return [
        str(toolset.path("kube-controller-manager")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={config.controller_manager_port}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        # Each controller acts as its own ServiceAccount, so RBAC is exercised for real.
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={config.service_cidr}",
        "--allocate-node-cidrs=false",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_args(toolset: Toolset, config: ClusterConfig, root: Path) -> list[str]:
    kubeconfig = root / "scheduler.kubeconfig"
    return [
        str(toolset.path("kube-scheduler")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={config.scheduler_port}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def kubeconfig_yaml(cluster_name: str, server: str, ca: Path, client: CertPair, user: str) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert),
                    "client-key-data": b64(client.key),
                },
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def wait_healthy(
    url: str,
    *,
    ca: Path | None,
    client: CertPair | None,
    timeout: float,
    alive: object = None,
    what: str,
) -> None:
    """Poll `url` until it answers 200 or `timeout` passes.

    `alive` is a callable returning False once the process behind the URL has died, so a
    crash is reported at once instead of after the whole timeout.
    """
    context: ssl.SSLContext | None = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if ca is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client:
            context.load_cert_chain(str(client.cert), str(client.key))
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise RuntimeError(f"{what} exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            last_error = f"HTTP {error.code}: {error.read()[:200]!r}"
        except (OSError, ssl.SSLError) as error:
            last_error = str(error)
        time.sleep(0.2)
    raise TimeoutError(f"{what} not healthy after {timeout:.0f}s at {url}: {last_error}")
