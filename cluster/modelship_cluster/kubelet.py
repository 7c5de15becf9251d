"""The kubelet (built from the same Kubernetes release as the control plane) of the local
node, talking CRI to the node's containerd.

What these machines need (see the project's notes on a real node): cgroup v1 with the
cgroupfs driver (`failCgroupV1: false`), no iptables utility chains (kube-proxy owns
them), and the kubelet in a mount namespace of its own where the three sysctls it would
set at start (`vm.overcommit_memory`, `kernel.panic`, `kernel.panic_on_oops`) read as the
values it wants, so the machine keeps its own. Its root folder is a shared mount, so the
volumes it mounts there (projected ServiceAccount tokens, Secrets) propagate to the host's
mount namespace, where containerd bind-mounts them into containers.

It serves its API (logs, exec, port-forward) on the node address only, with a certificate
from the cluster CA, x509 client authentication and webhook authorization: the apiserver
calls it with a client certificate of its own, like on any cluster.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Sysctls the kubelet sets at start, and the values it wants.
KUBELET_SYSCTLS: Mapping[str, str] = {
    "vm/overcommit_memory": "1",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
}
HEALTHZ_PORT = 10248
API_PORT = 10250


@dataclass(frozen=True)
class KubeletPaths:
    """Where one kubelet keeps its files (all under the cluster's state folder)."""

    state: Path

    @property
    def root_dir(self) -> Path:
        return self.state / "kubelet"

    @property
    def config_file(self) -> Path:
        return self.state / "kubelet-config" / "kubelet.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.state / "kubelet-config" / "resolv.conf"

    @property
    def sysctl_dir(self) -> Path:
        return self.state / "kubelet-config" / "sysctl"

    @property
    def pod_logs(self) -> Path:
        return self.state / "pod-logs"


def config_yaml(
    *,
    node_ip: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    runtime_socket: Path,
    cluster_dns: str,
    paths: KubeletPaths,
) -> str:
    """The KubeletConfiguration of the local node (pure)."""
    doc: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip,
        "port": API_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": HEALTHZ_PORT,
        "tlsCertFile": str(cert_file),
        "tlsPrivateKeyFile": str(key_file),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "clusterDNS": [cluster_dns],
        "clusterDomain": "cluster.local",
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        "makeIPTablesUtilChains": False,
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "registerNode": True,
        "maxPods": 250,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "nodeStatusUpdateFrequency": "5s",
        # Imported images are never garbage collected (no registry to pull them back from)
        # and a nearly full disk does not evict the test bed's pods.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        # A crashed container is restarted within 10 s however often it crashed (the
        # default grows to 5 min): the chaos suite SIGKILLs the operator 10 times in one
        # rollout, and what it tests is the rollout, not the back-off.
        "crashLoopBackOff": {"maxContainerRestartPeriod": "10s"},
        "shutdownGracePeriod": "0s",
        "volumePluginDir": str(paths.state / "kubelet-plugins"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "logging": {"format": "text"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def launcher_script(paths: KubeletPaths, kubelet_argv: Sequence[str]) -> str:
    """The shell run inside the kubelet's own mount namespace: make /proc private there,
    bind the sysctl files to the values the kubelet wants, then exec it (pure)."""
    lines = ["set -eu", "mount --make-rprivate /proc"]
    for name in KUBELET_SYSCTLS:
        source = paths.sysctl_dir / name.replace("/", ".")
        lines.append(f"mount --bind {shlex.quote(str(source))} /proc/sys/{name}")
    lines.append("exec " + " ".join(shlex.quote(a) for a in kubelet_argv))
    return "\n".join(lines) + "\n"


def args(
    binary: Path, paths: KubeletPaths, kubeconfig: Path, node_name: str, node_ip: str
) -> list[str]:
    kubelet = [
        str(binary),
        f"--config={paths.config_file}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={paths.root_dir}",
        f"--cert-dir={paths.state / 'kubelet-pki'}",
        f"--hostname-override={node_name}",
        f"--node-ip={node_ip}",
        "--v=1",
    ]
    script = launcher_script(paths, kubelet)
    return ["unshare", "--mount", "--propagation", "unchanged", "--", "/bin/sh", "-c", script]


def prepare(paths: KubeletPaths, config: str) -> None:
    """Write the configuration and sysctl files; make the root folder a shared mount."""
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(config)
    # No search domains or nameservers of the host leak into pods: ClusterFirst pods get
    # the cluster DNS, Default pods (CoreDNS itself) an empty resolver list.
    paths.resolv_conf.write_text("options ndots:5\n")
    paths.sysctl_dir.mkdir(parents=True, exist_ok=True)
    for name, value in KUBELET_SYSCTLS.items():
        (paths.sysctl_dir / name.replace("/", ".")).write_text(value + "\n")
    paths.pod_logs.mkdir(parents=True, exist_ok=True)
    root = paths.root_dir
    root.mkdir(parents=True, exist_ok=True)
    if not any(point == str(root) for point in mount_points()):
        subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
    subprocess.run(["mount", "--make-shared", str(root)], check=True)


def mount_points() -> list[str]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    return [line.split()[4] for line in lines]


def mounts_under(root: Path, points: Sequence[str]) -> list[str]:
    """Mount points at or under `root`, deepest first (pure)."""
    prefix = str(root)
    found = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_all(root: Path) -> None:
    """Unmount everything at or under `root` (volumes the kubelet left, the shared bind)."""
    for _ in range(3):
        points = mounts_under(root, mount_points())
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def cgroup_leftovers(base: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """The kubelet's `kubepods` cgroups, in every v1 hierarchy (and the unified one)."""
    if not base.is_dir():
        return []
    found = []
    for hierarchy in sorted(base.iterdir()):
        candidate = hierarchy / "kubepods"
        if candidate.is_dir():
            found.append(candidate)
    if (base / "kubepods").is_dir():
        found.append(base / "kubepods")
    return found


def remove_cgroups(base: Path = Path("/sys/fs/cgroup")) -> None:
    """Remove the kubepods cgroup trees once nothing runs in them (deepest first)."""
    for top in cgroup_leftovers(base):
        folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for folder in [*folders, top]:
            with contextlib.suppress(OSError):  # still in use: left for leftovers() to name
                folder.rmdir()
