"""The node agent's pod runtime on this machine, without an apiserver.

Real processes in real network and mount namespaces on a bridge of their own; the cluster
side (ConfigMaps, Secrets, tokens, Services) is given as plain data (`StaticCluster`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from modelship_cluster import podnet
from modelship_cluster.nodeagent.runtime import IPAM, NodeSettings, PodRuntime

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts)")

NET = podnet.PodNetConfig(
    bridge="mshrt0",
    pod_cidr="10.90.0.0/16",
    gateway="10.90.0.1",
    service_cidr="10.98.0.0/16",
    netns_prefix="mshrt-",
    veth_prefix="mshr",
    chain_prefix="MSHRT-",
)


class StaticCluster:
    """The cluster side of a pod as fixed data (no apiserver in these tests)."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, bytes]] | None = None) -> None:
        self.data = objects or {}
        self.tokens = 0

    async def objects(
        self, namespace: str, refs: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, bytes] | None]:
        return {ref: self.data.get(ref) for ref in refs}

    async def token(
        self, pod: Any, service_account: str, audience: str | None, seconds: int
    ) -> tuple[str, float]:
        self.tokens += 1
        return f"token-{service_account}-{self.tokens}", time.time() + seconds

    def services(self) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "spec": {"clusterIP": "10.98.0.1", "ports": [{"name": "https", "port": 443}]},
            },
            {
                "metadata": {"name": "web", "namespace": "team"},
                "spec": {"clusterIP": "10.98.0.20", "ports": [{"port": 80}]},
            },
        ]

    def headless_ips(self) -> dict[tuple[str, str], list[str]]:
        return {}


@pytest.fixture(scope="module")
def network() -> Iterator[podnet.PodNetConfig]:
    podnet.teardown(NET)
    podnet.ensure_bridge(NET)
    yield NET
    podnet.teardown(NET)
    assert podnet.leftovers(NET) == []


@pytest.fixture
def settings(network: podnet.PodNetConfig, tmp_path: Path) -> NodeSettings:
    return NodeSettings(state_dir=tmp_path / "node", net=network, backoff_initial=0.2)


def make_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"{abs(hash(name + str(time.time_ns()))):032x}"[:32],
            "labels": {"app": name},
        },
        "spec": {"nodeName": "modelship-node", "containers": containers, **spec},
    }


WEB = {
    "name": "web",
    "image": "modelship/testserver:1",
    "env": [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ],
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
    "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
}


async def until(
    check: Callable[[], bool], what: str, limit: float = 60.0, rt: PodRuntime | None = None
) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            detail = json.dumps(rt.status(), indent=1) if rt else ""
            raise AssertionError(f"timed out waiting for {what}\n{detail}")
        await asyncio.sleep(0.1)


def container(rt: PodRuntime, name: str) -> dict[str, Any]:
    status = rt.status()
    for s in status.get("initContainerStatuses", []) + status["containerStatuses"]:
        if s["name"] == name:
            return s  # type: ignore[no-any-return]
    raise KeyError(name)


def http(method: str, url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def run(
    settings: NodeSettings,
    pod: dict[str, Any],
    scenario: Callable[[PodRuntime], Awaitable[None]],
    cluster: StaticCluster | None = None,
) -> PodRuntime:
    async def main() -> PodRuntime:
        rt = PodRuntime(
            pod, settings, cluster or StaticCluster(), IPAM(settings.state_dir / "ipam", NET)
        )
        task = asyncio.create_task(rt.run())
        try:
            await scenario(rt)
        finally:
            deleted = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "now"}}
            rt.update(deleted)
            await asyncio.wait_for(task, 60)
        return rt

    return asyncio.run(main())


def test_pod_serves_http_with_env_volumes_identity_and_restarts(settings: NodeSettings) -> None:
    inspect = {
        "name": "inspect",
        "image": "modelship/shell:1",
        "command": ["sh", "-c"],
        "args": [
            "id -u; id -g; hostname; cat /var/run/secrets/kubernetes.io/serviceaccount/token; echo;"
            " cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo;"
            " cat /etc/config/greeting; echo; echo $GREETING $PASSWORD $(echo $POD_NAME);"
            " echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; grep web.team.svc /etc/hosts;"
            " touch /data/x && echo data-writable; touch /etc/x 2>/dev/null || echo root-read-only;"
            " echo done; sleep 3600"
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "GREETING",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
            },
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}},
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/config"},
            {"name": "data", "mountPath": "/data"},
            {"name": "sa", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
        ],
        "securityContext": {"runAsUser": 65532, "readOnlyRootFilesystem": True},
    }
    volumes = [
        {"name": "config", "configMap": {"name": "settings"}},
        {"name": "data", "emptyDir": {}},
        {
            "name": "sa",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {"configMap": {"name": "kube-root-ca.crt",
                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                                                "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                ]
            },
        },
    ]  # fmt: skip
    cluster = StaticCluster(
        {
            ("ConfigMap", "settings"): {"greeting": b"hello"},
            ("ConfigMap", "kube-root-ca.crt"): {"ca.crt": b"---CA---"},
            ("Secret", "creds"): {"pw": b"s3cret"},
        }
    )
    pod = make_pod("web-1", [WEB, inspect], volumes=volumes)
    seen: dict[str, Any] = {}

    async def scenario(rt: PodRuntime) -> None:
        await until(lambda: rt.status()["phase"] == "Running", "Running", rt=rt)
        await until(lambda: container(rt, "web")["ready"], "web ready", rt=rt)
        ip = rt.status()["podIP"]
        assert ip.startswith("10.90.")
        code, body = await asyncio.to_thread(http, "GET", f"http://{ip}:8080/")
        assert code == 200
        assert json.loads(body) == {"pod": "web-1", "namespace": "", "ip": ip, "hostname": "web-1"}
        await until(lambda: "done" in rt.read_log("inspect"), "inspect output", rt=rt)
        seen["inspect"] = rt.read_log("inspect").split("\n")
        # A crash restarts the container (restartPolicy Always) and counts it.
        await asyncio.to_thread(http, "POST", f"http://{ip}:8080/exit?code=3")
        await until(lambda: container(rt, "web")["restartCount"] == 1, "restart", rt=rt)
        await until(lambda: container(rt, "web")["ready"], "ready after restart", rt=rt)
        web = container(rt, "web")
        assert web["lastState"]["terminated"]["exitCode"] == 3
        assert "running" in web["state"]
        # Readiness follows the probe both ways.
        await asyncio.to_thread(http, "POST", f"http://{ip}:8080/fail-ready")
        await until(lambda: not container(rt, "web")["ready"], "not ready", rt=rt)
        assert rt.status()["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in rt.status()["conditions"]}
        assert ready["Ready"] == "False" and ready["ContainersReady"] == "False"
        await asyncio.to_thread(http, "POST", f"http://{ip}:8080/recover")
        await until(lambda: container(rt, "web")["ready"], "ready again", rt=rt)
        seen["netns"] = rt.netns

    rt = run(settings, pod, scenario, cluster)
    lines = seen["inspect"]
    assert lines[:3] == ["65532", "65532", "web-1"]
    assert lines[3] == "token-default-1"
    assert lines[4] == "team"
    assert lines[5] == "hello"
    assert lines[6] == "hello s3cret web-1"
    assert lines[7] == "10.98.0.1:443"
    assert "web.team.svc.cluster.local" in lines[8] and lines[8].startswith("10.98.0.20")
    assert lines[9:12] == ["data-writable", "root-read-only", "done"]
    # Deleted: processes gone, namespace gone, files gone, address released.
    assert not Path(seen["netns"]).exists()
    assert not rt.dir.exists()
    assert not any((settings.state_dir / "ipam").iterdir())
    assert not Path("/var/run/secrets/kubernetes.io").exists()  # nothing leaked to the host


def test_unknown_image_waits_and_runs_nothing(settings: NodeSettings) -> None:
    pod = make_pod("mystery", [{"name": "app", "image": "docker.io/library/nginx:1.27"}])

    async def scenario(rt: PodRuntime) -> None:
        await until(lambda: "waiting" in container(rt, "app")["state"] and
                    container(rt, "app")["state"]["waiting"]["reason"] == "ImageNotInMap",
                    "ImageNotInMap", rt=rt)  # fmt: skip
        waiting = container(rt, "app")["state"]["waiting"]
        assert "nginx:1.27" in waiting["message"] and "image map" in waiting["message"]
        assert rt.status()["phase"] == "Pending"
        assert all(c.proc is None for c in rt.containers)

    run(settings, pod, scenario)


def test_init_containers_run_first_and_a_failing_pod_fails(settings: NodeSettings) -> None:
    shell = "modelship/shell:1"
    pod = make_pod(
        "batch",
        [{"name": "main", "image": shell, "command": ["sh", "-c", "cat /work/order; exit 3"],
          "volumeMounts": [{"name": "w", "mountPath": "/work"}]}],
        initContainers=[
            {"name": f"init{i}", "image": shell,
             "command": ["sh", "-c", f"echo init{i} >> /work/order"],
             "volumeMounts": [{"name": "w", "mountPath": "/work"}]}
            for i in (1, 2)
        ],
        volumes=[{"name": "w", "emptyDir": {}}],
        restartPolicy="Never",
    )  # fmt: skip
    logs: dict[str, str] = {}

    async def scenario(rt: PodRuntime) -> None:
        await until(lambda: rt.status()["phase"] == "Failed", "Failed", rt=rt)
        logs["main"] = rt.read_log("main")

    rt = run(settings, pod, scenario)
    status = rt.status()
    assert [s["state"]["terminated"]["exitCode"] for s in status["initContainerStatuses"]] == [0, 0]
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "Error"
    assert logs["main"] == "init1\ninit2\n"


def test_liveness_failure_restarts_and_grace_period_ends_with_sigkill(
    settings: NodeSettings,
) -> None:
    stubborn = {
        "name": "stubborn",
        "image": "modelship/testserver:1",
        # Ignores SIGTERM and fails its liveness probe: killed after the grace period.
        "command": ["python", "-c", "import signal, time\n"
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen('/tmp/started', 'w')\n"
                    "while True: time.sleep(1)"],
        # Liveness probes start once the startup probe passed (SIGTERM is ignored by then).
        "startupProbe": {"exec": {"command": ["test", "-e", "/tmp/started"]}, "periodSeconds": 1,
                         "failureThreshold": 30},
        "livenessProbe": {"exec": {"command": ["test", "-e", "/tmp/never"]},
                          "periodSeconds": 1, "failureThreshold": 1},
    }  # fmt: skip
    pod = make_pod("stubborn", [stubborn], terminationGracePeriodSeconds=1)

    async def scenario(rt: PodRuntime) -> None:
        await until(lambda: container(rt, "stubborn")["restartCount"] >= 1, "restart", rt=rt)
        last = container(rt, "stubborn")["lastState"]["terminated"]
        assert last["exitCode"] == 137 and last["signal"] == 9

    run(settings, pod, scenario)


def test_root_is_refused(settings: NodeSettings) -> None:
    pod = make_pod("rooty", [{"name": "app", "image": "modelship/shell:1",
                              "securityContext": {"runAsUser": 0}}])  # fmt: skip

    async def scenario(rt: PodRuntime) -> None:
        await until(lambda: container(rt, "app")["state"].get("waiting", {}).get("reason")
                    == "CreateContainerConfigError", "config error", rt=rt)  # fmt: skip
        assert "root" in container(rt, "app")["state"]["waiting"]["message"]

    run(settings, pod, scenario)
