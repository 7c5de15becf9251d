"""kube-proxy (from the same Kubernetes release) for the local node, in iptables mode.

It runs in the host's network namespace and turns Service cluster IPs into DNAT rules
towards pod addresses on the bridge. Its configuration keeps everything on this machine:
health and metrics on 127.0.0.1, NodePorts only on the bridge's gateway address, no
localhost NodePorts (so `route_localnet` is never switched on) and no conntrack sysctl
changes. `cleanup()` removes every rule and chain it made.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

from modelship_cluster import podnet

HEALTHZ = "127.0.0.1:10256"
METRICS = "127.0.0.1:10249"


def bridge_calls_iptables() -> bool:
    """Whether bridged pod-to-pod frames pass iptables (br_netfilter): Service replies
    between two pods on the bridge are then un-NATed without masquerading."""
    try:
        return Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1"
    except OSError:
        return False


def config_yaml(
    kubeconfig: Path,
    node_name: str,
    net: podnet.PodNetConfig = podnet.DEFAULT,
    masquerade_all: bool | None = None,
) -> str:
    if masquerade_all is None:
        masquerade_all = not bridge_calls_iptables()
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node_name,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": HEALTHZ,
        "metricsBindAddress": METRICS,
        "clusterCIDR": net.pod_cidr,
        "nodePortAddresses": [f"{net.gateway}/32"],
        "iptables": {
            "masqueradeAll": masquerade_all,
            "localhostNodePorts": False,
            "syncPeriod": "30s",
            "minSyncPeriod": "0s",
        },
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_config(directory: Path, kubeconfig: Path, node_name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kube-proxy.yaml"
    content = config_yaml(kubeconfig, node_name)
    # kube-proxy exits when its config file is written to, even with the same content, so a
    # second `up` must leave an unchanged file alone.
    if not path.exists() or path.read_text() != content:
        path.write_text(content)
    return path


def args(binary: Path, config: Path) -> list[str]:
    return [str(binary), f"--config={config}", "--v=1"]


def cleanup(binary: Path | None, config: Path | None) -> None:
    """`kube-proxy --cleanup`, then remove whatever KUBE-* chain it leaves (KUBE-FIREWALL)."""
    if binary is not None and binary.exists() and config is not None and config.exists():
        subprocess.run(
            [str(binary), f"--config={config}", "--cleanup"], capture_output=True, check=False
        )
    remove_chains("KUBE-")


def remove_chains(prefix: str) -> None:
    """Delete every rule jumping to a chain named `prefix`*, then the chains (v4 and v6)."""
    for family in ("iptables", "ip6tables"):
        try:
            saved = subprocess.run(
                [f"{family}-save"], capture_output=True, text=True, check=False
            ).stdout
        except FileNotFoundError:
            continue
        table = ""
        chains: dict[str, list[str]] = {}
        jumps: list[tuple[str, list[str]]] = []
        for line in saved.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":") and line[1:].startswith(prefix):
                chains.setdefault(table, []).append(line[1:].split()[0])
            elif line.startswith("-A "):
                parts = shlex.split(line)
                if not parts[1].startswith(prefix) and f"-j {prefix}" in line:
                    jumps.append((table, parts[1:]))
        for tbl, rule in jumps:
            subprocess.run([family, "-w", "-t", tbl, "-D", *rule], capture_output=True)
        for tbl, names in chains.items():
            for name in names:
                subprocess.run([family, "-w", "-t", tbl, "-F", name], capture_output=True)
            for name in names:
                subprocess.run([family, "-w", "-t", tbl, "-X", name], capture_output=True)


def leftovers() -> list[str]:
    return podnet.iptables_lines(("KUBE-",))
