"""Service names inside pods: an /etc/hosts per pod that the node agent keeps current.

Why a hosts file rather than a DNS server: nothing extra listens on the host, there is no
port 53 to guard, and glibc reads /etc/hosts on every lookup, so a new Service resolves as
soon as the agent rewrites the file (atomically). The price: exact names only (no search
list, so every usual form is written out), A records only, no SRV, and headless Services
resolve only when the caller passes their addresses (the node agent does not yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

RESOLV_CONF = (
    "# The local cluster resolves Service names through /etc/hosts (kept current by the\n"
    "# node agent). There is no nameserver: the pod network never leaves this machine.\n"
    "options ndots:1 timeout:1 attempts:1\n"
)


def service_names(name: str, namespace: str, own_namespace: str, domain: str) -> list[str]:
    names = [f"{name}.{namespace}.svc.{domain}", f"{name}.{namespace}.svc", f"{name}.{namespace}"]
    if namespace == own_namespace:
        names.append(name)
    return names


def hosts_file(
    pod_name: str,
    pod_namespace: str,
    pod_ip: str,
    services: Iterable[Mapping[str, Any]],
    headless_ips: Mapping[tuple[str, str], list[str]],
    domain: str = "cluster.local",
) -> str:
    """The pod's /etc/hosts: localhost, the pod itself, then every Service's names."""
    lines = [
        "# Kubernetes-managed hosts file (modelship node agent).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{pod_ip}\t{pod_name}",
    ]
    for svc in sorted(services, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"])):
        meta, spec = svc["metadata"], svc.get("spec", {})
        names = " ".join(service_names(meta["name"], meta["namespace"], pod_namespace, domain))
        ip = spec.get("clusterIP")
        if spec.get("type") == "ExternalName":
            continue
        if ip and ip != "None":
            lines.append(f"{ip}\t{names}")
        else:
            for addr in headless_ips.get((meta["namespace"], meta["name"]), []):
                lines.append(f"{addr}\t{names}")
    return "\n".join(lines) + "\n"
