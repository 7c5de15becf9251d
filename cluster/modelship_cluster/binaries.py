"""Pinned Kubernetes, etcd, helm, crictl, Prometheus, Prometheus Operator, SeaweedFS and
metrics-server binaries, built from Go modules and cached by version (and, for the
Prometheus, SeaweedFS and metrics-server builds, by a hash of their whole recipe: module,
version, build tags, ldflags, replaces).

There is no binary download here: every binary is compiled from its upstream Go module
through the Go module proxy. A build goes to a temporary folder and is renamed into the
cache only when complete, so an interrupted build is never mistaken for a cached one.
"""

from __future__ import annotations

import hashlib
import json
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
# Prometheus 3.x is published as the Go module version v0.3XX.Y (v0.316.0 is v3.16.0).
PROMETHEUS_VERSION = "3.16.0"
# The newest github.com/prometheus-operator/prometheus-operator version the Go module
# proxy serves here (later ones answer 403 "not available"); its CRDs come from the same
# module version (prometheus_operator_crds()).
PROMETHEUS_OPERATOR_VERSION = "0.85.0"
# SeaweedFS publishes no tagged Go module versions; this pseudo-version is the one the Go
# module proxy serves here. `weed` is the test bed's S3-compatible object store.
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"
# Kubernetes' resource metrics API (metrics.k8s.io) for HorizontalPodAutoscalers on CPU
# and `kubectl top`: scrapes each kubelet's /metrics/resource.
METRICS_SERVER_VERSION = "0.8.0"
METRICS_SERVER_MODULE = "sigs.k8s.io/metrics-server"
# NetworkPolicy enforcement for the node (the pod network's bridge plugin enforces none):
# kube-router's network policy controller, iptables and ipsets (see netpolagent.py for why
# not kube-network-policies). v2.1.0 is the newest version the Go module proxy serves.
NETWORK_POLICIES_VERSION = "2.1.0"
NETWORK_POLICIES_MODULE = "github.com/cloudnativelabs/kube-router/v2"
NETWORK_POLICIES_COMMAND = "kube-router"

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
    return Toolset(
        (
            kubernetes_bin_dir(),
            etcd_bin_dir(),
            helm_bin_dir(),
            crictl_bin_dir(),
            prometheus_bin_dir(),
            prometheus_operator_bin_dir(),
            seaweedfs_bin_dir(),
            metrics_server_bin_dir(),
            network_policies_bin_dir(),
        )
    )


# ------------------------------------------------------- Prometheus and its Operator

PROMETHEUS_COMMANDS = ("prometheus", "promtool")
PROMETHEUS_OPERATOR_COMMANDS = ("operator", "prometheus-config-reloader")
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
#: The Prometheus Operator's CRDs the test bed installs: the Prometheus controller watches
#: every one of these (Probe included, even unused); ScrapeConfig is optional to it and
#: Alertmanager/ThanosRuler/PrometheusAgent turn their controllers off when missing.
PROMETHEUS_OPERATOR_CRDS = ("prometheuses", "podmonitors", "servicemonitors", "prometheusrules",
                            "probes")  # fmt: skip


def prometheus_module_version(version: str = PROMETHEUS_VERSION) -> str:
    """The Go module version of a Prometheus 3.x release: 3.16.0 -> v0.316.0."""
    major, minor, patch = (int(p) for p in version.split("."))
    if major != 3:
        raise ValueError(f"only Prometheus 3.x has a v0.3XX Go module version, not {version}")
    return f"v0.{300 + minor}.{patch}"


@dataclass(frozen=True)
class GoRecipe:
    """What one Go build is made from; its key names the build's cache folder."""

    modules: tuple[str, ...]  # module@version, each
    packages: tuple[str, ...]
    tags: tuple[str, ...] = ()
    ldflags: str = "-s -w"
    # `old => new version` lines the wrapper module needs (a module's own replaces do not
    # apply when it is required by another module).
    replaces: tuple[str, ...] = ()

    def key(self) -> str:
        fields: dict[str, object] = {
            "modules": sorted(self.modules),
            "packages": sorted(self.packages),
            "tags": sorted(self.tags),
            "ldflags": self.ldflags,
            "cgo": "0",
            "flags": "-trimpath",
        }
        if self.replaces:  # absent when empty, so older recipes keep their cache keys
            fields["replaces"] = sorted(self.replaces)
        document = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(document.encode()).hexdigest()[:12]

    def build_args(self, out: Path) -> list[str]:
        """`go build` arguments writing every package's binary into OUT."""
        args = ["build", "-v", "-trimpath"]
        if self.tags:
            args += ["-tags", ",".join(self.tags)]
        return [*args, "-ldflags", self.ldflags, "-o", f"{out}/", *self.packages]


def _common_version_ldflags(version: str) -> str:
    common = "github.com/prometheus/common/version"
    return (
        f"-s -w -X {common}.Version={version} -X {common}.Branch=HEAD "
        f"-X {common}.Revision=v{version} -X {common}.BuildUser=modelship"
    )


def prometheus_recipe(version: str = PROMETHEUS_VERSION) -> GoRecipe:
    """prometheus and promtool from github.com/prometheus/prometheus.

    Tags: only file, HTTP and Kubernetes service discovery (`remove_all_sd` with
    `enable_kubernetes_sd`): the cloud SDKs of the other mechanisms are most of the build.
    No `builtinassets`: the web UI's JavaScript is not in the Go module (upstream's release
    builds it with npm), so this binary serves the HTTP API, /metrics and /-/ready|healthy
    but no UI pages (/query answers an error). Nothing here uses the UI.
    """
    module = f"github.com/prometheus/prometheus@{prometheus_module_version(version)}"
    return GoRecipe(
        modules=(module,),
        packages=tuple(f"github.com/prometheus/prometheus/cmd/{c}" for c in PROMETHEUS_COMMANDS),
        tags=("netgo", "remove_all_sd", "enable_kubernetes_sd"),
        ldflags=_common_version_ldflags(version),
    )


def prometheus_operator_recipe(version: str = PROMETHEUS_OPERATOR_VERSION) -> GoRecipe:
    """The operator and prometheus-config-reloader from the Prometheus Operator's module
    (its go.mod replaces its own pkg/apis/monitoring and pkg/client with local folders, so
    it is built from a wrapper module that requires all three at the same version)."""
    m = PROMETHEUS_OPERATOR_MODULE
    return GoRecipe(
        modules=(
            f"{m}@v{version}",
            f"{m}/pkg/apis/monitoring@v{version}",
            f"{m}/pkg/client@v{version}",
        ),
        packages=tuple(f"{m}/cmd/{c}" for c in PROMETHEUS_OPERATOR_COMMANDS),
        ldflags=_common_version_ldflags(version),
    )


def wrapper_go_mod(name: str, recipe: GoRecipe, go: str = "1.26.0") -> str:
    """go.mod of a module that requires RECIPE's modules, with only RECIPE's replaces (the
    required modules' own replaces do not apply)."""
    requires = "\n".join(f"\t{m.replace('@', ' ')}" for m in recipe.modules)
    text = f"module modelship.io/localcluster/{name}\n\ngo {go}\n\nrequire (\n{requires}\n)\n"
    if recipe.replaces:
        text += "\nreplace (\n" + "\n".join(f"\t{r}" for r in recipe.replaces) + "\n)\n"
    return text


def seaweedfs_recipe(version: str = SEAWEEDFS_VERSION) -> GoRecipe:
    """`weed` (SeaweedFS: master, volume, filer and S3 gateway in one binary).

    SeaweedFS' go.mod replaces github.com/tyler-smith/go-bip39 (deleted upstream, reached
    only through rclone) with its maintained fork; the wrapper module repeats that replace.
    The version ldflag fills `weed version`'s commit field with the module version.
    """
    return GoRecipe(
        modules=(f"{SEAWEEDFS_MODULE}@{version}",),
        packages=(f"{SEAWEEDFS_MODULE}/weed",),
        ldflags=f"-s -w -X {SEAWEEDFS_MODULE}/weed/util/version.COMMIT={version}",
        replaces=("github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0",),
    )


def metrics_server_recipe(version: str = METRICS_SERVER_VERSION) -> GoRecipe:
    """`metrics-server` from sigs.k8s.io/metrics-server (its go.mod has no replace, so the
    wrapper module only requires it). The version ldflags are upstream's Makefile's: it
    reports client-go's version package (`metrics-server --version`, its /version and
    OpenAPI info); the build date and commit stay unset, so the build is reproducible."""
    client_version = "k8s.io/client-go/pkg/version"
    return GoRecipe(
        modules=(f"{METRICS_SERVER_MODULE}@v{version}",),
        packages=(f"{METRICS_SERVER_MODULE}/cmd/metrics-server",),
        ldflags=(
            f"-s -w -X {client_version}.gitVersion=v{version} "
            f"-X {client_version}.gitTreeState=clean"
        ),
    )


def metrics_server_bin_dir(version: str = METRICS_SERVER_VERSION) -> Path:
    key = metrics_server_recipe(version).key()
    return cache_root() / "metrics-server" / f"v{version}-{key}" / "bin"


def network_policies_recipe(version: str = NETWORK_POLICIES_VERSION) -> GoRecipe:
    """`kube-router` from github.com/cloudnativelabs/kube-router/v2 (CGO off; the version
    ldflags are upstream's Makefile's, so `kube-router --version` names it)."""
    m = NETWORK_POLICIES_MODULE
    return GoRecipe(
        modules=(f"{m}@v{version}",),
        packages=(f"{m}/cmd/kube-router",),
        ldflags=f"-s -w -X {m}/pkg/version.Version=v{version}",
    )


def network_policies_bin_dir(version: str = NETWORK_POLICIES_VERSION) -> Path:
    key = network_policies_recipe(version).key()
    return cache_root() / "kube-router" / f"v{version}-{key}" / "bin"


def seaweedfs_bin_dir(version: str = SEAWEEDFS_VERSION) -> Path:
    return cache_root() / "seaweedfs" / f"{version}-{seaweedfs_recipe(version).key()}" / "bin"


def prometheus_bin_dir(version: str = PROMETHEUS_VERSION) -> Path:
    return cache_root() / "prometheus" / f"v{version}-{prometheus_recipe(version).key()}" / "bin"


def prometheus_operator_bin_dir(version: str = PROMETHEUS_OPERATOR_VERSION) -> Path:
    key = prometheus_operator_recipe(version).key()
    return cache_root() / "prometheus-operator" / f"v{version}-{key}" / "bin"


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


def _build_go_recipe(
    what: str, name: str, recipe: GoRecipe, final: Path, commands: Iterable[str]
) -> Path:
    def build(work: Path, out: Path) -> None:
        _log(f"building {what} from Go modules (first time only, minutes on a cold Go cache)")
        (work / "go.mod").write_text(wrapper_go_mod(name, recipe))
        (work / "tools.go").write_text(tools_go(recipe.packages))
        _run_go(["mod", "tidy"], work, f"resolving {what} modules")
        _run_go(recipe.build_args(out), work, f"compiling {what}")

    _build_into(final, commands, build)
    return final


def build_prometheus(version: str = PROMETHEUS_VERSION) -> Path:
    """prometheus and promtool (Kubernetes service discovery in, web UI assets out: see
    prometheus_recipe)."""
    return _build_go_recipe(
        f"Prometheus v{version}",
        "prometheusbin",
        prometheus_recipe(version),
        prometheus_bin_dir(version),
        PROMETHEUS_COMMANDS,
    )


def build_prometheus_operator(version: str = PROMETHEUS_OPERATOR_VERSION) -> Path:
    """The Prometheus Operator (`operator`) and `prometheus-config-reloader`."""
    return _build_go_recipe(
        f"Prometheus Operator v{version}",
        "promoperatorbin",
        prometheus_operator_recipe(version),
        prometheus_operator_bin_dir(version),
        PROMETHEUS_OPERATOR_COMMANDS,
    )


def build_seaweedfs(version: str = SEAWEEDFS_VERSION) -> Path:
    """`weed`, the test bed's S3-compatible object store (`weed server -s3`, `weed mini`)."""
    return _build_go_recipe(
        f"SeaweedFS {version}",
        "seaweedfsbin",
        seaweedfs_recipe(version),
        seaweedfs_bin_dir(version),
        ("weed",),
    )


def build_metrics_server(version: str = METRICS_SERVER_VERSION) -> Path:
    """`metrics-server`, the resource metrics API the test bed's HorizontalPodAutoscalers
    read (see modelship_cluster.metricsserver)."""
    return _build_go_recipe(
        f"metrics-server v{version}",
        "metricsserverbin",
        metrics_server_recipe(version),
        metrics_server_bin_dir(version),
        ("metrics-server",),
    )


def build_network_policies(version: str = NETWORK_POLICIES_VERSION) -> Path:
    """`kube-router`, the node's NetworkPolicy agent (see modelship_cluster.netpolagent)."""
    return _build_go_recipe(
        f"kube-router v{version}",
        "kuberouterbin",
        network_policies_recipe(version),
        network_policies_bin_dir(version),
        (NETWORK_POLICIES_COMMAND,),
    )


def prometheus_operator_crd_files(module_dir: Path) -> list[Path]:
    """The CRD files the test bed applies, inside the Prometheus Operator's module folder."""
    folder = module_dir / "example" / "prometheus-operator-crd"
    return [folder / f"monitoring.coreos.com_{name}.yaml" for name in PROMETHEUS_OPERATOR_CRDS]


def prometheus_operator_crds(version: str = PROMETHEUS_OPERATOR_VERSION) -> list[Path]:
    """Paths of the monitoring.coreos.com CRDs (Prometheus, PodMonitor, ServiceMonitor,
    PrometheusRule, Probe) of the same module version as the operator, from the Go module
    cache (downloaded if missing). The Prometheus CRD is larger than client-side apply's
    annotation limit: apply them with `kubectl apply --server-side`."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "go.mod").write_text("module probe\n\ngo 1.26.0\n")
        module_dir = _module_dir(f"{PROMETHEUS_OPERATOR_MODULE}@v{version}", Path(tmp))
    files = prometheus_operator_crd_files(module_dir)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"the Prometheus Operator module lacks {missing}")
    return files


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
            (prometheus_bin_dir(), PROMETHEUS_COMMANDS),
            (prometheus_operator_bin_dir(), PROMETHEUS_OPERATOR_COMMANDS),
            (seaweedfs_bin_dir(), ("weed",)),
            (metrics_server_bin_dir(), ("metrics-server",)),
            (network_policies_bin_dir(), (NETWORK_POLICIES_COMMAND,)),
        )
        for n in names
    )
    build_etcd()
    build_helm()
    build_crictl()
    build_prometheus()
    build_prometheus_operator()
    build_seaweedfs()
    build_metrics_server()
    build_network_policies()
    build_kubernetes()
    if not cached:
        _log(f"binaries ready in {time.monotonic() - started:.0f}s under {cache_root()}")
    return toolset()
