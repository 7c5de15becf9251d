"""The node agent's loop against the apiserver: the Node and its Lease, the pods bound to
this node (list + watch), their status, their deletion, and the Services pods resolve.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from modelship_cluster import podnet
from modelship_cluster.nodeagent import podspec, volumes
from modelship_cluster.nodeagent.kubeapi import ApiError, KubeClient, WatchExpired
from modelship_cluster.nodeagent.runtime import (
    IPAM,
    NODE_MARKER,
    POD_MARKER,
    NodeSettings,
    PodRuntime,
    now_iso,
    unreadable_for_others,
)

log = logging.getLogger("modelship.nodeagent")

KUBELET_VERSION = "v1.37.2"
AGENT_VERSION = "modelship-node-agent://0.1.0"
LEASE_SECONDS = 40
LEASE_RENEW = 10.0
STATUS_EVERY = 30.0


class ApiClusterView:
    """ConfigMaps, Secrets, tokens and Services for pods, from the apiserver."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.service_cache: dict[tuple[str, str], dict[str, Any]] = {}

    async def objects(
        self, namespace: str, refs: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, bytes] | None]:
        found: dict[tuple[str, str], dict[str, bytes] | None] = {}
        for kind, name in sorted(refs):
            plural = "configmaps" if kind == "ConfigMap" else "secrets"
            obj = await self.client.get_or_none(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
            found[(kind, name)] = None if obj is None else volumes.decode_object(kind, obj)
        return found

    async def token(
        self, pod: podspec.Pod, service_account: str, audience: str | None, seconds: int
    ) -> tuple[str, float]:
        meta = pod["metadata"]
        spec: dict[str, Any] = {
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        result = await self.client.create(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        expires = result["status"]["expirationTimestamp"]
        return result["status"]["token"], _epoch(expires)

    def services(self) -> list[dict[str, Any]]:
        return list(self.service_cache.values())

    def headless_ips(self) -> dict[tuple[str, str], list[str]]:
        return {}


def _epoch(timestamp: str) -> float:
    return time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def cleanup_stale(settings: NodeSettings) -> None:
    """What a previous agent left (it died without stopping its pods): remove it all."""
    for pid in marked_processes(settings.state_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for ns in podnet.our_netns(settings.net):
        podnet.delete_pod_netns(ns.removeprefix(settings.net.netns_prefix), settings.net)
    for sub in ("pods", "ipam"):
        shutil.rmtree(settings.state_dir / sub, ignore_errors=True)


def marked_processes(state_dir: Path | None = None) -> list[int]:
    """Container processes (they carry the pod marker in their environment), of the node
    whose state folder is `state_dir` if given, else of any node."""
    found = []
    needle = f"\0{POD_MARKER}=".encode()
    if state_dir is not None:
        needle = f"\0{NODE_MARKER}={state_dir}\0".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = b"\0" + (entry / "environ").read_bytes()
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie is no process left running (its parent reaps it)
        except (OSError, IndexError):
            continue
        if needle in environ:
            found.append(int(entry.name))
    return found


class NodeAgent:
    def __init__(self, settings: NodeSettings, client: KubeClient) -> None:
        self.settings = settings
        self.client = client
        self.view = ApiClusterView(client)
        self.ipam = IPAM(settings.state_dir / "ipam", settings.net)
        self.pods: dict[str, PodRuntime] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.dirty: set[str] = set()
        self.dirty_event = asyncio.Event()
        self.sent: dict[str, str] = {}
        self.hosts_event = asyncio.Event()
        self.ready = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def node(self) -> str:
        return self.settings.node_name

    # -- main ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(cleanup_stale, self.settings)
        for problem in unreadable_for_others(self.settings.venv):
            log.warning(
                "containers run as non-root users but cannot read %s: make the environment "
                "world-readable (chmod -R o+rX) or pods will fail to start",
                problem,
            )
        self.settings.pods_dir.mkdir(parents=True, exist_ok=True)
        self.settings.pods_dir.chmod(0o700)
        await self._register()
        background = [
            asyncio.create_task(self._forever(self._heartbeat)),
            asyncio.create_task(self._forever(self._status_patcher)),
            asyncio.create_task(self._forever(self._hosts_refresher)),
            asyncio.create_task(
                self._informer("/api/v1/services", {}, self._on_service, self._on_services)
            ),
            asyncio.create_task(
                self._informer(
                    "/api/v1/pods",
                    {"fieldSelector": f"spec.nodeName={self.node}"},
                    self._on_pod,
                    self._on_pods,
                )
            ),
        ]
        self.ready.set()
        log.info("node agent %s running (state %s)", self.node, self.settings.state_dir)
        await stop.wait()
        log.info("stopping: ending every pod on this node")
        for rt in self.pods.values():
            rt.stop()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=120)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._set_not_ready()
        await asyncio.to_thread(cleanup_stale, self.settings)

    async def _forever(self, loop: Callable[[], Any]) -> None:
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node agent loop %s failed; retrying", loop.__name__)
                await asyncio.sleep(1)

    # -- node and lease ------------------------------------------------------------------
    def _node_status(self) -> dict[str, Any]:
        now = now_iso()
        capacity = dict(self.settings.capacity)
        uname = platform.uname()

        def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._transition.get(kind, now),
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "modelship node agent is posting ready"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.settings.host_ip},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/etc/machine-id"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": uname.release,
                "osImage": _os_image(),
                "containerRuntimeVersion": AGENT_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    uname.machine, uname.machine
                ),
            },
        }

    async def _register(self) -> None:
        self._transition: dict[str, str] = {}
        path = f"/api/v1/nodes/{self.node}"
        while True:
            try:
                if await self.client.get_or_none(path) is None:
                    arch = self._node_status()["nodeInfo"]["architecture"]
                    await self.client.create(
                        "/api/v1/nodes",
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "metadata": {
                                "name": self.node,
                                "labels": {
                                    "kubernetes.io/hostname": self.node,
                                    "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": arch,
                                    "node.modelship.io/local": "true",
                                },
                            },
                            "spec": {
                                "podCIDR": self.settings.net.pod_cidr,
                                "podCIDRs": [self.settings.net.pod_cidr],
                            },
                        },
                    )
                    log.info("registered node %s", self.node)
                now = now_iso()
                self._transition = {
                    k: now for k in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
                }
                await self.client.patch(f"{path}/status", {"status": self._node_status()})
                await self._renew_lease()
                return
            except (ApiError, httpx.HTTPError) as error:
                log.warning("cannot register node yet: %s", error)
                await asyncio.sleep(1)

    async def _renew_lease(self) -> None:
        ns = "kube-node-lease"
        path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{self.node}"
        now = dt_micro()
        lease = await self.client.get_or_none(path)
        if lease is None:
            await self.client.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.node,
                        "namespace": ns,
                        "ownerReferences": [await self._node_owner()],
                    },
                    "spec": {
                        "holderIdentity": self.node,
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": now,
                    },
                },
            )
            return
        lease["spec"]["renewTime"] = now
        lease["spec"]["holderIdentity"] = self.node
        lease["spec"]["leaseDurationSeconds"] = LEASE_SECONDS
        await self.client.put(path, lease)

    async def _node_owner(self) -> dict[str, Any]:
        node = await self.client.get(f"/api/v1/nodes/{self.node}")
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "name": self.node,
            "uid": node["metadata"]["uid"],
        }

    async def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(LEASE_RENEW)
            await self._renew_lease()
            if time.monotonic() - last_status >= STATUS_EVERY:
                await self.client.patch(
                    f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()}
                )
                last_status = time.monotonic()

    async def _set_not_ready(self) -> None:
        status = self._node_status()
        for cond in status["conditions"]:
            if cond["type"] == "Ready":
                cond.update(
                    status="False",
                    reason="KubeletNotReady",
                    message="modelship node agent stopped",
                    lastTransitionTime=now_iso(),
                )
        await self.client.patch(f"/api/v1/nodes/{self.node}/status", {"status": status})

    # -- list + watch --------------------------------------------------------------------
    async def _informer(
        self,
        path: str,
        params: dict[str, str],
        on_event: Callable[[str, dict[str, Any]], None],
        on_list: Callable[[list[dict[str, Any]]], None],
    ) -> None:
        while True:
            try:
                listing = await self.client.get(path, **params)
                on_list(listing.get("items", []))
                rv = listing["metadata"]["resourceVersion"]
                while True:
                    async for event in self.client.watch(path, rv, **params):
                        rv = event["object"]["metadata"].get("resourceVersion", rv)
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], event["object"])
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                continue
            except (ApiError, httpx.HTTPError, ValueError, KeyError) as error:
                log.warning("watch %s: %s; listing again", path, error)
                await asyncio.sleep(1)

    def _on_services(self, items: list[dict[str, Any]]) -> None:
        self.view.service_cache = {
            (s["metadata"]["namespace"], s["metadata"]["name"]): s for s in items
        }
        self.hosts_event.set()

    def _on_service(self, kind: str, svc: dict[str, Any]) -> None:
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        if kind == "DELETED":
            self.view.service_cache.pop(key, None)
        else:
            self.view.service_cache[key] = svc
        self.hosts_event.set()

    async def _hosts_refresher(self) -> None:
        while True:
            await self.hosts_event.wait()
            await asyncio.sleep(0.1)  # coalesce bursts
            self.hosts_event.clear()
            for rt in list(self.pods.values()):
                if not rt.finished:
                    rt.refresh_hosts()

    def _on_pods(self, items: list[dict[str, Any]]) -> None:
        present = {p["metadata"]["uid"] for p in items}
        for uid, rt in list(self.pods.items()):
            if uid not in present:
                self._gone(rt)
        for pod in items:
            self._on_pod("SYNC", pod)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        rt = self.pods.get(uid)
        if kind == "DELETED":
            if rt is not None:
                self._gone(rt)
            return
        if rt is None:
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                if pod["metadata"].get("deletionTimestamp"):
                    self._spawn(self._delete_object(pod))
                return
            rt = PodRuntime(pod, self.settings, self.view, self.ipam, self._changed)
            self.pods[uid] = rt
            self.tasks[uid] = asyncio.create_task(self._run_pod(rt))
            log.info("pod %s: admitted (uid %s)", rt.key, uid)
            return
        rt.update(pod)
        if rt.finished and rt.deleting:
            self._spawn(self._finalize(rt))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _gone(self, rt: PodRuntime) -> None:
        """The pod object is gone from the API: stop it without deleting anything there."""
        rt.api_gone = True
        meta = {**rt.pod["metadata"], "deletionTimestamp": now_iso()}
        rt.update({**rt.pod, "metadata": meta})
        if rt.finished:
            self._spawn(self._finalize(rt))

    async def _run_pod(self, rt: PodRuntime) -> None:
        try:
            await rt.run()
        finally:
            if rt.deleting:
                await self._finalize(rt)

    async def _finalize(self, rt: PodRuntime) -> None:
        """After the pod's processes are gone: remove its files and the API object."""
        if self.pods.get(rt.uid) is not rt:
            return
        del self.pods[rt.uid]
        self.tasks.pop(rt.uid, None)
        self.sent.pop(rt.uid, None)
        await asyncio.to_thread(shutil.rmtree, rt.dir, True)
        if not rt.api_gone and not rt.stopping:
            await self._delete_object(rt.pod)
        log.info("pod %s: removed", rt.key)

    async def _delete_object(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("pod %s/%s: delete failed: %s", meta["namespace"], meta["name"], error)
        except httpx.HTTPError as error:
            log.warning("pod %s/%s: delete failed: %s", meta["namespace"], meta["name"], error)

    # -- status --------------------------------------------------------------------------
    def _changed(self, rt: PodRuntime) -> None:
        self.dirty.add(rt.uid)
        self.dirty_event.set()

    async def _status_patcher(self) -> None:
        while True:
            await self.dirty_event.wait()
            self.dirty_event.clear()
            batch, self.dirty = self.dirty, set()
            for uid in batch:
                rt = self.pods.get(uid)
                if rt is None or rt.deleting or rt.stopping:
                    continue
                status = rt.status()
                text = json.dumps(status, sort_keys=True)
                if self.sent.get(uid) == text:
                    continue
                meta = rt.pod["metadata"]
                try:
                    # A merge patch replaces lists whole: the status is what this node says.
                    await self.client.patch(
                        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                        {"metadata": {"uid": uid}, "status": status},
                        strategic=False,
                    )
                    self.sent[uid] = text
                except ApiError as error:
                    if error.status != 404:
                        log.warning("pod %s: status update failed: %s", rt.key, error)
                        self.dirty.add(uid)
                except httpx.HTTPError as error:
                    log.warning("pod %s: status update failed: %s", rt.key, error)
                    self.dirty.add(uid)
            if self.dirty:
                await asyncio.sleep(0.5)
                self.dirty_event.set()


def dt_micro() -> str:
    """Now as a MicroTime (what Lease.spec.renewTime wants)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"
