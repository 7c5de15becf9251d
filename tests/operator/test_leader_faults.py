"""Losing the Lease ends the leader at once, and the standby takes over, on a real API server.

Two operator processes with a 6 s Lease (renewed every 2 s, given up after 4 s without a
renewal): replica A talks to the API server through a loopback TCP proxy, replica B
directly. A leads and reconciles. Then the proxy stops passing bytes — open connections
stall, new ones are accepted and never answered: what a saturated client or an API server
that stopped answering looks like to A. A must exit (status 1) before anyone may take over,
B must hold the Lease within the Lease duration of A's last renewal (plus its retry period),
and B must then reconcile. Neither leaves kopf's annotations or a finalizer on a resource.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from apiserver import ApiServer, install_crd, start_apiserver, start_operator, stop_process
from modelship_cluster.ports import free_port

pytestmark = pytest.mark.slow

LEASE_SECONDS = 6.0


class StallingProxy:
    """A TCP proxy on loopback that can stop forwarding (and answering) at will."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.stalled = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    while self.stalled.is_set():  # noqa: ASYNC110 - a thread's flag
                        await asyncio.sleep(0.1)  # hold the bytes: no answer, no error
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            async with server:
                await server.serve_forever()

        self.loop.run_until_complete(main())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    for server in start_apiserver(tmp_path_factory.mktemp("apiserver")):
        install_crd(server, "modelship-system", "ml")
        yield server


def operator(name: str, kubeconfig: Path, logfile: Path) -> subprocess.Popen[bytes]:
    return start_operator(
        name, kubeconfig, logfile, lease_duration_seconds=str(LEASE_SECONDS), namespaces="ml"
    )


def lease(api: ApiServer) -> dict[str, Any]:
    found = api.kubectl(
        "-n", "modelship-system", "get", "lease", "modelship-operator", "-o", "json", check=False
    )
    return json.loads(found.stdout).get("spec", {}) if found.returncode == 0 else {}


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def create_and_wait_reconciled(api: ApiServer, name: str, timeout: float = 60) -> None:
    body = {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "model": {"version": "1.0.0", "uri": "file:///models/m.skops", "sha256": "a" * 64}
        },
    }
    api.kubectl("create", "-f", "-", input=json.dumps(body))

    def done() -> bool:
        got = json.loads(api.kubectl("-n", "ml", "get", "mdep", name, "-o", "json").stdout)
        status_done = (got.get("status") or {}).get("observedGeneration") == 1
        child = api.kubectl("-n", "ml", "get", "deployment", f"{name}-stable", check=False)
        return status_done and child.returncode == 0

    wait_for(f"{name} reconciled", done, timeout)
    # kopf keeps nothing on the resource (no diff-base or progress annotation, no
    # finalizer): the operator's only write to it is status.
    meta = json.loads(api.kubectl("-n", "ml", "get", "mdep", name, "-o", "json").stdout)["metadata"]
    assert not [key for key in meta.get("annotations") or {} if "kopf" in key]
    assert not meta.get("finalizers")


def parse_micro_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_a_leader_that_cannot_renew_exits_before_the_standby_takes_over(
    api: ApiServer, tmp_path: Path
) -> None:
    text = api.kubeconfig.read_text()
    upstream = int(text.split("https://127.0.0.1:")[1].split("'")[0])
    proxy = StallingProxy(upstream)
    via_proxy = tmp_path / "kubeconfig-a"
    via_proxy.write_text(text.replace(f"127.0.0.1:{upstream}", f"127.0.0.1:{proxy.port}"))

    a = operator("replica-a", via_proxy, tmp_path / "a.log")
    b: subprocess.Popen[bytes] | None = None
    try:
        wait_for("A holds the Lease", lambda: lease(api).get("holderIdentity") == "replica-a", 60)
        b = operator("replica-b", api.kubeconfig, tmp_path / "b.log")
        create_and_wait_reconciled(api, "before-fault")
        time.sleep(3)  # B is up and standing by, watching A renew
        assert b.poll() is None
        assert lease(api).get("holderIdentity") == "replica-a"

        last_renewal = parse_micro_time(lease(api)["renewTime"])
        proxy.stalled.set()
        code = wait_for("A exits", a.poll, LEASE_SECONDS * 2)
        a_exited = time.time()
        assert code == 1
        # A gave up at the renewal deadline (2/3 of the Lease after its last renewal) and
        # ended before the Lease expired: before anyone may take over.
        assert a_exited - last_renewal < LEASE_SECONDS, a_exited - last_renewal

        spec = wait_for(
            "B takes over",
            lambda: (s := lease(api)).get("holderIdentity") == "replica-b" and s,
            LEASE_SECONDS * 3,
        )
        acquired = parse_micro_time(spec["acquireTime"])
        assert acquired >= a_exited - 0.5, "B acted while A still believed it led"
        # Within the Lease duration of A's last renewal, plus B's retry period and slack.
        assert acquired - last_renewal < LEASE_SECONDS + LEASE_SECONDS / 5 + 2.0
        print(f"A exited {a_exited - last_renewal:.1f}s, B acquired {acquired - last_renewal:.1f}s "
              "after A's last renewal")  # fmt: skip
        create_and_wait_reconciled(api, "after-takeover")
        assert b.poll() is None
    finally:
        for process in (a, b):
            if process is not None:
                stop_process(process)
        proxy.stalled.clear()
        logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("*.log"))
        print(logs)
