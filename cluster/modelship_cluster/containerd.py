"""containerd (Debian's package) as the local node's container runtime, with runc and the
CNI plugins, plus the image import that puts the project's images into it.

Its own socket, state and configuration, so it never meets a containerd the machine may
run for something else:

- root (images, snapshots): `<cache>/containerd/root`, kept across `down`/`up` so a warm
  start finds every image already imported and unpacked;
- state (sockets, network namespaces of pods): `/run/modelship/containerd`;
- the CRI plugin with runc (cgroupfs, as the kubelet), the sandbox image built here,
  `restrict_oom_score_adj` (this VM withholds CAP_SYS_RESOURCE from the sandbox otherwise),
  and unprivileged ports so non-root pods may bind ports under 1024 (CoreDNS on 53);
- every registry host points at a closed loopback port: an image that is not imported
  fails at once with ErrImagePull, and no pull ever leaves this machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelship_cluster import binaries

STATE_DIR = Path("/run/modelship/containerd")
SOCKET = STATE_DIR / "containerd.sock"
NAMESPACE = "k8s.io"
#: Registries a pod spec may name; each is sent to a port nothing listens on.
REGISTRY_HOSTS = ("docker.io", "registry.k8s.io", "quay.io", "ghcr.io", "gcr.io", "localhost")
CLOSED_REGISTRY = "http://127.0.0.1:9"


@dataclass(frozen=True)
class RuntimeConfig:
    root: Path
    state: Path = STATE_DIR
    cni_conf_dir: Path = STATE_DIR / "cni-net.d"
    cni_bin_dir: Path = Path("/usr/lib/cni")
    runc: Path = Path("/usr/sbin/runc")
    sandbox_image: str = "localhost/modelship-testbed/pause:3.10"

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def hosts_dir(self) -> Path:
        return self.state / "certs.d"

    @property
    def config_file(self) -> Path:
        return self.state / "config.toml"


def default_root() -> Path:
    return binaries.cache_root() / "containerd" / "root"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def config_toml(cfg: RuntimeConfig) -> str:
    """containerd's config.toml (version 2) for the local node (pure)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    tables: list[tuple[str, dict[str, object]]] = [
        ("", {"version": 2, "root": str(cfg.root), "state": str(cfg.state), "oom_score": 0,
              "disabled_plugins": ["io.containerd.snapshotter.v1.aufs",
                                   "io.containerd.snapshotter.v1.btrfs",
                                   "io.containerd.snapshotter.v1.zfs",
                                   "io.containerd.snapshotter.v1.devmapper",
                                   "io.containerd.tracing.processor.v1.otlp"]}),
        ("grpc", {"address": str(cfg.socket)}),
        ("ttrpc", {"address": str(cfg.socket) + ".ttrpc"}),
        ("metrics", {"address": ""}),
        (cri, {"sandbox_image": cfg.sandbox_image, "restrict_oom_score_adj": True,
               "enable_unprivileged_ports": True, "enable_unprivileged_icmp": True,
               "netns_mounts_under_state_dir": True, "disable_apparmor": True,
               "stream_server_address": "127.0.0.1", "stream_server_port": "0",
               "max_container_log_line_size": 16384}),
        (f"{cri}.containerd", {"snapshotter": "overlayfs", "default_runtime_name": "runc",
                               "discard_unpacked_layers": False}),
        (f"{cri}.containerd.runtimes.runc", {"runtime_type": "io.containerd.runc.v2"}),
        (f"{cri}.containerd.runtimes.runc.options",
         {"SystemdCgroup": False, "BinaryName": str(cfg.runc)}),
        (f"{cri}.cni", {"bin_dir": str(cfg.cni_bin_dir), "conf_dir": str(cfg.cni_conf_dir),
                        "max_conf_num": 1}),
        (f"{cri}.registry", {"config_path": str(cfg.hosts_dir)}),
    ]  # fmt: skip
    out: list[str] = []
    for name, values in tables:
        if name:
            out.append(f"\n[{name}]")
        out.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(out) + "\n"


def hosts_toml(host: str) -> str:
    """A registry host's hosts.toml: every pull goes to a closed loopback port (pure)."""
    return (
        f"# {host}: no registry is reachable from the local cluster; import images instead.\n"
        f'server = "{CLOSED_REGISTRY}"\n\n'
        f'[host."{CLOSED_REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def write_config(cfg: RuntimeConfig) -> Path:
    cfg.state.mkdir(parents=True, exist_ok=True)
    cfg.root.mkdir(parents=True, exist_ok=True)
    cfg.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    for host in REGISTRY_HOSTS:
        directory = cfg.hosts_dir / host
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts.toml").write_text(hosts_toml(host))
    cfg.config_file.write_text(config_toml(cfg))
    return cfg.config_file


def binary() -> Path:
    found = shutil.which("containerd")
    if not found:
        raise FileNotFoundError(
            "containerd is not installed: run `make system-deps` (Debian packages containerd, "
            "runc, containernetworking-plugins)"
        )
    return Path(found)


def args(cfg: RuntimeConfig) -> list[str]:
    return [str(binary()), f"--config={cfg.config_file}", "--log-level=warn"]


def ctr(cfg: RuntimeConfig, *argv: str, timeout: float = 300) -> str:
    """Run `ctr` against this containerd in the CRI namespace; raise with its stderr."""
    result = subprocess.run(
        ["ctr", f"--address={cfg.socket}", f"--namespace={NAMESPACE}", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`ctr {' '.join(argv)}` failed: {result.stderr.strip()}")
    return result.stdout


def wait_ready(cfg: RuntimeConfig, timeout: float, alive: object) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise RuntimeError("containerd exited during start-up")
        if cfg.socket.exists():
            try:
                ctr(cfg, "version", timeout=5)
                return
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                last = str(error)
        time.sleep(0.1)
    raise TimeoutError(f"containerd not ready after {timeout:.0f}s: {last}")


# -- images ------------------------------------------------------------------------------


def image_names(cfg: RuntimeConfig) -> set[str]:
    """References of every image in the CRI namespace."""
    return set(ctr(cfg, "images", "ls", "-q").split())


def _marker(cfg: RuntimeConfig, ref: str) -> Path:
    return cfg.root.parent / "imported" / hashlib.sha256(ref.encode()).hexdigest()[:24]


def import_images(cfg: RuntimeConfig, images: Iterable[tuple[str, Path, str]]) -> list[str]:
    """Import each (ref, archive, key) whose key differs from the one imported last (the
    marker lives beside containerd's root, which survives `down`); returns the refs
    imported now."""
    present = image_names(cfg)
    done = []
    for ref, archive, key in images:
        marker = _marker(cfg, ref)
        if ref in present and marker.exists() and marker.read_text() == key:
            continue
        started = time.monotonic()
        ctr(cfg, "images", "import", str(archive), timeout=600)
        if ref not in image_names(cfg):
            raise RuntimeError(f"importing {archive} did not give the image {ref}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(key)
        done.append(ref)
        print(f"==> imported {ref} in {time.monotonic() - started:.1f}s", flush=True)
    return done


def remove_all_pods(cfg: RuntimeConfig, crictl: Path | None) -> None:
    """Stop and remove every pod sandbox through CRI (so CNI releases their addresses)."""
    if crictl is None or not cfg.socket.exists():
        return
    endpoint = [str(crictl), f"--runtime-endpoint=unix://{cfg.socket}", "--timeout=20s"]
    subprocess.run([*endpoint, "rmp", "--all", "--force"], capture_output=True, check=False)


def leftover_mounts(cfg: RuntimeConfig, mountinfo: Sequence[str]) -> list[str]:
    """Mount points under containerd's state or root (pure)."""
    roots = (str(cfg.state), str(cfg.root))
    found = []
    for line in mountinfo:
        point = line.split()[4]
        if point.startswith(roots):
            found.append(point)
    return found
