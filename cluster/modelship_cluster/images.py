"""The project's container images, built on this machine without a container daemon.

No image can be pulled here, so everything starts from Debian's mirror: a
``debootstrap --variant=minbase`` tree slimmed like ``debian:bookworm-slim`` becomes the
base image (``localhost/modelship/debian:bookworm-slim``), and ``buildah bud`` builds each
image from its Dockerfile on top of it (the same Dockerfiles build with ``docker build``,
from ``docker.io/library/debian:bookworm-slim``). Every image is exported as a
docker-archive that ``ctr -n k8s.io images import`` names with the image's ref, with its
SBOM (CycloneDX JSON) beside it.

An image is rebuilt only when one of its inputs changes: its cache key hashes its
Dockerfile, every file its build copies, the Python lock file, the build recipe and the
base image's key. The pure parts (keys, plans, command lines, SBOM documents) are plain
functions; the I/O (buildah, debootstrap, gcc, go) sits below them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from modelship_cluster import binaries

REPO = Path(__file__).resolve().parents[2]
LOCK_FILE = "requirements/lock.txt"
BASE_REF = "localhost/modelship/debian:bookworm-slim"
DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "minbase"
PAUSE_VERSION = "3.10"
COREDNS_VERSION = "1.15.0"
# CoreDNS listens here (not 53) so it runs as 65532 with no capability; the cluster DNS
# Service maps port 53 to it.
COREDNS_PORT = 1053
PROMETHEUS_VERSION = binaries.PROMETHEUS_VERSION
PROMETHEUS_OPERATOR_VERSION = binaries.PROMETHEUS_OPERATOR_VERSION
SEAWEEDFS_VERSION = binaries.SEAWEEDFS_VERSION
METRICS_SERVER_VERSION = binaries.METRICS_SERVER_VERSION
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Bump when the build logic below changes what an image contains: every key changes.
RECIPE = "1"
SYSTEM_DEPS_HINT = "run `make system-deps` (as root)"
# What the build context leaves out (.dockerignore says the same for docker).
_IGNORED_PARTS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


@dataclass(frozen=True)
class ImageSpec:
    """One image: its ref, its build definition and the inputs its build reads."""

    name: str
    ref: str
    dockerfile: str
    # Repository files or folders the build copies (folders: every file below them).
    inputs: tuple[str, ...]
    # Built FROM the Debian base (gets --build-arg BASE=...).
    uses_base: bool = True
    # A binary built on this machine into the build context first ("pause", "coredns").
    prebuilt: str | None = None
    # Where `docker build`/`buildah bud` runs: the repository, or the prepared context.
    context_is_repo: bool = True
    # The Python packages' requirement subset (from the lock) it installs, if any.
    requirements: str | None = None


@dataclass(frozen=True)
class BuiltImage:
    """An image ready to import: ``ctr -n k8s.io images import ARCHIVE`` names it REF."""

    ref: str
    archive: Path
    key: str
    size_bytes: int
    name: str = ""
    seconds: float = 0.0
    cached: bool = False

    @property
    def sbom(self) -> Path:
        return self.archive.with_name(self.archive.name + ".sbom.json")


class ImageToolError(RuntimeError):
    """A tool the build needs is missing, or the build does not run as root."""


class ImageBuildError(RuntimeError):
    """A build step failed; the message carries the step and the tail of its output."""


# ---------------------------------------------------------------- pure: specs and plans


def project_version(pyproject_text: str) -> str:
    """The package version of pyproject.toml: every modelship image's tag."""
    version = tomllib.loads(pyproject_text)["project"]["version"]
    if not isinstance(version, str):
        raise ValueError("pyproject.toml: project.version is not a string")
    return version


def image_specs(version: str) -> dict[str, ImageSpec]:
    """Every image the project builds, by name."""
    component_common = ("pyproject.toml", "README.md", "images/slim-venv.sh", LOCK_FILE)
    return {
        "serving": ImageSpec(
            name="serving",
            ref=f"docker.io/modelship/serving:{version}",
            dockerfile="serving/Dockerfile",
            inputs=(
                *component_common,
                "requirements/build.txt",
                "requirements/serving.txt",
                "serving/modelship_serving",
            ),
            requirements="requirements/serving.txt",
        ),
        "router": ImageSpec(
            name="router",
            ref=f"docker.io/modelship/router:{version}",
            dockerfile="router/Dockerfile",
            inputs=(
                *component_common,
                "requirements/build.txt",
                "requirements/router.txt",
                "router/modelship_router",
                "kube/modelship_kube",
            ),
            requirements="requirements/router.txt",
        ),
        "operator": ImageSpec(
            name="operator",
            ref=f"docker.io/modelship/operator:{version}",
            dockerfile="operator/Dockerfile",
            inputs=(
                *component_common,
                "requirements/build.txt",
                "requirements/operator.txt",
                "operator/modelship_operator",
                "router/modelship_router",
                "kube/modelship_kube",
                # Of the model server: the metrics contract the analysis queries import, and
                # the MLmodel reader (with its settings and errors) resolving models:/ URIs.
                "serving/modelship_serving/__init__.py",
                "serving/modelship_serving/contract.py",
                "serving/modelship_serving/mlflow_model.py",
                "serving/modelship_serving/config.py",
                "serving/modelship_serving/errors.py",
            ),
            requirements="requirements/operator.txt",
        ),
        "testbed": ImageSpec(
            name="testbed",
            ref=f"localhost/modelship-testbed/testbed:{version}",
            dockerfile="images/testbed/Containerfile",
            inputs=("cluster/modelship_cluster/testserver.py",),
        ),
        "pause": ImageSpec(
            name="pause",
            ref=f"localhost/modelship-testbed/pause:{PAUSE_VERSION}",
            dockerfile="images/pause/Containerfile",
            inputs=(),
            uses_base=False,
            prebuilt="pause",
            context_is_repo=False,
        ),
        "coredns": ImageSpec(
            name="coredns",
            ref=f"localhost/modelship-testbed/coredns:{COREDNS_VERSION}",
            dockerfile="images/coredns/Containerfile",
            inputs=("images/coredns/Corefile",),
            prebuilt="coredns",
            context_is_repo=False,
        ),
        **{
            name: ImageSpec(
                name=name,
                ref=f"localhost/modelship-testbed/{name}:{tag}",
                dockerfile=f"images/{name}/Containerfile",
                inputs=(),
                uses_base=name != "prometheus-config-reloader",  # no CA bundle needed
                prebuilt=name,
                context_is_repo=False,
            )
            for name, tag in (
                ("prometheus", PROMETHEUS_VERSION),
                ("prometheus-operator", PROMETHEUS_OPERATOR_VERSION),
                ("prometheus-config-reloader", PROMETHEUS_OPERATOR_VERSION),
            )
        },
        # The S3-compatible object store of the test bed (plain HTTP inside the cluster).
        "seaweedfs": ImageSpec(
            name="seaweedfs",
            ref=f"localhost/modelship-testbed/seaweedfs:{SEAWEEDFS_VERSION}",
            dockerfile="images/seaweedfs/Containerfile",
            inputs=(),
            uses_base=False,
            prebuilt="seaweedfs",
            context_is_repo=False,
        ),
        # The resource metrics API (metrics.k8s.io) HorizontalPodAutoscalers on CPU read.
        "metrics-server": ImageSpec(
            name="metrics-server",
            ref=f"localhost/modelship-testbed/metrics-server:v{METRICS_SERVER_VERSION}",
            dockerfile="images/metrics-server/Containerfile",
            inputs=(),
            uses_base=False,
            prebuilt="metrics-server",
            context_is_repo=False,
        ),
    }


def _read_version() -> str:
    pyproject = REPO / "pyproject.toml"
    if pyproject.exists():
        return project_version(pyproject.read_text())
    from importlib.metadata import version

    return version("modelship")


IMAGES_VERSION = _read_version()
IMAGES: dict[str, ImageSpec] = image_specs(IMAGES_VERSION)
#: The references pods name (the chart's defaults, the test bed's test image).
OPERATOR = IMAGES["operator"].ref
SERVING = IMAGES["serving"].ref
ROUTER = IMAGES["router"].ref
TESTBED = IMAGES["testbed"].ref


def build_plan(names: Sequence[str] | None, specs: Mapping[str, ImageSpec]) -> list[ImageSpec]:
    """The images to ensure, in build order (the component images share layers, so they
    go together), each name once; unknown names raise ValueError naming the known ones."""
    wanted = list(specs) if not names else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in specs]
    if unknown:
        raise ValueError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    order = list(specs)
    return [specs[n] for n in sorted(wanted, key=order.index)]


def digest_files(files: Mapping[str, bytes]) -> str:
    """sha256 over (path, content) pairs, independent of their order."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return h.hexdigest()


def cache_key(
    spec: ImageSpec,
    files: Mapping[str, bytes],
    base_key: str | None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The image's cache key: changes when, and only when, an input changes (the ref, the
    build definition, a copied file, the base image, a prebuilt binary's recipe)."""
    document = {
        "recipe": RECIPE,
        "ref": spec.ref,
        "dockerfile": spec.dockerfile,
        "files": digest_files(files),
        "base": base_key,
        "extra": dict(sorted((extra or {}).items())),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class AptMirrors:
    debian: str
    security: str


def apt_mirrors(sources_text: str, suite: str = DEBIAN_SUITE) -> AptMirrors:
    """The mirrors apt uses, from a deb822 sources file: the first stanza serving SUITE and
    the first serving SUITE-security (deb.debian.org when none says)."""
    debian = "http://deb.debian.org/debian"
    security = "http://deb.debian.org/debian-security"
    found_debian = found_security = False
    for stanza in re.split(r"\n\s*\n", sources_text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        uris = fields.get("uris", "").split()
        suites = fields.get("suites", "").split()
        if not uris:
            continue
        if suite in suites and not found_debian:
            debian, found_debian = uris[0].rstrip("/"), True
        if f"{suite}-security" in suites and not found_security:
            security, found_security = uris[0].rstrip("/"), True
    return AptMirrors(debian, security)


def base_key(mirrors: AptMirrors, slim_script: bytes) -> str:
    """The Debian base image's key: its suite, variant, mirrors and slimming script."""
    document = {
        "recipe": RECIPE,
        "suite": DEBIAN_SUITE,
        "variant": DEBIAN_VARIANT,
        "mirror": mirrors.debian,
        "security": mirrors.security,
        "slim": hashlib.sha256(slim_script).hexdigest(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def bud_command(
    spec: ImageSpec,
    context: Path,
    dockerfile: Path,
    version: str,
    base_ref: str | None,
    ca_bundle: Path | None,
) -> list[str]:
    """The `buildah bud` command line of one image."""
    # Host network for RUN steps: buildah's default network would make the bridge
    # cni-podman0 on 10.88.0.0/16 and leave it behind.
    cmd = ["buildah", "bud", "--layers", "--pull=never", "--format", "docker", "--network=host"]
    cmd += ["-f", str(dockerfile), "-t", spec.ref]
    cmd += ["--label", f"org.opencontainers.image.version={version}"]
    if base_ref is not None:
        cmd += ["--build-arg", f"BASE={base_ref}"]
    if ca_bundle is not None:
        cmd += ["--secret", f"id=ca,src={ca_bundle}"]
    return [*cmd, str(context)]


def docker_command(spec: ImageSpec, repo: Path) -> list[str]:
    """The `docker build` command a user with docker runs for one image (no prebuilt ones)."""
    return ["docker", "build", "-f", str(repo / spec.dockerfile), "-t", spec.ref, str(repo)]


# ------------------------------------------------------------------- pure: lock subsets


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]


def normalize_name(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text: str) -> dict[str, Pin]:
    """`name==version --hash=...` entries of a pip-compile/uv lock file, by normalized name.
    Raises ValueError on an entry that is not an exact pin with at least one hash."""
    pins: dict[str, Pin] = {}
    joined = re.sub(r"\\\n", " ", text)
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            continue  # options such as --index-url
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", line)
        if not match:
            raise ValueError(f"not an exact pin: {line!r}")
        hashes = frozenset(re.findall(r"--hash=(sha256:[0-9a-f]{64})", line))
        if not hashes:
            raise ValueError(f"no hash for {match.group(1)}")
        name = normalize_name(match.group(1))
        pins[name] = Pin(name, match.group(3), hashes)
    return pins


def subset_errors(lock: Mapping[str, Pin], subset: Mapping[str, Pin]) -> list[str]:
    """Why SUBSET is not a part of LOCK (same versions, hashes from the lock's); [] if it is."""
    errors = []
    for name, pin in sorted(subset.items()):
        locked = lock.get(name)
        if locked is None:
            errors.append(f"{name} is not in the lock")
        elif locked.version != pin.version:
            errors.append(f"{name}=={pin.version}, the lock says {locked.version}")
        elif not pin.hashes <= locked.hashes:
            errors.append(f"{name}: hashes that the lock does not list")
    return errors


def requirement_roots(in_text: str) -> list[str]:
    """The normalized project names a requirements .in file asks for."""
    roots = []
    for raw in in_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*", line)
            if name:
                roots.append(normalize_name(name.group(0)))
    return roots


# --------------------------------------------------------------------- pure: the SBOM


def parse_dpkg_status(text: str) -> list[tuple[str, str, str]]:
    """(package, version, architecture) of every installed package of a dpkg status file."""
    packages = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append(
                (fields["Package"], fields.get("Version", ""), fields.get("Architecture", ""))
            )
    return sorted(packages)


def parse_metadata(text: str) -> tuple[str, str]:
    """(Name, Version) of a Python distribution's METADATA file."""
    name = version = ""
    for line in text.splitlines():
        if not line:
            break
        if line.startswith("Name:") and not name:
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Version:") and not version:
            version = line.split(":", 1)[1].strip()
    return name, version


def cyclonedx(
    ref: str,
    key: str,
    debian: Iterable[tuple[str, str, str]],
    python: Iterable[tuple[str, str]],
    others: Iterable[tuple[str, str, str]] = (),
    timestamp: str | None = None,
) -> dict[str, object]:
    """A CycloneDX 1.5 SBOM of an image: Debian packages, Python packages and other
    components given as (name, version, purl)."""
    components: list[dict[str, object]] = []
    for package, version, arch in debian:
        purl = f"pkg:deb/debian/{package}@{version}?arch={arch}&distro=debian-12"
        components.append(
            {"type": "library", "name": package, "version": version, "purl": purl, "bom-ref": purl}
        )
    for name, version in sorted(python, key=lambda p: normalize_name(p[0])):
        purl = f"pkg:pypi/{normalize_name(name)}@{version}"
        components.append(
            {"type": "library", "name": name, "version": version, "purl": purl, "bom-ref": purl}
        )
    for name, version, purl in others:
        components.append(
            {"type": "application", "name": name, "version": version, "purl": purl, "bom-ref": purl}
        )
    repository, _, tag = ref.rpartition(":")
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{ref}@{key}')}",
        "version": 1,
        "metadata": {
            "timestamp": timestamp or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tools": {"components": [{"type": "application", "name": "modelship-cluster images"}]},
            "component": {"type": "container", "name": repository, "version": tag, "bom-ref": ref},
        },
        "components": components,
    }


# ------------------------------------------------------------------------------- I/O


def cache_dir() -> Path:
    """Where archives, SBOMs, the base rootfs and prebuilt binaries live."""
    return binaries.cache_root() / "images"


def _log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def check_tools(plan: Sequence[ImageSpec], need_base: bool) -> None:
    """Raise ImageToolError naming what is missing (and `make system-deps`)."""
    if os.geteuid() != 0:
        raise ImageToolError(
            "building images needs root (buildah's storage, debootstrap, chroot): "
            f"run `make images` as root; {SYSTEM_DEPS_HINT} installs the tools"
        )
    tools = ["buildah"]
    if need_base:
        tools.append("debootstrap")
    if any(s.prebuilt == "pause" for s in plan):
        tools += ["gcc", "strip", "go"]
    if any(s.prebuilt in ("coredns", *GO_MODULE_PREBUILT) for s in plan):
        tools.append("go")
    missing = sorted({t for t in tools if shutil.which(t) is None})
    if missing:
        raise ImageToolError(f"missing {', '.join(missing)}: {SYSTEM_DEPS_HINT}")
    if any(s.prebuilt == "pause" for s in plan) and not Path("/usr/include/signal.h").exists():
        raise ImageToolError(f"missing libc6-dev (static pause build): {SYSTEM_DEPS_HINT}")


def input_files(repo: Path, paths: Iterable[str]) -> dict[str, bytes]:
    """Every file of PATHS (folders recursively, without bytecode caches), by repo path."""
    files: dict[str, bytes] = {}
    for rel in paths:
        path = repo / rel
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                parts = set(f.relative_to(repo).parts)
                if f.is_file() and not parts & _IGNORED_PARTS and f.suffix != ".pyc":
                    files[f.relative_to(repo).as_posix()] = f.read_bytes()
        elif path.is_file():
            files[rel] = path.read_bytes()
        else:
            raise FileNotFoundError(f"image input {rel} does not exist")
    return files


def _run(cmd: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else dict(env),
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise ImageBuildError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{tail}")
    return result.stdout


def _image_label(ref: str, label: str) -> str | None:
    result = subprocess.run(
        [
            "buildah",
            "inspect",
            "--type",
            "image",
            "--format",
            f'{{{{index .OCIv1.Config.Labels "{label}"}}}}',
            ref,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _stream(cmd: Sequence[str], name: str, started: float, log_path: Path) -> None:
    """Run a build, printing each STEP line with the seconds since the image's start."""
    tail: deque[str] = deque(maxlen=60)
    verbose = os.environ.get("MODELSHIP_IMAGES_VERBOSE") == "1"
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip("\n"))
            step = re.match(r"^(\[\d+/\d+\] )?STEP \d+/\d+: ", line)
            if verbose or step:
                text = line.rstrip("\n")
                print(
                    f"   [{name} {time.monotonic() - started:5.1f}s] {text[:150]}",
                    file=sys.stderr,
                    flush=True,
                )
        code = proc.wait()
    if code != 0:
        raise ImageBuildError(
            f"building {name} failed (exit {code}); full log: {log_path}\n" + "\n".join(tail)
        )


@contextlib.contextmanager
def _mounted(ref: str) -> Iterator[Path]:
    """The root filesystem of image REF, mounted read-only for the block."""
    container = _run(["buildah", "from", "--pull-never", "--quiet", ref], "buildah from").strip()
    try:
        yield Path(_run(["buildah", "mount", container], "buildah mount").strip())
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class _Base:
    key: str
    mirrors: AptMirrors
    ready: bool = field(default=False)


def _base(repo: Path) -> _Base:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    mirrors = apt_mirrors(sources.read_text() if sources.exists() else "")
    return _Base(base_key(mirrors, (repo / "images/base/slim.sh").read_bytes()), mirrors)


def ensure_base(repo: Path, base: _Base) -> None:
    """The Debian base image in buildah's storage, labelled with its key: imported from the
    cached rootfs tarball, or debootstrapped and slimmed first."""
    if _image_label(BASE_REF, "io.modelship.key") == base.key:
        return
    started = time.monotonic()
    tarball = cache_dir() / "base" / f"debian-{DEBIAN_SUITE}-slim-{base.key[:16]}.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _log(
                f"base: debootstrap --variant={DEBIAN_VARIANT} {DEBIAN_SUITE} "
                f"{base.mirrors.debian} (about a minute)"
            )
            _run(
                [
                    "debootstrap",
                    f"--variant={DEBIAN_VARIANT}",
                    DEBIAN_SUITE,
                    str(rootfs),
                    base.mirrors.debian,
                ],
                "debootstrap",
            )
            _log(
                f"base: slimming like debian:{DEBIAN_SUITE}-slim "
                f"({time.monotonic() - started:.0f}s)"
            )
            _run(
                [
                    "bash",
                    str(repo / "images/base/slim.sh"),
                    str(rootfs),
                    base.mirrors.debian,
                    base.mirrors.security,
                    DEBIAN_SUITE,
                ],
                "images/base/slim.sh",
            )
            partial = tarball.with_suffix(".partial")
            _run(
                [
                    "tar",
                    "--sort=name",
                    "--numeric-owner",
                    "--mtime=@0",
                    "-C",
                    str(rootfs),
                    "-cf",
                    str(partial),
                    ".",
                ],
                "tar of the base rootfs",
            )
            partial.rename(tarball)
        for old in tarball.parent.glob(f"debian-{DEBIAN_SUITE}-slim-*.tar"):
            if old != tarball:
                old.unlink()
    _log(f"base: importing {tarball.name} as {BASE_REF}")
    container = _run(["buildah", "from", "--quiet", "scratch"], "buildah from scratch").strip()
    try:
        _run(["buildah", "add", "--quiet", container, str(tarball), "/"], "buildah add")
        _run(
            [
                "buildah",
                "config",
                "--cmd",
                '["bash"]',
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--label",
                f"io.modelship.key={base.key}",
                container,
            ],
            "buildah config",
        )
        _run(["buildah", "commit", "--quiet", container, BASE_REF], "buildah commit")
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    _log(f"base: {BASE_REF} ready ({time.monotonic() - started:.0f}s)")


def _go_module_dir(module: str) -> Path:
    out = _run(["go", "mod", "download", "-json", module], f"go mod download {module}")
    info = json.loads(out)
    return Path(info["Dir"])


def _pause_source() -> Path:
    kubernetes = _go_module_dir(f"k8s.io/kubernetes@v{binaries.KUBERNETES_VERSION}")
    return kubernetes / "build/pause/linux/pause.c"


_PAUSE_CFLAGS = ("-Os", "-Wall", "-Werror", "-static")


#: Prebuilt binaries that binaries.py builds (and caches) from Go modules: the build, the
#: binary's name in its bin folder, the recipe, and the SBOM's package URL.
GO_MODULE_PREBUILT: Final = {
    "prometheus": (binaries.build_prometheus, "prometheus", binaries.prometheus_recipe),
    "prometheus-operator": (
        binaries.build_prometheus_operator,
        "operator",
        binaries.prometheus_operator_recipe,
    ),
    "prometheus-config-reloader": (
        binaries.build_prometheus_operator,
        "prometheus-config-reloader",
        binaries.prometheus_operator_recipe,
    ),
    "seaweedfs": (binaries.build_seaweedfs, "weed", binaries.seaweedfs_recipe),
    "metrics-server": (
        binaries.build_metrics_server,
        "metrics-server",
        binaries.metrics_server_recipe,
    ),
}


def go_module_recipe(kind: str) -> dict[str, str]:
    """The image-key part of a binary binaries.py builds: its module, package, recipe key."""
    _, binary, recipe_of = GO_MODULE_PREBUILT[kind]
    recipe = recipe_of()
    return {"module": recipe.modules[0], "binary": binary, "recipe": recipe.key()}


def _prebuilt_recipe(kind: str) -> dict[str, str]:
    """What a prebuilt binary is made from (part of its image's key)."""
    if kind in GO_MODULE_PREBUILT:
        return go_module_recipe(kind)
    if kind == "pause":
        source = _pause_source().read_bytes()
        gcc = _run(["gcc", "-dumpfullversion"], "gcc -dumpfullversion").strip()
        return {
            "pause.c": hashlib.sha256(source).hexdigest(),
            "gcc": gcc,
            "cflags": " ".join(_PAUSE_CFLAGS),
            "version": PAUSE_VERSION,
        }
    go = _run(["go", "env", "GOVERSION"], "go env GOVERSION").strip()
    return {
        "module": f"github.com/coredns/coredns@v{COREDNS_VERSION}",
        "go": go,
        "flags": "CGO_ENABLED=0 -trimpath -ldflags=-s -w",
    }


def _prebuild(kind: str, recipe: Mapping[str, str], into: Path) -> None:
    """Build the pause, CoreDNS or Prometheus binary (cached by its recipe) and copy it
    INTO."""
    if kind in GO_MODULE_PREBUILT:
        build, binary_name, _ = GO_MODULE_PREBUILT[kind]
        shutil.copy2(build() / binary_name, into / binary_name)
        return
    digest = hashlib.sha256(json.dumps(dict(recipe), sort_keys=True).encode()).hexdigest()[:16]
    binary = cache_dir() / "bin" / f"{kind}-{digest}"
    if not binary.exists():
        started = time.monotonic()
        binary.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
            out = Path(tmp) / kind
            if kind == "pause":
                _log(f"pause: gcc -static {_pause_source()}")
                _run(
                    [
                        "gcc",
                        *_PAUSE_CFLAGS,
                        f"-DVERSION=v{PAUSE_VERSION}-modelship",
                        "-o",
                        str(out),
                        str(_pause_source()),
                    ],
                    "gcc pause.c",
                )
                _run(["strip", str(out)], "strip pause")
            else:
                _log(
                    f"coredns: go install github.com/coredns/coredns@v{COREDNS_VERSION} "
                    "(CGO off; minutes on a cold Go cache)"
                )
                env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": tmp, "GOFLAGS": "-buildvcs=false"}
                _run(
                    [
                        "go",
                        "install",
                        "-trimpath",
                        "-ldflags=-s -w",
                        f"github.com/coredns/coredns@v{COREDNS_VERSION}",
                    ],
                    "go install coredns",
                    env=env,
                )
            out.rename(binary)
        _log(f"{kind}: binary built ({time.monotonic() - started:.0f}s)")
    shutil.copy2(binary, into / kind)


def _archive_paths(spec: ImageSpec, key: str) -> tuple[Path, Path]:
    archive = cache_dir() / f"{spec.name}-{key[:16]}.tar"
    return archive, archive.with_name(archive.name + ".json")


def docker_archive_size(archive: Path) -> int:
    """Uncompressed size of a docker-archive's layers (the image's size, as docker counts)."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return sum(tar.getmember(layer).size for layer in manifest[0]["Layers"])


def _sbom(spec: ImageSpec, key: str) -> dict[str, object]:
    with _mounted(spec.ref) as root:
        status = root / "var/lib/dpkg/status"
        debian = parse_dpkg_status(status.read_text()) if status.exists() else []
        python = [
            parse_metadata((d / "METADATA").read_text(errors="replace"))
            for d in sorted(root.glob("opt/modelship/lib/python3*/site-packages/*.dist-info"))
            if (d / "METADATA").exists()
        ]
    others: list[tuple[str, str, str]] = []
    if spec.prebuilt == "pause":
        others.append(
            (
                "pause",
                PAUSE_VERSION,
                f"pkg:golang/k8s.io/kubernetes@v{binaries.KUBERNETES_VERSION}"
                "#build/pause/linux/pause.c",
            )
        )
    elif spec.prebuilt in GO_MODULE_PREBUILT:
        module, _, version = go_module_recipe(spec.prebuilt)["module"].partition("@")
        others.append((spec.prebuilt, spec.ref.rsplit(":", 1)[1], f"pkg:golang/{module}@{version}"))
    elif spec.prebuilt == "coredns":
        others.append(
            (
                "coredns",
                COREDNS_VERSION,
                f"pkg:golang/github.com/coredns/coredns@v{COREDNS_VERSION}",
            )
        )
    return cyclonedx(spec.ref, key, debian, python, others)


def _prepare_context(spec: ImageSpec, repo: Path, recipe: Mapping[str, str], tmp: Path) -> Path:
    if spec.context_is_repo:
        return repo
    context = tmp / "context"
    context.mkdir()
    shutil.copy2(repo / spec.dockerfile, context / "Containerfile")
    for rel in spec.inputs:
        shutil.copy2(repo / rel, context / Path(rel).name)
    if spec.prebuilt:
        _prebuild(spec.prebuilt, recipe, context)
    return context


def image_key(spec: ImageSpec, repo: Path, base: _Base | None) -> tuple[str, dict[str, str]]:
    """The cache key of SPEC as the files are now (and the prebuilt binary's recipe)."""
    files = input_files(repo, (spec.dockerfile, *spec.inputs))
    recipe = _prebuilt_recipe(spec.prebuilt) if spec.prebuilt else {}
    return cache_key(spec, files, base.key if base and spec.uses_base else None, recipe), recipe


def cached_image(spec: ImageSpec, key: str) -> BuiltImage | None:
    """The archive of SPEC at KEY, if one was built and exported completely."""
    archive, meta = _archive_paths(spec, key)
    if not (archive.exists() and meta.exists()):
        return None
    data = json.loads(meta.read_text())
    return BuiltImage(
        ref=spec.ref,
        archive=archive,
        key=key,
        size_bytes=int(data["size_bytes"]),
        name=spec.name,
        seconds=float(data.get("seconds", 0.0)),
        cached=True,
    )


def _build(
    spec: ImageSpec, key: str, recipe: Mapping[str, str], repo: Path, base: _Base | None
) -> BuiltImage:
    started = time.monotonic()
    archive, meta = _archive_paths(spec, key)
    archive.parent.mkdir(parents=True, exist_ok=True)
    _log(f"{spec.name}: building {spec.ref} (key {key[:16]})")
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=f".{spec.name}-") as tmp:
        context = _prepare_context(spec, repo, recipe, Path(tmp))
        dockerfile = (
            context / "Containerfile" if not spec.context_is_repo else repo / spec.dockerfile
        )
        cmd = bud_command(
            spec,
            context,
            dockerfile,
            IMAGES_VERSION,
            BASE_REF if spec.uses_base and base else None,
            CA_BUNDLE if CA_BUNDLE.exists() else None,
        )
        _stream(cmd, spec.name, started, archive.with_name(archive.name + ".log"))
        _log(f"{spec.name}: exporting docker-archive ({time.monotonic() - started:.0f}s)")
        partial = Path(tmp) / "image.tar"
        _run(
            ["buildah", "push", "--quiet", spec.ref, f"docker-archive:{partial}:{spec.ref}"],
            "buildah push docker-archive",
        )
        size = docker_archive_size(partial)
        sbom = _sbom(spec, key)
        partial.rename(archive)
    archive.with_name(archive.name + ".sbom.json").write_text(json.dumps(sbom, indent=1) + "\n")
    seconds = time.monotonic() - started
    meta.write_text(
        json.dumps(
            {"ref": spec.ref, "key": key, "size_bytes": size, "seconds": round(seconds, 1)},
            indent=1,
        )
        + "\n"
    )
    for old in archive.parent.glob(f"{spec.name}-*.tar*"):
        if not old.name.startswith(archive.name):
            old.unlink()
    _log(f"{spec.name}: {spec.ref} built in {seconds:.0f}s, {size / 1e6:.0f} MB uncompressed")
    return BuiltImage(
        ref=spec.ref, archive=archive, key=key, size_bytes=size, name=spec.name, seconds=seconds
    )


def ensure_images(names: Sequence[str] | None = None, repo: Path = REPO) -> list[BuiltImage]:
    """Build what is missing or stale among NAMES (default: every image) and return each
    image's ref, archive, key and size; an image whose inputs did not change is reused."""
    plan = build_plan(names, IMAGES)
    base = _base(repo) if any(s.uses_base for s in plan) else None
    try:
        keys = {s.name: image_key(s, repo, base) for s in plan}
    except (FileNotFoundError, ImageBuildError):
        check_tools(plan, need_base=base is not None)  # names the missing tool, if one is
        raise
    cached = [cached_image(s, keys[s.name][0]) for s in plan]
    hits = [c for c in cached if c is not None]
    if len(hits) == len(plan):
        for c in hits:
            _log(f"{c.name}: cached {c.ref} ({c.size_bytes / 1e6:.0f} MB) {c.archive}")
        return hits
    check_tools(plan, need_base=base is not None)
    built: list[BuiltImage] = []
    with _locked(cache_dir() / ".lock"):
        for spec in plan:
            key, recipe = keys[spec.name]
            hit = cached_image(spec, key)
            if hit is not None:
                _log(f"{spec.name}: cached {hit.ref} ({hit.size_bytes / 1e6:.0f} MB) {hit.archive}")
                built.append(hit)
                continue
            if spec.uses_base and base is not None and not base.ready:
                ensure_base(repo, base)
                base.ready = True
            built.append(_build(spec, key, recipe, repo, base))
    return built


def list_images(
    names: Sequence[str] | None = None, repo: Path = REPO
) -> list[tuple[ImageSpec, str, BuiltImage | None]]:
    """(spec, current key, cached image or None) per image; builds nothing."""
    plan = build_plan(names, IMAGES)
    base = _base(repo)
    rows = []
    for spec in plan:
        key, _ = image_key(spec, repo, base)
        rows.append((spec, key, cached_image(spec, key)))
    return rows
