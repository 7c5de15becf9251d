"""The pod network: one host-local bridge, one network namespace per pod, iptables guards.

Layout (defaults):

- bridge `mship0` with the gateway address 10.244.0.1/16 (the pod CIDR); the apiserver
  also listens there, so pods and the `kubernetes` Service reach it;
- per pod: a network namespace `mship-<id>` (under /run/netns, made with `ip netns`), a
  veth pair whose host end `mshv<id>` is a port of the bridge and whose pod end is `eth0`
  with the pod's address, and a default route via the gateway;
- forwarding is switched on for the bridge only (`net.ipv4.conf.mship0.forwarding`), never
  globally, and the `MODELSHIP-*` iptables chains make sure pod traffic stays on this
  machine: pod <-> pod and pod <-> host only; anything from or to the pod CIDR on another
  interface is dropped, and there is no NAT towards the outside.

Everything made here carries a `mship`/`MODELSHIP-` prefix and `teardown()` removes all of
it; `leftovers()` lists whatever would still be there (the tests assert it is empty).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class PodNetConfig:
    """Names and ranges of the pod network (one per machine)."""

    bridge: str = "mship0"
    pod_cidr: str = "10.244.0.0/16"
    gateway: str = "10.244.0.1"
    service_cidr: str = "10.96.0.0/16"
    netns_prefix: str = "mship-"
    veth_prefix: str = "mshv"
    chain_prefix: str = "MODELSHIP-"

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.pod_cidr)

    @property
    def state_dir(self) -> Path:
        """Where the network remembers what it found before it started (under /run)."""
        return Path(f"/run/modelship-podnet-{self.bridge}")

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


def netns_name(config: PodNetConfig, pod_id: str) -> str:
    return f"{config.netns_prefix}{pod_id}"


def veth_name(config: PodNetConfig, pod_id: str) -> str:
    name = f"{config.veth_prefix}{pod_id}"
    if len(name) > 15:
        raise ValueError(f"interface name {name!r} longer than 15 characters")
    return name


def first_free_ip(config: PodNetConfig, used: Iterable[str]) -> str:
    """The lowest pod address that is neither the gateway nor in `used`."""
    taken = {ipaddress.IPv4Address(u) for u in used}
    taken.add(ipaddress.IPv4Address(config.gateway))
    for host in config.pod_network.hosts():
        if host not in taken:
            return str(host)
    raise PodNetError(f"pod network {config.pod_cidr} is full")


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


def _is_mountpoint(path: Path) -> bool:
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[4] == str(path) for line in mounts)


def ensure_bridge(config: PodNetConfig = DEFAULT) -> None:
    """Create the bridge, its gateway address and the iptables guards (idempotent)."""
    if not _link_exists(config.bridge):
        check_host(config)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        marker = config.state_dir / "netns-dir-was-mounted"
        if not marker.exists():
            marker.write_text("yes" if _is_mountpoint(NETNS_DIR) else "no")
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


def create_pod_netns(
    pod_id: str, ip: str, config: PodNetConfig = DEFAULT, hostname: str | None = None
) -> str:
    """A network namespace with `eth0` = `ip` on the bridge; returns its path."""
    ns, veth = netns_name(config, pod_id), veth_name(config, pod_id)
    prefix = config.pod_network.prefixlen
    if (NETNS_DIR / ns).exists():
        delete_pod_netns(pod_id, config)
    _run(["ip", "netns", "add", ns])
    try:
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1")
        _run(["ip", "link", "set", veth, "master", config.bridge, "up"])
        # Hairpin: a pod reaching itself through a Service leaves and re-enters one port.
        Path(f"/sys/class/net/{veth}/brport/hairpin_mode").write_text("1")
        inside = ["ip", "-n", ns]
        _run([*inside, "link", "set", "lo", "up"])
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1"])
        _run([*inside, "addr", "add", f"{ip}/{prefix}", "dev", "eth0"])
        _run([*inside, "link", "set", "eth0", "up"])
        _run([*inside, "route", "add", "default", "via", config.gateway])
    except PodNetError:
        delete_pod_netns(pod_id, config)
        raise
    return str(NETNS_DIR / ns)


def pids_in_netns(path: Path) -> list[int]:
    """Processes whose network namespace is the one bound at `path`."""
    try:
        inode = path.stat().st_ino
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "ns" / "net").stat().st_ino == inode:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def delete_pod_netns(pod_id: str, config: PodNetConfig = DEFAULT) -> None:
    """Kill what still runs in the pod's namespace, then remove the namespace and veth."""
    ns = netns_name(config, pod_id)
    _kill_all(pids_in_netns(NETNS_DIR / ns))
    if (NETNS_DIR / ns).exists():
        _run(["ip", "netns", "delete", ns], check=False)
    veth = veth_name(config, pod_id)
    if _link_exists(veth):
        _run(["ip", "link", "delete", veth], check=False)


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.02)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def our_netns(config: PodNetConfig = DEFAULT) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(config.netns_prefix))


def our_links(config: PodNetConfig = DEFAULT) -> list[str]:
    names = (p.name for p in Path("/sys/class/net").iterdir())
    return sorted(n for n in names if n == config.bridge or n.startswith(config.veth_prefix))


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
    return iptables_lines((config.chain_prefix, config.bridge, config.veth_prefix))


def teardown(config: PodNetConfig = DEFAULT) -> None:
    """Remove every namespace, interface, chain and mount the pod network made."""
    for ns in our_netns(config):
        _kill_all(pids_in_netns(NETNS_DIR / ns))
        _run(["ip", "netns", "delete", ns], check=False)
    for link in our_links(config):
        if link != config.bridge:
            _run(["ip", "link", "delete", link], check=False)
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
    marker = config.state_dir / "netns-dir-was-mounted"
    made_netns_mount = marker.exists() and marker.read_text() == "no"
    if made_netns_mount and NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
        # `ip netns add` bind-mounts /run/netns onto itself the first time; undo that.
        while _is_mountpoint(NETNS_DIR):
            if not _ok(["umount", str(NETNS_DIR)]):
                break
        NETNS_DIR.rmdir()
    if config.state_dir.exists():
        for child in config.state_dir.iterdir():
            child.unlink()
        config.state_dir.rmdir()


def leftovers(config: PodNetConfig = DEFAULT) -> list[str]:
    """Everything of the pod network still present (empty after `teardown()`)."""
    found = [f"network namespace {ns}" for ns in our_netns(config)]
    found += [f"interface {link}" for link in our_links(config)]
    found += our_iptables_lines(config)
    if config.state_dir.exists():
        found.append(f"state folder {config.state_dir}")
    return found
