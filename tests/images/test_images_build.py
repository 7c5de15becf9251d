"""The images themselves: built (or reused from the cache) by ensure_images, then inspected
from the outside (skopeo on the docker-archive, the unpacked root filesystem under chroot
as uid 65532) and imported into a private containerd to check the names `ctr` gives them.

Needs root and buildah (`make system-deps`). Under CI=true a missing prerequisite fails
the test with its reason instead of skipping it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelship_cluster import images
from modelship_cluster.ports import free_port as _free_port

pytestmark = pytest.mark.slow
# The child's PATH is the image's, so find chroot with ours.
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the image builds need root"
    for tool in ("buildah", "skopeo", "debootstrap", "gcc", "go"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run `make system-deps`"
    return None


def _require(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def built() -> dict[str, images.BuiltImage]:
    _require(_missing())
    return {b.name: b for b in images.ensure_images()}


@contextlib.contextmanager
def rootfs(ref: str) -> Iterator[Path]:
    """The image's root filesystem (a buildah working container's mount)."""
    container = subprocess.run(
        ["buildah", "from", "--pull-never", "--quiet", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        mount = subprocess.run(
            ["buildah", "mount", container], capture_output=True, text=True, check=True
        ).stdout.strip()
        yield Path(mount)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def as_nonroot(
    root: Path, *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ARGV inside ROOT as 65532:65532 with the image's environment (chroot)."""
    base_env = {
        "PATH": "/opt/modelship/bin:/usr/local/bin:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/nonexistent",
    }
    return subprocess.run(
        [CHROOT, "--userspec=65532:65532", str(root), *argv],
        capture_output=True,
        text=True,
        env={**base_env, **(env or {})},
        timeout=timeout,
        check=False,
    )


def config(image: images.BuiltImage) -> dict[str, object]:
    out = subprocess.run(
        ["skopeo", "inspect", "--config", f"docker-archive:{image.archive}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cfg = json.loads(out)["config"]
    assert isinstance(cfg, dict)
    return cfg


COMPONENTS = {
    "serving": ("modelship-serve", "modelship-serving"),
    "router": ("modelship-router", "modelship-router"),
    "operator": ("modelship-operator", "modelship-operator"),
}


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_image_config(built: dict[str, images.BuiltImage], name: str) -> None:
    entrypoint, title = COMPONENTS[name]
    cfg = config(built[name])
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == [entrypoint]
    labels = cfg["Labels"]
    assert isinstance(labels, dict)
    assert labels["org.opencontainers.image.title"] == title
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == images.IMAGES_VERSION
    if name == "serving":
        assert cfg["StopSignal"] == "SIGTERM"


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_image_runs_as_nonroot_and_ships_no_build_tools(
    built: dict[str, images.BuiltImage], name: str
) -> None:
    entrypoint, _ = COMPONENTS[name]
    with rootfs(built[name].ref) as root:
        site = next(root.glob("opt/modelship/lib/python3*/site-packages"))
        for unwanted in (
            "usr/bin/gcc",
            "usr/bin/strip",
            "usr/bin/ld",
            "root/.cache/pip",
            "run/secrets/ca",
            "opt/tools",
            "src",
            "wheels",
            "out",
        ):
            assert not (root / unwanted).exists(), unwanted
        assert not list(site.glob("pip")) and not list(site.glob("setuptools"))
        assert not list((root / "var/lib/apt/lists").glob("*_Packages"))
        assert not list((root / "var/cache/apt").glob("*.bin"))
        docs = [p for p in root.glob("usr/share/doc/**/*") if p.is_file() and not p.is_symlink()]
        assert {p.name for p in docs} <= {"copyright"}, "dpkg leaves docs out (as -slim does)"
        assert not list(root.glob("usr/share/man/man1/*"))
        assert not list(site.glob("**/tests/__init__.py"))
        help_run = as_nonroot(root, f"/opt/modelship/bin/{entrypoint}", "--help")
        assert help_run.returncode == 0, help_run.stderr


def test_serving_image_predicts_and_is_small(built: dict[str, images.BuiltImage]) -> None:
    serving = built["serving"]
    # 415 MB with pandas (tabular inputs) and grpcio + protobuf (the OIP gRPC service); the
    # bound catches an accidental build toolchain or a second copy of a library.
    assert serving.size_bytes <= 450 * 1000 * 1000, f"{serving.size_bytes / 1e6:.0f} MB"
    with rootfs(serving.ref) as root:
        run = as_nonroot(
            root,
            "/opt/modelship/bin/python",
            "-c",
            (
                "import sklearn, numpy as np\n"
                "from sklearn.ensemble import RandomForestClassifier\n"
                "from sklearn.linear_model import LogisticRegression\n"
                "x = np.random.default_rng(0).normal(size=(200, 4))\n"
                "y = (x[:, 0] > 0).astype(int)\n"
                "for m in (LogisticRegression(), RandomForestClassifier(n_estimators=5)):\n"
                "    assert (m.fit(x, y).predict(x) == y).mean() > 0.9\n"
                "import modelship_serving.app, skops.io\n"
                "print(sklearn.__version__)\n"
            ),
        )
        assert run.returncode == 0, run.stderr
        assert (
            run.stdout.strip()
            == images.parse_requirements((images.REPO / "requirements/serving.txt").read_text())[
                "scikit-learn"
            ].version
        )


@contextlib.contextmanager
def read_only(root: Path, under: Path) -> Iterator[Path]:
    """ROOT bind-mounted read-only at UNDER with a tmpfs at /tmp: what a pod with
    readOnlyRootFilesystem and an emptyDir at /tmp gets."""
    under.mkdir()
    mounts = [
        ["mount", "--bind", str(root), str(under)],
        ["mount", "-o", "remount,bind,ro", str(under)],
        ["mount", "-t", "tmpfs", "-o", "mode=1777,size=64m", "tmpfs", str(under / "tmp")],
    ]
    try:
        for cmd in mounts:
            subprocess.run(cmd, check=True, capture_output=True)
        yield under
    finally:
        subprocess.run(["umount", "-R", str(under)], check=False, capture_output=True)


def _wait_http(url: str, proc: subprocess.Popen[str], seconds: float) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: bytes = response.read()
                return body
        except OSError:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"exited {proc.returncode}: {out[-3000:]}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_serving_image_serves_a_model_from_a_read_only_root(
    built: dict[str, images.BuiltImage], tmp_path: Path
) -> None:
    from modelship_serving.artifacts import save_model
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]], [0, 1, 0, 1])
    port = _free_port()
    with rootfs(built["serving"].ref) as root, read_only(root, tmp_path / "ro") as ro:
        (ro / "tmp/models").mkdir()
        sha256 = save_model(model, ro / "tmp/models/m.skops")
        assert subprocess.run(["touch", str(ro / "probe")], capture_output=True).returncode != 0
        proc = subprocess.Popen(
            [CHROOT, "--userspec=65532:65532", str(ro), "modelship-serve"],
            env={
                "PATH": "/opt/modelship/bin:/usr/bin:/bin",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                "MODELSHIP_MODEL_URI": "file:///tmp/models/m.skops",
                "MODELSHIP_MODEL_SHA256": sha256,
                "MODELSHIP_MODEL_NAME": "m",
                "MODELSHIP_HOST": "127.0.0.1",
                "MODELSHIP_PORT": str(port),
                # gRPC on a free port too (the image's 8081 may be taken on a shared host)
                "MODELSHIP_GRPC_PORT": str(_free_port()),
                "MODELSHIP_MODEL_CACHE_DIR": "/tmp/modelship-models",
                "MODELSHIP_DRAIN_SECONDS": "0",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc, 90)
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/models/m:predict",
                data=json.dumps({"instances": [[0.0, 1.0], [1.0, 0.0]]}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["predictions"] == [0, 1]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert proc.returncode == 0


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_sbom_lists_debian_and_python_packages(
    built: dict[str, images.BuiltImage], name: str
) -> None:
    sbom = json.loads(built[name].sbom.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    names = {c["name"]: c["version"] for c in sbom["components"]}
    assert "python3" in names and "libc6" in names
    assert names["modelship"] == images.IMAGES_VERSION
    if name == "serving":
        assert (
            names["scikit-learn"]
            == images.parse_requirements((images.REPO / "requirements/serving.txt").read_text())[
                "scikit-learn"
            ].version
        )
    else:
        assert "scikit-learn" not in names and "numpy" not in names


def test_testbed_image_serves_http_as_nonroot(built: dict[str, images.BuiltImage]) -> None:
    cfg = config(built["testbed"])
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["python3", "/opt/testbed/testserver.py"]
    port = _free_port()
    with rootfs(built["testbed"].ref) as root:
        assert (root / "bin/sh").exists() and (root / "bin/busybox").exists()
        proc = subprocess.Popen(
            [
                CHROOT,
                "--userspec=65532:65532",
                str(root),
                "python3",
                "/opt/testbed/testserver.py",
            ],
            env={"PORT": str(port), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                        assert r.read() == b"ok"
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_pause_image_is_a_static_binary_under_1mb(built: dict[str, images.BuiltImage]) -> None:
    pause = built["pause"]
    assert pause.size_bytes < 1_000_000
    cfg = config(pause)
    assert cfg["Entrypoint"] == ["/pause"]
    assert cfg["User"] == "65535:65535"
    with rootfs(pause.ref) as root:
        assert sorted(
            p.name for p in root.iterdir() if p.name not in {"dev", "proc", "sys", "etc", "run"}
        ) == ["pause"]
        headers = subprocess.run(
            ["readelf", "-l", str(root / "pause")], capture_output=True, text=True, check=True
        ).stdout
        assert "INTERP" not in headers, "statically linked"
        run = as_nonroot(root, "/pause", "-v")
        assert run.returncode == 0 and "pause.c" in run.stdout + run.stderr


def test_coredns_image_runs_without_root_on_1053(built: dict[str, images.BuiltImage]) -> None:
    cfg = config(built["coredns"])
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["/coredns", f"-dns.port={images.COREDNS_PORT}"]
    with rootfs(built["coredns"].ref) as root:
        run = as_nonroot(root, "/coredns", "-version")
        assert run.returncode == 0 and f"CoreDNS-{images.COREDNS_VERSION}" in run.stdout
        assert ".:1053" in (root / "etc/coredns/Corefile").read_text()
        assert (root / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 100_000


def test_a_warm_ensure_reuses_every_archive(built: dict[str, images.BuiltImage]) -> None:
    started = time.monotonic()
    again = {b.name: b for b in images.ensure_images()}
    assert time.monotonic() - started < 30
    assert all(b.cached for b in again.values())
    assert {n: b.archive for n, b in again.items()} == {n: b.archive for n, b in built.items()}


@pytest.fixture
def private_containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A containerd of this test's own (root, state, socket under /tmp; no CRI plugin),
    stopped by its PID afterwards. Never the machine's /run/containerd."""
    _require(
        None
        if shutil.which("containerd") and shutil.which("ctr")
        else "containerd/ctr are missing: apt-get install containerd"
    )
    base = Path(tempfile_dir := str(tmp_path_factory.mktemp("containerd")))
    sock = base / "containerd.sock"
    cfg = base / "config.toml"
    cfg.write_text(
        "version = 2\n"
        f'root = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{base}/containerd.sock.ttrpc"\n'
        '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
    )
    log = (base / "containerd.log").open("w")
    proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, (base / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.2)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", f"{base}/root"], capture_output=True, check=False)
        shutil.rmtree(tempfile_dir, ignore_errors=True)


def test_ctr_import_names_every_image_with_its_ref(
    built: dict[str, images.BuiltImage], private_containerd: Path
) -> None:
    ctr = ["ctr", "--address", str(private_containerd), "-n", "k8s.io"]
    for image in built.values():
        run = subprocess.run(
            [*ctr, "images", "import", str(image.archive)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
    listed = subprocess.run(
        [*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(listed) == sorted(b.ref for b in built.values())
