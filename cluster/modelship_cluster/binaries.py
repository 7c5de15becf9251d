"""Pinned Kubernetes, etcd and helm binaries, built from Go modules and cached by version.

There is no binary download here: every binary is compiled from its upstream Go module
through the Go module proxy. A build goes to a temporary folder and is renamed into the
cache only when complete, so an interrupted build is never mistaken for a cached one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "1.37.2"
ETCD_VERSION = "3.7.3"
HELM_VERSION = "3.22.0"
CRICTL_VERSION = "1.37.0"

KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubelet",
    "kubectl",
)


def cache_root() -> Path:
    """Where built binaries live: $MODELSHIP_CACHE, else ~/.cache/modelship."""
    env = os.environ.get("MODELSHIP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "modelship"


@dataclass(frozen=True)
class Toolset:
    """Paths of every binary the local cluster runs."""

    bin_dirs: tuple[Path, ...]

    def path(self, name: str) -> Path:
        for directory in self.bin_dirs:
            candidate = directory / name
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"{name} is not built yet: run `modelship-cluster build`")

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def helm(self) -> Path:
        return self.path("helm")


def kubernetes_bin_dir() -> Path:
    return cache_root() / "k8s" / f"v{KUBERNETES_VERSION}" / "bin"


def etcd_bin_dir() -> Path:
    return cache_root() / "etcd" / f"v{ETCD_VERSION}" / "bin"


def helm_bin_dir() -> Path:
    return cache_root() / "helm" / f"v{HELM_VERSION}" / "bin"


def crictl_bin_dir() -> Path:
    return cache_root() / "crictl" / f"v{CRICTL_VERSION}" / "bin"


def toolset() -> Toolset:
    return Toolset((kubernetes_bin_dir(), etcd_bin_dir(), helm_bin_dir(), crictl_bin_dir()))


def staging_replacements(kubernetes_go_mod: str, staging_version: str) -> list[str]:
    """`replace` lines mapping each k8s.io staging module to its published v0.X.Y.

    k8s.io/kubernetes' own go.mod points the staging modules at ./staging, which a
    module consumer cannot see; the list of names comes from that go.mod itself.
    """
    names = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_go_mod, re.M)
    if not names:
        raise ValueError("no staging replacements found in k8s.io/kubernetes go.mod")
    return [f"\t{name} => {name} v{staging_version}" for name in sorted(set(names))]


def kubernetes_wrapper_go_mod(kubernetes_go_mod: str, version: str = KUBERNETES_VERSION) -> str:
    _, minor, patch = version.split(".")
    staging = f"0.{minor}.{patch}"
    go_line = re.search(r"^go\s+(\S+)", kubernetes_go_mod, re.M)
    lines = [
        "module modelship.io/localcluster/k8sbin",
        "",
        f"go {go_line.group(1) if go_line else '1.26.0'}",
        "",
        f"require k8s.io/kubernetes v{version}",
        "",
        "replace (",
        *staging_replacements(kubernetes_go_mod, staging),
        ")",
        "",
    ]
    return "\n".join(lines)


def tools_go(packages: Iterable[str]) -> str:
    imports = "\n".join(f'\t_ "{p}"' for p in packages)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"


def _log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env["CGO_ENABLED"] = "0"
    return env


def _run_go(args: list[str], cwd: Path, what: str, extra_env: dict[str, str] | None = None) -> None:
    """Run a go command, printing a progress line every few seconds (go build -v lists
    each package as it compiles)."""
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is needed to build the local cluster binaries")
    started = time.monotonic()
    proc = subprocess.Popen(
        ["go", *args],
        cwd=cwd,
        env={**_go_env(), **(extra_env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    packages = 0
    last_report = started
    for line in proc.stdout:
        tail = [*tail[-40:], line.rstrip()]
        if not line.startswith(("go: ", "#")):
            packages += 1
        now = time.monotonic()
        if now - last_report >= 15:
            _log(f"{what}: {packages} packages compiled, {now - started:.0f}s")
            last_report = now
    if proc.wait() != 0:
        raise RuntimeError(f"{what} failed:\n" + "\n".join(tail))
    _log(f"{what}: done in {time.monotonic() - started:.0f}s")


def _module_dir(module: str, cwd: Path) -> Path:
    out = subprocess.run(
        ["go", "mod", "download", "-json", module],
        cwd=cwd,
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r'"Dir":\s*"([^"]+)"', out)
    if not match:
        raise RuntimeError(f"go mod download {module} gave no directory:\n{out}")
    return Path(match.group(1))


def _build_into(final_dir: Path, names: Iterable[str], build: Callable[[Path, Path], None]) -> None:
    if all((final_dir / n).exists() for n in names):
        return
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final_dir.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        out = work / "bin"
        out.mkdir()
        build(work, out)
        missing = [n for n in names if not (out / n).exists()]
        if missing:
            raise RuntimeError(f"build finished without {missing}")
        if final_dir.exists():
            shutil.rmtree(final_dir)
        out.rename(final_dir)


def build_kubernetes(version: str = KUBERNETES_VERSION) -> Path:
    """kube-apiserver, -controller-manager, -scheduler, -proxy and kubectl, built from
    k8s.io/kubernetes."""
    final = cache_root() / "k8s" / f"v{version}" / "bin"

    def build(work: Path, out: Path) -> None:
        _log(f"building Kubernetes v{version} from Go modules (first time only, takes a while)")
        (work / "go.mod").write_text("module probe\n\ngo 1.26.0\n")
        upstream = _module_dir(f"k8s.io/kubernetes@v{version}", work)
        go_mod = (upstream / "go.mod").read_text()
        (work / "go.mod").write_text(kubernetes_wrapper_go_mod(go_mod, version))
        packages = [f"k8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS]
        (work / "tools.go").write_text(tools_go(packages))
        _run_go(["mod", "tidy"], work, "resolving Kubernetes modules")
        _, minor, _ = version.split(".")
        ldflags = " ".join(
            [
                "-s -w",
                f"-X k8s.io/component-base/version.gitVersion=v{version}",
                "-X k8s.io/component-base/version.gitMajor=1",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                "-X k8s.io/component-base/version.gitTreeState=clean",
            ]
        )
        _run_go(
            ["build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(out) + "/", *packages],
            work,
            f"compiling Kubernetes v{version}",
        )

    _build_into(final, KUBERNETES_COMMANDS, build)
    return final


def build_etcd(version: str = ETCD_VERSION) -> Path:
    """etcd from go.etcd.io/etcd/server/v3 (its own go.mod uses local replaces, so it is
    built from a wrapper module that requires it)."""
    final = cache_root() / "etcd" / f"v{version}" / "bin"

    def build(work: Path, out: Path) -> None:
        _log(f"building etcd v{version} from Go modules")
        (work / "go.mod").write_text(
            f"module modelship.io/localcluster/etcdbin\n\ngo 1.26.0\n\n"
            f"require go.etcd.io/etcd/server/v3 v{version}\n"
        )
        (work / "tools.go").write_text(tools_go(["go.etcd.io/etcd/server/v3"]))
        _run_go(["mod", "tidy"], work, "resolving etcd modules")
        _run_go(
            [
                "build",
                "-v",
                "-trimpath",
                "-ldflags",
                "-s -w",
                "-o",
                str(out / "etcd"),
                "go.etcd.io/etcd/server/v3",
            ],
            work,
            f"compiling etcd v{version}",
        )

    _build_into(final, ["etcd"], build)
    return final


def build_helm(version: str = HELM_VERSION) -> Path:
    final = cache_root() / "helm" / f"v{version}" / "bin"

    def build(work: Path, out: Path) -> None:
        _log(f"building helm v{version} from Go modules")
        # helm's go.mod has no local replaces, so `go install module@version` works as is.
        _run_go(
            [
                "install",
                "-v",
                "-trimpath",
                "-ldflags",
                f"-s -w -X helm.sh/helm/v3/internal/version.version=v{version}",
                f"helm.sh/helm/v3/cmd/helm@v{version}",
            ],
            work,
            f"compiling helm v{version}",
            extra_env={"GOBIN": str(out)},
        )

    _build_into(final, ["helm"], build)
    return final


def build_crictl(version: str = CRICTL_VERSION) -> Path:
    """crictl, the CRI command line (inspect the node's pods, containers and images)."""
    final = crictl_bin_dir()

    def build(work: Path, out: Path) -> None:
        _log(f"building crictl v{version} from Go modules")
        _run_go(
            ["install", "-v", "-trimpath", "-ldflags", "-s -w",
             f"sigs.k8s.io/cri-tools/cmd/crictl@v{version}"],
            work,
            f"compiling crictl v{version}",
            extra_env={"GOBIN": str(out)},
        )  # fmt: skip

    _build_into(final, ["crictl"], build)
    return final


def ensure_all() -> Toolset:
    """Build whatever is missing; a warm cache returns at once."""
    started = time.monotonic()
    cached = all(
        (d / n).exists()
        for d, names in (
            (kubernetes_bin_dir(), KUBERNETES_COMMANDS),
            (etcd_bin_dir(), ("etcd",)),
            (helm_bin_dir(), ("helm",)),
            (crictl_bin_dir(), ("crictl",)),
        )
        for n in names
    )
    build_etcd()
    build_helm()
    build_crictl()
    build_kubernetes()
    if not cached:
        _log(f"binaries ready in {time.monotonic() - started:.0f}s under {cache_root()}")
    return toolset()
