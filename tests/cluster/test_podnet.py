"""The pod network on this machine: bridge, guards, pods attached by the CNI bridge plugin
with the node's own CNI configuration, and a clean teardown.

Runs with its own bridge and ranges (not the cluster's), so it never disturbs a running
local cluster. The test makes the network namespaces itself (containerd does that for the
node) and calls the CNI plugin as containerd does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelship_cluster import cni, podnet

pytestmark = pytest.mark.usefixtures("root")

TEST_NET = podnet.PodNetConfig(
    bridge="mshtest0",
    pod_cidr="10.89.0.0/16",
    gateway="10.89.0.1",
    service_cidr="10.97.0.0/16",
    chain_prefix="MSHTEST-",
)
NETNS_PREFIX = "mshtest-"

SERVER = """
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the pod"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.TCPServer.allow_reuse_address = True
with socketserver.TCPServer(("0.0.0.0", 8080), H) as s:
    print("ready", flush=True)
    s.serve_forever()
"""

FETCH = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())
except OSError as e:
    print(f"unreachable: {e}"); sys.exit(3)
"""


def in_netns(path: str, *argv: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(["nsenter", f"--net={path}", *argv], text=True, **kw)  # type: ignore[call-overload, no-any-return]


class Pods:
    """Network namespaces attached to the bridge by the CNI bridge plugin (CNI_COMMAND=ADD
    with the node's conflist), as containerd attaches a pod sandbox."""

    def __init__(self, net: podnet.PodNetConfig, ipam_dir: Path) -> None:
        doc = json.loads(cni.conflist(ipam_dir, net))
        self.plugin = {"cniVersion": doc["cniVersion"], "name": doc["name"], **doc["plugins"][0]}
        self.made: list[str] = []

    def _cni(self, command: str, name: str) -> dict[str, object]:
        env = {
            **os.environ,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": name,
            "CNI_NETNS": f"/run/netns/{name}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/usr/lib/cni",
        }
        out = subprocess.run(
            ["/usr/lib/cni/bridge"], input=json.dumps(self.plugin), env=env,
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert out.returncode == 0, f"CNI {command}: {out.stdout} {out.stderr}"
        return json.loads(out.stdout) if out.stdout.strip() else {}

    def add(self, pod: str) -> tuple[str, str]:
        """A pod's namespace on the bridge; returns (netns path, pod IP)."""
        name = NETNS_PREFIX + pod
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.made.append(name)
        result = self._cni("ADD", name)
        ips = result["ips"]
        assert isinstance(ips, list)
        return f"/run/netns/{name}", ips[0]["address"].split("/")[0]

    def remove_all(self) -> None:
        for name in self.made:
            self._cni("DEL", name)
            subprocess.run(["ip", "netns", "delete", name], check=False)
        self.made.clear()


@pytest.fixture
def network() -> Iterator[podnet.PodNetConfig]:
    podnet.teardown(TEST_NET)
    podnet.ensure_bridge(TEST_NET)
    yield TEST_NET
    podnet.teardown(TEST_NET)


@pytest.fixture
def pods(network: podnet.PodNetConfig, tmp_path: Path) -> Iterator[Pods]:
    made = Pods(network, tmp_path / "ipam")
    yield made
    made.remove_all()


#: A network off the bridge that the host routes to: a namespace behind a veth, standing in
#: for "the rest of the world" whatever this machine's own routes and addresses are.
OUTSIDE_NETNS, OUTSIDE_LINK = NETNS_PREFIX + "outside", "mshtest-out"
OUTSIDE_HOST, OUTSIDE_IP = "203.0.113.1", "203.0.113.2"


@pytest.fixture
def outside() -> Iterator[str]:
    """The netns path of a host reachable from this machine at OUTSIDE_IP."""

    def clean() -> None:
        subprocess.run(["ip", "link", "delete", OUTSIDE_LINK], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "delete", OUTSIDE_NETNS], capture_output=True, check=False)

    clean()
    inside = ["ip", "-n", OUTSIDE_NETNS]
    try:
        for args in (
            ["ip", "netns", "add", OUTSIDE_NETNS],
            ["ip", "link", "add", OUTSIDE_LINK, "type", "veth", "peer", "name", "eth0",
             "netns", OUTSIDE_NETNS],
            ["ip", "addr", "add", f"{OUTSIDE_HOST}/24", "dev", OUTSIDE_LINK],
            ["ip", "link", "set", OUTSIDE_LINK, "up"],
            [*inside, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0"],
            [*inside, "link", "set", "eth0", "up"],
            [*inside, "link", "set", "lo", "up"],
            [*inside, "route", "add", "default", "via", OUTSIDE_HOST],
        ):  # fmt: skip
            subprocess.run(args, check=True, capture_output=True)
        yield f"/run/netns/{OUTSIDE_NETNS}"
    finally:
        clean()


def test_overlap_check_refuses_clashing_host_networks() -> None:
    assert podnet.overlaps(podnet.DEFAULT, ["192.0.2.0/24", "0.0.0.0/0"]) == []
    clash = podnet.overlaps(podnet.DEFAULT, ["10.0.0.0/8"])
    assert clash == ["10.0.0.0/8 overlaps 10.244.0.0/16", "10.0.0.0/8 overlaps 10.96.0.0/16"]
    assert podnet.overlaps(podnet.DEFAULT, ["10.96.3.0/24"]) == [
        "10.96.3.0/24 overlaps 10.96.0.0/16"
    ]


def test_pod_answers_host_and_other_pod_and_nothing_leaves(
    network: podnet.PodNetConfig, pods: Pods, outside: str
) -> None:
    a, a_ip = pods.add("a")
    b, b_ip = pods.add("b")
    # host-local hands out addresses from .1.0 up (below stays free for the host).
    assert a_ip.startswith("10.89.1.") and b_ip.startswith("10.89.1.") and a_ip != b_ip
    server = in_netns(a, sys.executable, "-c", SERVER, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        # From the host, by pod IP.
        with urllib.request.urlopen(f"http://{a_ip}:8080/", timeout=5) as response:
            assert response.read() == b"hello from the pod"
        # From another pod's namespace.
        other = in_netns(
            b, sys.executable, "-c", FETCH, f"http://{a_ip}:8080/", "5", stdout=subprocess.PIPE
        )
        out, _ = other.communicate(timeout=30)
        assert other.returncode == 0 and out.strip() == "hello from the pod"
        # The same port in the other pod is free: every pod has its own network stack.
        second = in_netns(b, sys.executable, "-c", SERVER, stdout=subprocess.PIPE)
        try:
            assert second.stdout is not None and second.stdout.readline().strip() == "ready"
        finally:
            second.kill()
            second.wait()
        # Pod traffic towards any address off the bridge is dropped, not forwarded: a server
        # the host reaches is out of the pods' reach, and our guard is what stopped it.
        world = in_netns(outside, sys.executable, "-c", SERVER, stdout=subprocess.PIPE)
        try:
            assert world.stdout is not None and world.stdout.readline().strip() == "ready"
            url = f"http://{OUTSIDE_IP}:8080/"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.read() == b"hello from the pod"  # the host: routed there
            before = _drop_count(network)
            leave = in_netns(b, sys.executable, "-c", FETCH, url, "1", stdout=subprocess.PIPE)
            out, _ = leave.communicate(timeout=30)
            assert leave.returncode == 3, out
            assert _drop_count(network) > before, _forwarding_state(network, b)
        finally:
            world.kill()
            world.wait()
    finally:
        server.kill()
        server.wait()


def test_teardown_leaves_nothing_even_with_a_pod_attached(tmp_path: Path) -> None:
    podnet.ensure_bridge(TEST_NET)
    attached = Pods(TEST_NET, tmp_path / "ipam")
    try:
        attached.add("c")
        assert podnet.leftovers(TEST_NET)  # there is something to remove
        podnet.teardown(TEST_NET)
        assert podnet.leftovers(TEST_NET) == []
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "mshtest0" not in links
    finally:
        for name in attached.made:
            subprocess.run(["ip", "netns", "delete", name], check=False)
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert "MSHTEST-" not in rules


def _drop_count(config: podnet.PodNetConfig) -> int:
    """Packets our guards dropped: in FORWARD, or in mangle POSTROUTING when a chain before
    ours in FORWARD (the cluster's kube-router and kube-proxy put theirs first) let the
    packet through."""
    total = 0
    for table, chain in (("filter", "FORWARD"), ("mangle", "POSTROUTING")):
        out = subprocess.run(
            ["iptables", "-w", "-t", table, "-n", "-v", "-x", "-L", config.chain_prefix + chain],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        total += sum(int(line.split()[0]) for line in out.splitlines()[2:] if " DROP " in line)
    return total


def _forwarding_state(config: podnet.PodNetConfig, pod: str) -> str:
    """What decides where a pod's packet goes, for a failure's message."""
    commands = [
        ["iptables", "-w", "-S", "FORWARD"],
        ["iptables", "-w", "-t", "mangle", "-S", "POSTROUTING"],
        ["iptables", "-w", "-n", "-v", "-x", "-L", f"{config.chain_prefix}FORWARD"],
        ["sysctl", "net.ipv4.ip_forward", f"net.ipv4.conf.{config.bridge}.forwarding"],
        ["ip", "route", "get", OUTSIDE_IP, "from", "10.89.1.9", "iif", config.bridge],
        ["nsenter", f"--net={pod}", "ip", "route"],
    ]
    parts = []
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        parts.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
    return "\n".join(parts)
