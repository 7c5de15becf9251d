"""The pod network on this machine: bridge, per-pod namespaces, guards, and a clean teardown.

Runs with its own bridge and ranges (not the cluster's), so it never disturbs a running
local cluster.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from modelship_cluster import podnet

pytestmark = pytest.mark.usefixtures("root")

TEST_NET = podnet.PodNetConfig(
    bridge="mshtest0",
    pod_cidr="10.89.0.0/16",
    gateway="10.89.0.1",
    service_cidr="10.97.0.0/16",
    netns_prefix="mshtest-",
    veth_prefix="msht",
    chain_prefix="MSHTEST-",
)

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


@pytest.fixture
def network() -> Iterator[podnet.PodNetConfig]:
    podnet.teardown(TEST_NET)
    podnet.ensure_bridge(TEST_NET)
    yield TEST_NET
    podnet.teardown(TEST_NET)


def test_overlap_check_refuses_clashing_host_networks() -> None:
    assert podnet.overlaps(podnet.DEFAULT, ["192.0.2.0/24", "0.0.0.0/0"]) == []
    clash = podnet.overlaps(podnet.DEFAULT, ["10.0.0.0/8"])
    assert clash == ["10.0.0.0/8 overlaps 10.244.0.0/16", "10.0.0.0/8 overlaps 10.96.0.0/16"]
    assert podnet.overlaps(podnet.DEFAULT, ["10.96.3.0/24"]) == [
        "10.96.3.0/24 overlaps 10.96.0.0/16"
    ]


def test_first_free_ip_skips_gateway_and_used() -> None:
    assert podnet.first_free_ip(TEST_NET, []) == "10.89.0.2"
    assert podnet.first_free_ip(TEST_NET, ["10.89.0.2", "10.89.0.4"]) == "10.89.0.3"


def test_pod_answers_host_and_other_pod_and_nothing_leaves(
    network: podnet.PodNetConfig,
) -> None:
    a = podnet.create_pod_netns("t0000001", "10.89.0.2", network)
    b = podnet.create_pod_netns("t0000002", "10.89.0.3", network)
    server = in_netns(a, sys.executable, "-c", SERVER, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        # From the host, by pod IP.
        with urllib.request.urlopen("http://10.89.0.2:8080/", timeout=5) as response:
            assert response.read() == b"hello from the pod"
        # From another pod's namespace.
        other = in_netns(
            b, sys.executable, "-c", FETCH, "http://10.89.0.2:8080/", "5", stdout=subprocess.PIPE
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
        # Pod traffic towards any address off the bridge is dropped, not forwarded.
        before = _drop_count(network)
        leave = in_netns(
            b, sys.executable, "-c", FETCH, "http://192.0.2.1:80/", "1", stdout=subprocess.PIPE
        )
        out, _ = leave.communicate(timeout=30)
        assert leave.returncode == 3, out
        assert _drop_count(network) > before
    finally:
        server.kill()
        server.wait()


def test_teardown_leaves_nothing_even_with_processes_inside() -> None:
    podnet.ensure_bridge(TEST_NET)
    path = podnet.create_pod_netns("t0000003", "10.89.0.9", TEST_NET)
    sleeper = in_netns(path, "sleep", "600")
    assert podnet.leftovers(TEST_NET)  # there is something to remove
    podnet.teardown(TEST_NET)
    assert sleeper.wait(timeout=10) == -9  # killed with its namespace
    assert podnet.leftovers(TEST_NET) == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "mshtest0" not in links and "msht" not in links
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert "MSHTEST-" not in rules


def _drop_count(config: podnet.PodNetConfig) -> int:
    out = subprocess.run(
        ["iptables", "-w", "-n", "-v", "-x", "-L", f"{config.chain_prefix}FORWARD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if " DROP " in line)
