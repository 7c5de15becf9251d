"""Run one pod as local processes: its sandbox (network namespace, volumes, hosts file),
its init containers then containers, probes, restarts with back-off, and termination.

A `PodRuntime` owns everything of one pod on this machine and reports what *is* through
`status()`; it needs the cluster only through the small `ClusterView` interface (objects,
tokens, Services), so it runs without an apiserver in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelship_cluster import imagemap, podnet
from modelship_cluster.nodeagent import dns, podspec, probes, volumes
from modelship_cluster.nodeagent.podspec import ConfigError, Pod

log = logging.getLogger("modelship.nodeagent")

LAUNCHER = Path(__file__).with_name("launch.py")
POD_MARKER = "MODELSHIP_POD_UID"  # in every container's environment: finds leftovers
NODE_MARKER = "MODELSHIP_NODE_DIR"  # ... and which node (state folder) started it
BASE_PREFIX = os.path.realpath(sys.base_prefix)  # the interpreter the venv is made from


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ClusterView(Protocol):
    """What a pod needs from the cluster."""

    async def objects(
        self, namespace: str, refs: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, bytes] | None]: ...

    async def token(
        self, pod: Pod, service_account: str, audience: str | None, seconds: int
    ) -> tuple[str, float]: ...

    def services(self) -> list[dict[str, Any]]: ...

    def headless_ips(self) -> dict[tuple[str, str], list[str]]: ...


@dataclass
class NodeSettings:
    """Where and how this node runs pods."""

    state_dir: Path
    node_name: str = "modelship-node"
    net: podnet.PodNetConfig = podnet.DEFAULT
    images: imagemap.ImageMap = field(default_factory=imagemap.load)
    venv: Path = Path(sys.prefix)
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    root_size: str = "512m"
    tmp_size: str = "256m"
    cluster_domain: str = "cluster.local"
    volume_resync: float = 30.0
    capacity: dict[str, str] = field(
        default_factory=lambda: {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**20}Mi",
            "pods": "110",
            "ephemeral-storage": "20Gi",
        }
    )

    @functools.cached_property
    def host_mounts(self) -> list[str]:
        return host_mounts([self.venv, Path(BASE_PREFIX)])

    @functools.cached_property
    def hidden_host_paths(self) -> list[str]:
        """Folders of the environment that the container's own /tmp or /run would hide
        (a checkout under /tmp, as CI makes): bound back read-only inside each container."""
        return hidden_paths([self.venv, Path(BASE_PREFIX), *source_dirs()])

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def host_ip(self) -> str:
        return self.net.gateway

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


class IPAM:
    """Pod addresses, one file per address in use (survives nothing: the node starts clean)."""

    def __init__(self, directory: Path, net: podnet.PodNetConfig) -> None:
        self.dir = directory
        self.net = net

    def allocate(self, owner: str) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            ip = podnet.first_free_ip(self.net, (p.name for p in self.dir.iterdir()))
            try:
                fd = os.open(self.dir / ip, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                continue
            os.write(fd, owner.encode())
            os.close(fd)
            return ip

    def release(self, ip: str) -> None:
        (self.dir / ip).unlink(missing_ok=True)


def unreadable_for_others(venv: Path) -> list[str]:
    """Files of the environment a non-root container cannot read or run (folders above the
    environment are opened per container by the launcher, on its private overlay)."""
    problems = []
    site = next(venv.glob("lib/python*/site-packages"), None)
    checks = [(venv / "bin" / "python", 0o005), (Path(BASE_PREFIX) / "bin", 0o005)]
    if site is not None:
        checks.append((site, 0o005))
    stdlib = next(Path(BASE_PREFIX).glob("lib/python3*/os.py"), None)
    if stdlib is not None:
        checks.append((stdlib, 0o004))
    for path, bits in checks:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & bits != bits:
            problems.append(f"{path} (mode {mode & 0o777:o})")
    return problems


#: Folders each container gets a fresh tmpfs for, hiding whatever the host has there.
PRIVATE_DIRS = ("/tmp", "/run")


def source_dirs() -> list[Path]:
    """Where modelship's own packages are (an editable install runs them from the checkout)."""
    found = []
    for name in ("modelship_cluster", "modelship_serving", "modelship_router",
                 "modelship_operator"):  # fmt: skip
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            found.append(Path(spec.origin).parent.parent)
    return found


def hidden_paths(paths: list[Path]) -> list[str]:
    """The paths among `paths` that lie under a container-private folder (pure)."""
    hidden = {
        str(p.resolve())
        for p in paths
        if any(str(p.resolve()).startswith(d + "/") for d in PRIVATE_DIRS)
    }
    # A folder inside another one is bound with it.
    return sorted(p for p in hidden if not any(p.startswith(q + "/") for q in hidden))


def host_mounts(paths: list[Path]) -> list[str]:
    """Mount points (other than /) holding `paths`: bound into each container's root."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    found = []
    for path in paths:
        real = str(path.resolve())
        best = max(
            (p for p in points if real == p or real.startswith(p.rstrip("/") + "/")), key=len
        )
        if best != "/" and not best.startswith(("/proc", "/sys", "/dev", "/run", "/tmp")):
            found.append(best)
    return sorted(set(found))


@dataclass
class ContainerRun:
    """One container of the pod: its process and what the status reports about it."""

    spec: Mapping[str, Any]
    init: bool
    proc: asyncio.subprocess.Process | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    started_event: asyncio.Event = field(default_factory=asyncio.Event)
    next_start: float = 0.0
    started_mono: float = 0.0
    runs: int = 0
    crashes: int = 0  # consecutive restarts, for the back-off
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    identity: tuple[int, int, list[int]] = (65532, 65532, [])
    env: dict[str, str] = field(default_factory=dict)
    kill_reason: str | None = None
    container_id: str = ""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def succeeded(self) -> bool:
        return self.state.get("terminated", {}).get("exitCode") == 0

    def status(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": f"modelship-image-map://{imagemap.normalize(self.spec.get('image', ''))}",
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started and "running" in self.state,
        }
        if self.container_id and ("running" in self.state or "terminated" in self.state):
            s["containerID"] = self.container_id
        return s


class PodRuntime:
    """Everything of one pod on this node."""

    def __init__(
        self,
        pod: Pod,
        settings: NodeSettings,
        cluster: ClusterView,
        ipam: IPAM,
        on_change: Callable[[PodRuntime], None] = lambda _: None,
    ) -> None:
        self.pod = pod
        self.settings = settings
        self.cluster = cluster
        self.ipam = ipam
        self.on_change = on_change
        meta = pod["metadata"]
        self.uid = str(meta["uid"])
        self.key = podspec.pod_key(pod)
        self.id = podspec.pod_id(pod)
        self.dir = settings.pods_dir / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        spec = pod.get("spec", {})
        self.inits = [ContainerRun(c, True) for c in spec.get("initContainers", [])]
        self.containers = [ContainerRun(c, False) for c in spec.get("containers", [])]
        self.ip: str | None = None
        self.netns: str | None = None
        self.volume_dirs: dict[str, str] = {}
        self.next_volume_sync = 0.0
        self.sandbox_error: str | None = None
        self.changed = asyncio.Event()
        self.deleting = False
        self.stopping = False  # the node agent stops: end the pod, keep the API object
        self.api_gone = False  # the API object is already gone
        self.finished = False  # the runtime stopped (terminal phase or deleted)
        self.start_time = now_iso()
        self._conditions: list[dict[str, Any]] = list(
            (pod.get("status") or {}).get("conditions") or []
        )
        self._phase = "Pending"

    # -- inputs ---------------------------------------------------------------------------
    def update(self, pod: Pod) -> None:
        """A newer version of the pod from the API (deletion starts termination)."""
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting = True
        self.changed.set()

    def stop(self) -> None:
        """End the pod on this node without touching it in the API (the agent stops)."""
        self.stopping = True
        self.changed.set()

    @property
    def restart_policy(self) -> str:
        return str(self.pod.get("spec", {}).get("restartPolicy", "Always"))

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while not (self.deleting or self.stopping) and self._phase not in (
                "Succeeded",
                "Failed",
            ):
                self.changed.clear()
                try:
                    await self._sync()
                except Exception:
                    log.exception("pod %s: sync failed", self.key)
                self._report()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.changed.wait()
        finally:
            await self._shutdown()
            self.finished = True
            self._report()

    def _report(self) -> None:
        self._phase = self.status()["phase"]
        self.on_change(self)

    async def _sync(self) -> None:
        if self.netns is None:
            await self._create_sandbox()
            if self.netns is None:
                return
        if time.monotonic() >= self.next_volume_sync:
            try:
                await self._sync_volumes()
            except Exception as error:
                log.warning("pod %s: volume refresh failed: %s", self.key, error)
                self.next_volume_sync = time.monotonic() + 5
        for c in self.inits:
            if c.succeeded():
                continue
            await self._drive(c)
            return
        for c in self.containers:
            await self._drive(c)

    async def _drive(self, c: ContainerRun) -> None:
        if c.proc is not None or self.deleting or self.stopping:
            return
        if "terminated" in c.state:
            return  # finished and not to be restarted
        if time.monotonic() < c.next_start:
            return
        await self._start(c)

    # -- sandbox -------------------------------------------------------------------------
    async def _create_sandbox(self) -> None:
        try:
            (self.dir / "etc").mkdir(parents=True, exist_ok=True)
            if self.ip is None:
                self.ip = self.ipam.allocate(self.key)
            await self._sync_volumes()
            self.refresh_hosts()
            name = self.pod["metadata"]["name"]
            self.netns = await asyncio.to_thread(
                podnet.create_pod_netns, self.id, self.ip, self.settings.net, name
            )
            self.sandbox_error = None
        except Exception as error:
            self.sandbox_error = str(error)
            for c in [*self.inits, *self.containers]:
                c.state = {"waiting": {"reason": "ContainerCreating", "message": str(error)}}
            log.warning("pod %s: sandbox not ready: %s", self.key, error)
            await asyncio.sleep(1.0)

    async def _sync_volumes(self) -> None:
        spec = self.pod.get("spec", {})
        ns = self.pod["metadata"]["namespace"]
        refs = {r for r in podspec.referenced_objects(self.pod)}
        objects = await self.cluster.objects(ns, refs) if refs else {}
        owner = self._uniform_owner()
        expiries = []
        for vol in spec.get("volumes", []):
            kind = volumes.volume_kind(vol)
            path = self.dir / "volumes" / vol["name"]
            if kind == "emptyDir":
                volumes.make_empty_dir(path)
            else:
                files, expires = await volumes.volume_files(
                    self.pod, vol, objects, self.cluster.token, self.ip or "", self.settings.host_ip
                )
                await asyncio.to_thread(volumes.write_atomic, path, files, owner)
                if expires is not None:
                    expiries.append(expires)
            self.volume_dirs[vol["name"]] = str(path)
        due = time.monotonic() + self.settings.volume_resync
        for expires in expiries:  # renew tokens at 80% of their life, like the kubelet
            left = expires - time.time()
            due = min(due, time.monotonic() + max(5.0, 0.8 * left))
        self.next_volume_sync = due

    def _uniform_owner(self) -> tuple[int, int] | None:
        """Owner for volume files when every container runs as the same user."""
        ids = set()
        for c in [*self.inits, *self.containers]:
            entry = self.settings.images.lookup(c.spec.get("image", ""))
            try:
                uid, gid, _ = podspec.identity(self.pod, c.spec, entry.user if entry else 65532)
            except ConfigError:
                return None
            ids.add((uid, gid))
        fs_group = (self.pod.get("spec", {}).get("securityContext") or {}).get("fsGroup")
        if len(ids) == 1:
            uid, gid = ids.pop()
            return uid, fs_group if fs_group is not None else gid
        return None

    def refresh_hosts(self) -> None:
        """(Re)write the pod's /etc/hosts, resolv.conf and hostname (atomically)."""
        if self.ip is None:
            return
        meta = self.pod["metadata"]
        hostname = self.pod.get("spec", {}).get("hostname") or meta["name"]
        content = {
            "hosts": dns.hosts_file(
                hostname,
                meta["namespace"],
                self.ip,
                self.cluster.services(),
                self.cluster.headless_ips(),
                self.settings.cluster_domain,
            ),
            "resolv.conf": dns.RESOLV_CONF,
            "hostname": hostname + "\n",
        }
        etc = self.dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        for name, text in content.items():
            path = etc / name
            if path.exists() and path.read_text() == text:
                continue
            tmp = etc / f".{name}.tmp"
            tmp.write_text(text)
            tmp.chmod(0o644)
            os.replace(tmp, path)

    # -- containers ----------------------------------------------------------------------
    async def _start(self, c: ContainerRun) -> None:
        meta = self.pod["metadata"]
        assert self.ip is not None and self.netns is not None
        try:
            entry, argv0 = imagemap.resolve(
                self.settings.images,
                c.spec.get("image", ""),
                c.spec.get("command"),
                c.spec.get("args"),
                self.settings.venv,
                self.settings.python,
            )
        except imagemap.UnknownImage as error:
            c.state = {"waiting": {"reason": "ImageNotInMap", "message": str(error)}}
            c.next_start = time.monotonic() + 30
            return
        try:
            refs = podspec.referenced_objects(self.pod)
            objects = await self.cluster.objects(meta["namespace"], refs) if refs else {}
            base = {
                "PATH": imagemap.default_path(self.settings.venv),
                "HOSTNAME": self.pod.get("spec", {}).get("hostname") or meta["name"],
                "HOME": "/",
                **{k: imagemap.substitute(v, self.settings.venv, self.settings.python)
                   for k, v in entry.env.items()},
            }  # fmt: skip
            env = podspec.container_env(
                self.pod,
                c.spec,
                objects,
                base=base,
                services=self._services_for_env(),
                pod_ip=self.ip,
                host_ip=self.settings.host_ip,
                capacity=self.settings.capacity,
            )
            env[POD_MARKER] = self.uid
            env[NODE_MARKER] = str(self.settings.state_dir)
            identity = podspec.identity(self.pod, c.spec, entry.user)
            mounts = podspec.mount_plan(c.spec, self.volume_dirs, env)
        except ConfigError as error:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
            c.next_start = time.monotonic() + 2
            return
        argv = [podspec.expand(a, env) for a in argv0]
        cdir = self.dir / "containers" / c.name
        (cdir / "mnt").mkdir(parents=True, exist_ok=True)
        term_log = cdir / "termination-log"
        term_log.write_bytes(b"")
        os.chown(term_log, identity[0], identity[1])
        term_path = c.spec.get("terminationMessagePath", "/dev/termination-log")
        mounts.append({"source": str(term_log), "target": term_path, "readOnly": False})
        csc = c.spec.get("securityContext") or {}
        launch = {
            "netns": self.netns,
            "hostname": base["HOSTNAME"],
            "scratch": str(cdir / "mnt"),
            "rootSize": self.settings.root_size,
            "tmpSize": self.settings.tmp_size,
            "hostMounts": self.settings.host_mounts,
            "hiddenHostPaths": self.settings.hidden_host_paths,
            "mounts": mounts,
            "podEtc": str(self.dir / "etc"),
            "traverse": [str(self.settings.venv), BASE_PREFIX],
            "readOnlyRoot": bool(csc.get("readOnlyRootFilesystem")),
            "uid": identity[0],
            "gid": identity[1],
            "groups": identity[2],
            "workingDir": c.spec.get("workingDir") or entry.working_dir,
            "argv": argv,
            "env": env,
        }
        spec_path = cdir / "launch.json"
        spec_path.write_text(json.dumps(launch))
        spec_path.chmod(0o600)
        logs = self.dir / "logs" / c.name
        logs.mkdir(parents=True, exist_ok=True)
        restarting = c.runs > 0
        if restarting:
            c.restart_count += 1
        log_path = logs / f"{c.restart_count}.log"
        error_path = cdir / "start-error"
        error_fd = os.open(error_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            c.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(LAUNCHER), str(spec_path), str(error_fd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(error_fd,),
                start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(error_fd)
            os.close(log_fd)
        c.runs += 1
        c.env, c.identity = env, identity
        c.kill_reason = None
        c.started_mono = time.monotonic()
        c.state = {"running": {"startedAt": now_iso()}}
        c.container_id = f"modelship://{self.id}-{c.name}-{c.runs}"
        c.ready = False
        c.started_event = asyncio.Event()
        c.started = False
        probes_spec = {k: c.spec.get(f"{k}Probe") for k in ("startup", "liveness", "readiness")}
        if not probes_spec["startup"]:
            self._mark_started(c)
        c.tasks = [asyncio.create_task(self._watch(c, c.proc, error_path, term_log))]
        if not c.init:
            for kind, probe in probes_spec.items():
                if probe:
                    c.tasks.append(asyncio.create_task(self._probe_loop(c, kind, probe)))
        log.info("pod %s: started container %s (pid %s)", self.key, c.name, c.proc.pid)

    def _mark_started(self, c: ContainerRun) -> None:
        c.started = True
        c.started_event.set()
        if not c.spec.get("readinessProbe") and not c.init:
            c.ready = True
        self.changed.set()

    def _services_for_env(self) -> list[dict[str, Any]]:
        ns = self.pod["metadata"]["namespace"]
        return [
            s
            for s in self.cluster.services()
            if s["metadata"]["namespace"] == ns
            or (s["metadata"]["namespace"], s["metadata"]["name"]) == ("default", "kubernetes")
        ]

    async def _watch(
        self,
        c: ContainerRun,
        proc: asyncio.subprocess.Process,
        error_path: Path,
        term_log: Path,
    ) -> None:
        code = await proc.wait()
        finished = now_iso()
        for task in c.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        exit_code = code if code >= 0 else 128 - code
        start_error = _read_small(error_path)
        message = _read_small(term_log)
        reason = "Completed" if exit_code == 0 else "Error"
        if start_error and exit_code == 128:
            reason, message = "StartError", start_error
        elif (
            not message
            and exit_code
            and c.spec.get("terminationMessagePolicy") == ("FallbackToLogsOnError")
        ):
            message = self.read_log(c.name)[-2048:]
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": c.state.get("running", {}).get("startedAt", finished),
            "finishedAt": finished,
            "containerID": c.container_id,
        }
        if code < 0:
            terminated["signal"] = -code
        if message:
            terminated["message"] = message
        c.proc = None
        c.ready = False
        c.started = False
        policy = self.restart_policy
        restart = exit_code != 0 and policy != "Never" if c.init else None
        if restart is None:
            restart = podspec.should_restart(policy, exit_code)
        if restart and not (self.deleting or self.stopping):
            if time.monotonic() - c.started_mono > 600:
                c.crashes = 0  # ran fine for 10 minutes: the back-off starts over
            c.crashes += 1
            delay = podspec.backoff_delay(
                c.crashes, self.settings.backoff_initial, self.settings.backoff_max
            )
            c.last_state = {"terminated": terminated}
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:g}s restarting failed container={c.name} "
                    f"pod={self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}",
                }
            }
            c.next_start = time.monotonic() + delay
        else:
            c.state = {"terminated": terminated}
        log.info("pod %s: container %s exited with %s", self.key, c.name, exit_code)
        self.changed.set()

    async def _probe_loop(self, c: ContainerRun, kind: str, probe: Mapping[str, Any]) -> None:
        period = float(probe.get("periodSeconds", 10))
        success_needed = int(probe.get("successThreshold", 1))
        failures_allowed = int(probe.get("failureThreshold", 3))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        if kind != "startup":
            await c.started_event.wait()
        successes = failures = 0
        proc = c.proc
        while proc is not None and c.proc is proc:
            ok, message = await probes.run_probe(
                probe,
                pod_ip=self.ip or "127.0.0.1",
                container=c.spec,
                pid=proc.pid,
                identity=c.identity,
                env=c.env,
            )
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if kind == "startup" and ok:
                self._mark_started(c)
                return
            if kind == "readiness":
                if ok and successes >= success_needed and not c.ready:
                    c.ready = True
                    self.changed.set()
                elif not ok and failures >= failures_allowed and c.ready:
                    c.ready = False
                    self.changed.set()
                    log.info("pod %s: %s not ready: %s", self.key, c.name, message)
            elif not ok and failures >= failures_allowed:
                c.kill_reason = f"{kind} probe failed: {message}"
                log.info("pod %s: killing %s: %s", self.key, c.name, c.kill_reason)
                grace = probe.get("terminationGracePeriodSeconds")
                await self._stop_process(
                    proc, podspec.grace_seconds(self.pod) if grace is None else grace
                )
                return
            await asyncio.sleep(period)

    async def _stop_process(self, proc: asyncio.subprocess.Process, grace: float) -> None:
        """SIGTERM the container's process group, SIGKILL after `grace` seconds."""
        if proc.returncode is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def _shutdown(self) -> None:
        grace = podspec.grace_seconds(self.pod)
        if self.stopping:
            grace = min(grace, 5.0)  # the whole node stops: do not hold `down` for long
        running = [c for c in [*self.inits, *self.containers] if c.proc is not None]
        procs = [c.proc for c in running if c.proc is not None]
        await asyncio.gather(*(self._stop_process(p, grace) for p in procs))
        for c in running:
            for task in c.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.netns is not None:
            await asyncio.to_thread(podnet.delete_pod_netns, self.id, self.settings.net)
            self.netns = None
        if self.ip is not None:
            self.ipam.release(self.ip)
        if self.deleting or self.stopping:
            await asyncio.to_thread(shutil.rmtree, self.dir, True)

    # -- outputs -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        init_statuses = [c.status() for c in self.inits]
        statuses = [c.status() for c in self.containers]
        init_done = all(c.succeeded() for c in self.inits)
        phase = podspec.phase(self.restart_policy, init_statuses, init_done, statuses)
        if self.finished and phase in ("Pending", "Running"):
            phase = self._phase
        ready = init_done and bool(self.containers) and all(c.ready for c in self.containers)
        if self.finished:
            ready = False
        self._conditions = podspec.conditions(
            self._conditions,
            now_iso(),
            sandbox_ready=self.netns is not None,
            initialized=init_done,
            containers_ready=ready,
        )
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": self._conditions,
            "hostIP": self.settings.host_ip,
            "hostIPs": [{"ip": self.settings.host_ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.inits:
            status["initContainerStatuses"] = init_statuses
        return status

    def log_path(self, container: str, previous: bool = False) -> Path | None:
        return container_log(self.dir, container, previous)

    def read_log(self, container: str) -> str:
        path = self.log_path(container)
        return path.read_text(errors="replace") if path else ""


def container_log(pod_dir: Path, container: str, previous: bool = False) -> Path | None:
    """The current (or previous) log file of a container."""
    files = sorted((pod_dir / "logs" / container).glob("*.log"), key=lambda p: int(p.stem))
    if previous:
        return files[-2] if len(files) > 1 else None
    return files[-1] if files else None


def _read_small(path: Path, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace").strip()
    except OSError:
        return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
