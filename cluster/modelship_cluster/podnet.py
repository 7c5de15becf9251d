"""The pod network's host side: one host-local bridge and the iptables guards around it.

Layout (defaults):

- bridge `mship0` with the gateway address 10.244.0.1/16 (the pod CIDR); the apiserver
  also listens there, so pods and the `kubernetes` Service reach it;
- per pod, the CNI bridge plugin (configured by `cni.py`, called by containerd) makes the
  veth pair whose host end is a port of the bridge and whose pod end is `eth0`;
- forwarding is switched on for the bridge only (`net.ipv4.conf.mship0.forwarding`), never
  globally, and the `MODELSHIP-*` iptables chains make sure pod traffic stays on this
  machine: pod <-> pod and pod <-> host only; anything from or to the pod CIDR on another
  interface is dropped, and there is no NAT towards the outside.

The bridge and the `MODELSHIP-` chains are all this module makes; `teardown()` removes them
(the pods' veths go with their sandboxes) and `leftovers()` lists whatever would still be
there (the tests assert it is empty).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PodNetConfig:
    """Names and ranges of the pod network (one per machine)."""

    bridge: str = "mship0"
    pod_cidr: str = "10.244.0.0/16"
    gateway: str = "10.244.0.1"
    service_cidr: str = "10.96.0.0/16"
    chain_prefix: str = "MODELSHIP-"

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.pod_cidr)

    @property
    def gateway_cidr(self) -> str:
        return f"{self.gateway}/{self.pod_network.prefixlen}"


DEFAULT = PodNetConfig()


class PodNetError(RuntimeError):
    """The pod network cannot be set up as asked (with the reason)."""


# -- pure decisions -----------------------------------------------------------------------


def overlaps(config: PodNetConfig, host_networks: Iterable[str]) -> list[str]:
    """Host networks (CIDRs) that overlap the pod or Service CIDR; default routes ignored."""
    ours = [ipaddress.IPv4Network(config.pod_cidr), ipaddress.IPv4Network(config.service_cidr)]
    found = []
    for text in host_networks:
        net = ipaddress.ip_network(text, strict=False)
        if net.version != 4 or net.prefixlen == 0:
            continue
        for mine in ours:
            if net.overlaps(mine):
                found.append(f"{net} overlaps {mine}")
    return found


def guard_rules(config: PodNetConfig) -> dict[tuple[str, str], list[list[str]]]:
    """Our iptables chains, by (table, chain), and their rules (as iptables arguments)."""
    br, pods, svc = config.bridge, config.pod_cidr, config.service_cidr
    p = config.chain_prefix
    return {
        ("filter", f"{p}FORWARD"): [
            # pod <-> pod, bridged or routed through the host (Service DNAT).
            ["-i", br, "-o", br, "-j", "ACCEPT"],
            # Nothing from or to the pod network crosses any other interface.
            ["-s", pods, "-j", "DROP"],
            ["-d", pods, "-j", "DROP"],
            ["-i", br, "-j", "DROP"],
            ["-o", br, "-j", "DROP"],
        ],
        ("filter", f"{p}INPUT"): [
            # The gateway address (apiserver, ...) answers the host and the pods only.
            ["-i", "lo", "-j", "RETURN"],
            ["-d", pods, "!", "-i", br, "-j", "DROP"],
            ["-i", br, "!", "-s", pods, "-j", "DROP"],
        ],
        ("mangle", f"{p}POSTROUTING"): [
            # Pod and Service addresses never leave through another interface. (Here, not
            # in OUTPUT: only POSTROUTING sees the interface chosen after kube-proxy's DNAT.)
            ["-o", "lo", "-j", "RETURN"],
            ["-o", br, "-j", "RETURN"],
            ["-d", pods, "-j", "DROP"],
            ["-s", pods, "-j", "DROP"],
            ["-d", svc, "-j", "DROP"],
        ],
    }


# -- commands ----------------------------------------------------------------------------


def _run(args: Sequence[str], *, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise PodNetError(f"`{' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def _ok(args: Sequence[str]) -> bool:
    return subprocess.run(list(args), capture_output=True).returncode == 0


def host_networks(config: PodNetConfig = DEFAULT) -> list[str]:
    """IPv4 networks configured on this machine (addresses and routes), ours excluded."""
    nets: list[str] = []
    for link in json.loads(_run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        if link.get("ifname") == config.bridge:
            continue
        for addr in link.get("addr_info", []):
            nets.append(f"{addr['local']}/{addr['prefixlen']}")
    for route in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        if route.get("dev") == config.bridge or route.get("type") in ("local", "broadcast"):
            continue
        dst = route.get("dst", "")
        if dst and dst != "default":
            nets.append(dst if "/" in dst else f"{dst}/32")
    return nets


def check_host(config: PodNetConfig = DEFAULT) -> None:
    """Refuse to start if the pod or Service CIDR overlaps a network of this machine."""
    conflicts = overlaps(config, host_networks(config))
    if conflicts:
        raise PodNetError(
            "the pod network would clash with this machine's networks: "
            + "; ".join(conflicts)
            + " (pick other CIDRs)"
        )


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def ensure_bridge(config: PodNetConfig = DEFAULT) -> None:
    """Create the bridge, its gateway address and the iptables guards (idempotent)."""
    if not _link_exists(config.bridge):
        check_host(config)
        _run(["ip", "link", "add", config.bridge, "type", "bridge"])
        # No IPv6 on the pod network: it is IPv4 only, and must not route anything else.
        Path(f"/proc/sys/net/ipv6/conf/{config.bridge}/disable_ipv6").write_text("1")
        _run(["ip", "addr", "add", config.gateway_cidr, "dev", config.bridge])
    _run(["ip", "link", "set", config.bridge, "up"])
    _ensure_chains(config)
    # Forwarding for packets arriving on the bridge only; net.ipv4.ip_forward stays as it is.
    Path(f"/proc/sys/net/ipv4/conf/{config.bridge}/forwarding").write_text("1")


def _ensure_chains(config: PodNetConfig) -> None:
    for (table, chain), rules in guard_rules(config).items():
        ipt = ["iptables", "-w", "-t", table]
        parent = chain.removeprefix(config.chain_prefix)
        if not _ok([*ipt, "-n", "-L", chain]):
            _run([*ipt, "-N", chain])
        _run([*ipt, "-F", chain])
        for rule in rules:
            _run([*ipt, "-A", chain, *rule])
        if not _ok([*ipt, "-C", parent, "-j", chain]):
            _run([*ipt, "-I", parent, "1", "-j", chain])


def our_links(config: PodNetConfig = DEFAULT) -> list[str]:
    return [config.bridge] if _link_exists(config.bridge) else []


def _iptables_save(binary: str = "iptables-save") -> list[str]:
    try:
        return _run([binary], check=False).splitlines()
    except FileNotFoundError:
        return []


def iptables_lines(markers: Sequence[str]) -> list[str]:
    """iptables/ip6tables lines (all tables) that contain one of `markers`."""
    lines = []
    for binary in ("iptables-save", "ip6tables-save"):
        for line in _iptables_save(binary):
            if line.startswith("#"):
                continue
            if any(m in line for m in markers):
                lines.append(f"{binary}: {line}")
    return lines


def our_iptables_lines(config: PodNetConfig = DEFAULT) -> list[str]:
    """Lines naming our chains or interfaces."""
    return iptables_lines((config.chain_prefix, config.bridge))


def teardown(config: PodNetConfig = DEFAULT) -> None:
    """Remove the bridge and the chains the pod network made."""
    if _link_exists(config.bridge):
        _run(["ip", "link", "delete", config.bridge], check=False)
    for table, chain in guard_rules(config):
        ipt = ["iptables", "-w", "-t", table]
        parent = chain.removeprefix(config.chain_prefix)
        while _ok([*ipt, "-C", parent, "-j", chain]):
            _run([*ipt, "-D", parent, "-j", chain])
        if _ok([*ipt, "-n", "-L", chain]):
            _run([*ipt, "-F", chain])
            _run([*ipt, "-X", chain])


def leftovers(config: PodNetConfig = DEFAULT) -> list[str]:
    """Everything of the pod network still present (empty after `teardown()`)."""
    found = [f"interface {link}" for link in our_links(config)]
    return found + our_iptables_lines(config)
