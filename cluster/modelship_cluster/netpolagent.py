"""The test bed's NetworkPolicy enforcement: kube-router's network policy controller
(``--run-firewall`` only: no BGP routing, no service proxy), built from its Go module and
run on the node as a host process beside kube-proxy, as kube-proxy itself runs here. The
pod network's bridge plugin enforces no policy; with this agent a policy the operator
renders is enforced on the node as Calico or Cilium would enforce it on a user's cluster.

How it works: for every pod a NetworkPolicy selects, kube-router keeps an iptables chain
(``KUBE-POD-FW-*``, jumped to from ``KUBE-ROUTER-FORWARD``/``-OUTPUT``/``-INPUT``) that
admits what the policies allow, matched by ipsets of peer pod IPs, and rejects the rest.
Bridged pod-to-pod frames pass iptables here (``bridge-nf-call-iptables=1``). Connections
from the node itself are admitted (kube-router's rule for traffic whose source is the
pod's local node), so kubelet probes and the tests on the host are never refused.

Why kube-router and not SIG Network's kube-network-policies: that agent answers each new
connection through the nftables ``queue`` expression, which needs a kernel built with
``CONFIG_NFT_QUEUE``; this machine's kernel has NFQUEUE only through xtables
(``nft_compat``), so kube-network-policies programs nothing here ("netlink receive: no
such file or directory"). kube-router v2.1.0 is the newest version the Go module proxy
serves; advisories are reported against it, so it is used only as the local cluster's
enforcement agent, with its firewall controller alone.

Pure: :func:`args` and :func:`manifests` render the command line and its read-only RBAC;
:func:`cleanup` removes its chains and ipsets on teardown (it leaves them in place when it
stops, so a restart never opens a gap).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from modelship_cluster import kubeproxy

NAME: Final = "kube-router"
USER: Final = "modelship:kube-router"
#: Its /healthz, on the node's loopback (kube-router listens on every address: the port
#: is only reachable from the host and the pods of this one node).
HEALTH_PORT: Final = 20244
CHAINS: Final = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")
IPSET_PREFIXES: Final = ("KUBE-SRC-", "KUBE-DST-", "kube-router-")


def args(binary: Path, kubeconfig: Path, node_name: str, service_cidr: str) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node_name}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        f"--service-cluster-ip-range={service_cidr}",
        f"--health-port={HEALTH_PORT}",
        "--metrics-port=0",
        "--v=1",
    ]


def manifests() -> list[dict[str, Any]]:
    """A ClusterRole reading what the policy controller watches, bound to its user."""
    meta = {
        "name": "modelship-testbed:kube-router",
        "labels": {
            "app.kubernetes.io/name": NAME,
            "app.kubernetes.io/part-of": "modelship-testbed",
        },
    }
    read = ["get", "list", "watch"]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta,
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                "verbs": read,
            },
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": meta["name"],
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
    }
    return [role, binding]


def _ipsets() -> list[str]:
    if shutil.which("ipset") is None:
        return []
    listed = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, check=False)
    return [n for n in listed.stdout.split() if n.startswith(IPSET_PREFIXES)]


def cleanup() -> None:
    """Remove kube-router's chains (and the jumps to them), then its ipsets."""
    for prefix in CHAINS:
        kubeproxy.remove_chains(prefix)
    for name in _ipsets():
        subprocess.run(["ipset", "destroy", name], capture_output=True, check=False)


def leftovers() -> list[str]:
    return [f"ipset {name}" for name in _ipsets()]
