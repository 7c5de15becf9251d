"""The pure parts of the image builds: cache keys, plans, command lines, SBOM documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelship_cluster import images
from modelship_cluster.images import ImageSpec

SPEC = ImageSpec(
    name="serving",
    ref="docker.io/modelship/serving:0.1.0",
    dockerfile="serving/Dockerfile",
    inputs=("serving/modelship_serving",),
)
FILES = {"serving/Dockerfile": b"FROM x\n", "serving/modelship_serving/app.py": b"x = 1\n"}


def test_cache_key_is_stable_for_the_same_inputs_in_any_order() -> None:
    again = dict(reversed(list(FILES.items())))
    assert images.cache_key(SPEC, FILES, "base") == images.cache_key(SPEC, again, "base")
    assert images.cache_key(SPEC, FILES, "b", {"a": "1", "b": "2"}) == images.cache_key(
        SPEC, FILES, "b", {"b": "2", "a": "1"}
    )


@pytest.mark.parametrize(
    "change",
    [
        "content",
        "new file",
        "removed file",
        "renamed file",
        "base",
        "no base",
        "ref",
        "dockerfile path",
        "recipe",
    ],
)
def test_cache_key_changes_when_an_input_changes(change: str) -> None:
    files, base, spec, extra = dict(FILES), "base", SPEC, {"go": "go1.26.8"}
    if change == "content":
        files["serving/modelship_serving/app.py"] = b"x = 2\n"
    elif change == "new file":
        files["serving/modelship_serving/new.py"] = b""
    elif change == "removed file":
        del files["serving/modelship_serving/app.py"]
    elif change == "renamed file":
        files["serving/modelship_serving/app2.py"] = files.pop("serving/modelship_serving/app.py")
    elif change == "base":
        base = "other base"
    elif change == "no base":
        base = None  # type: ignore[assignment]
    elif change == "ref":
        spec = ImageSpec(**{**SPEC.__dict__, "ref": "docker.io/modelship/serving:0.2.0"})
    elif change == "dockerfile path":
        spec = ImageSpec(**{**SPEC.__dict__, "dockerfile": "serving/Containerfile"})
    elif change == "recipe":
        extra = {"go": "go1.27.0"}
    before = images.cache_key(SPEC, FILES, "base", {"go": "go1.26.8"})
    assert images.cache_key(spec, files, base, extra) != before


def test_input_files_leave_out_bytecode_caches(tmp_path: Path) -> None:
    pkg = tmp_path / "serving" / "modelship_serving"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "app.py").write_text("x = 1\n")
    (pkg / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "stray.pyc").write_bytes(b"\0")
    (tmp_path / "README.md").write_text("r")
    files = images.input_files(tmp_path, ["serving/modelship_serving", "README.md"])
    assert files == {"serving/modelship_serving/app.py": b"x = 1\n", "README.md": b"r"}
    with pytest.raises(FileNotFoundError):
        images.input_files(tmp_path, ["missing"])


def test_the_repository_key_changes_with_a_one_line_change(tmp_path: Path) -> None:
    # The same check as above, on real files: what a code edit does to the serving key.
    spec = images.IMAGES["serving"]
    files = images.input_files(images.REPO, (spec.dockerfile, *spec.inputs))
    key = images.cache_key(spec, files, "base")
    edited = dict(files)
    edited["serving/modelship_serving/__init__.py"] += b"\n# a comment\n"
    assert images.cache_key(spec, edited, "base") != key
    assert images.cache_key(spec, dict(files), "base") == key


def test_build_plan_keeps_the_declared_order_and_names_unknown_images() -> None:
    specs = images.IMAGES
    assert [s.name for s in images.build_plan(None, specs)] == list(specs)
    plan = images.build_plan(["pause", "serving", "pause"], specs)
    assert [s.name for s in plan] == ["serving", "pause"]
    with pytest.raises(ValueError, match=r"unknown image\(s\) nginx; known: serving"):
        images.build_plan(["nginx"], specs)


def test_refs_are_the_ones_the_chart_and_the_node_use() -> None:
    version = images.project_version((images.REPO / "pyproject.toml").read_text())
    refs = {name: spec.ref for name, spec in images.IMAGES.items()}
    assert refs == {
        "serving": f"docker.io/modelship/serving:{version}",
        "router": f"docker.io/modelship/router:{version}",
        "operator": f"docker.io/modelship/operator:{version}",
        "testbed": f"localhost/modelship-testbed/testbed:{version}",
        "pause": "localhost/modelship-testbed/pause:3.10",
        "coredns": "localhost/modelship-testbed/coredns:1.15.0",
        "prometheus": "localhost/modelship-testbed/prometheus:3.16.0",
        "prometheus-operator": "localhost/modelship-testbed/prometheus-operator:0.85.0",
        "prometheus-config-reloader": (
            "localhost/modelship-testbed/prometheus-config-reloader:0.85.0"
        ),
        "seaweedfs": ("localhost/modelship-testbed/seaweedfs:v0.0.0-20261109003541-7506e5f91cd6"),
        "metrics-server": "localhost/modelship-testbed/metrics-server:v0.8.0",
    }


def test_the_prometheus_images_copy_the_binaries_their_entrypoints_run() -> None:
    """Each Prometheus (and the SeaweedFS) image's Containerfile copies the binary binaries.py
    builds to the path its ENTRYPOINT (and, for the reloader, the Prometheus Operator's
    `command`) names, and runs it as a non-root user."""
    for name in images.GO_MODULE_PREBUILT:
        spec = images.IMAGES[name]
        text = (images.REPO / spec.dockerfile).read_text()
        binary = images.go_module_recipe(name)["binary"]
        assert f"COPY {binary} /bin/{binary}\n" in text, name
        assert f'ENTRYPOINT ["/bin/{binary}"' in text, name
        assert "USER 65534:65534" in text, name
        assert spec.prebuilt == name and not spec.context_is_repo


def test_apt_mirrors_come_from_the_deb822_sources() -> None:
    sources = (
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert images.apt_mirrors(sources) == images.AptMirrors(
        "http://mirror.example/debian", "http://mirror.example/debian-security"
    )
    assert images.apt_mirrors("").debian == "http://deb.debian.org/debian"


def test_base_key_follows_the_mirror_and_the_slimming_script() -> None:
    mirrors = images.AptMirrors("http://a/debian", "http://a/debian-security")
    key = images.base_key(mirrors, b"slim")
    assert images.base_key(mirrors, b"slim") == key
    assert images.base_key(mirrors, b"slim v2") != key
    assert images.base_key(images.AptMirrors("http://b/debian", mirrors.security), b"slim") != key


def test_bud_command_passes_the_base_and_the_ca_only_as_a_secret() -> None:
    cmd = images.bud_command(
        SPEC,
        Path("/repo"),
        Path("/repo/serving/Dockerfile"),
        "0.1.0",
        images.BASE_REF,
        Path("/etc/ssl/certs/ca-certificates.crt"),
    )
    assert cmd[:3] == ["buildah", "bud", "--layers"]
    assert f"BASE={images.BASE_REF}" in cmd
    assert "id=ca,src=/etc/ssl/certs/ca-certificates.crt" in cmd
    assert cmd[-1] == "/repo"
    bare = images.bud_command(SPEC, Path("/c"), Path("/c/Containerfile"), "0.1.0", None, None)
    assert "--build-arg" not in bare and "--secret" not in bare


LOCK = """\
anyio==4.16.0 \\
    --hash=sha256:{a} \\
    --hash=sha256:{b}
    # via httpx
httpx==0.28.1 \\
    --hash=sha256:{c}
    # via modelship (pyproject.toml)
uvicorn[standard]==0.54.0 --hash=sha256:{d}  # via modelship
""".format(a="a" * 64, b="b" * 64, c="c" * 64, d="d" * 64)


def test_parse_requirements_reads_pins_and_hashes() -> None:
    pins = images.parse_requirements(LOCK)
    assert sorted(pins) == ["anyio", "httpx", "uvicorn"]
    assert pins["anyio"].version == "4.16.0"
    assert pins["anyio"].hashes == {"sha256:" + "a" * 64, "sha256:" + "b" * 64}
    with pytest.raises(ValueError, match="not an exact pin"):
        images.parse_requirements("httpx>=0.27 --hash=sha256:" + "c" * 64)
    with pytest.raises(ValueError, match="no hash"):
        images.parse_requirements("httpx==0.28.1\n")


def test_subset_errors_name_each_disagreement() -> None:
    lock = images.parse_requirements(LOCK)
    good = images.parse_requirements(f"anyio==4.16.0 --hash=sha256:{'a' * 64}\n")
    assert images.subset_errors(lock, good) == []
    bad = images.parse_requirements(
        f"anyio==4.15.0 --hash=sha256:{'a' * 64}\n"
        f"httpx==0.28.1 --hash=sha256:{'e' * 64}\n"
        f"h11==0.16.0 --hash=sha256:{'f' * 64}\n"
    )
    assert images.subset_errors(lock, bad) == [
        "anyio==4.15.0, the lock says 4.16.0",
        "h11 is not in the lock",
        "httpx: hashes that the lock does not list",
    ]


def test_requirement_roots_normalize_names() -> None:
    text = "# comment\nPyYAML\nscikit_learn  # the model library\nuvicorn[standard]>=0.54\n\n"
    assert images.requirement_roots(text) == ["pyyaml", "scikit-learn", "uvicorn"]


def test_sbom_lists_debian_and_python_packages() -> None:
    status = (
        "Package: python3\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 3.11.2-1+b1\nDescription: x\n continued\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"
    )
    debian = images.parse_dpkg_status(status)
    assert debian == [("python3", "3.11.2-1+b1", "amd64")]
    meta = images.parse_metadata(
        "Metadata-Version: 2.1\nName: scikit-learn\nVersion: 1.9.1\n\nName: x"
    )
    assert meta == ("scikit-learn", "1.9.1")
    doc = images.cyclonedx("docker.io/modelship/serving:0.1.0", "k", debian, [meta], timestamp="t")
    json.dumps(doc)
    assert doc["bomFormat"] == "CycloneDX"
    purls = [c["purl"] for c in doc["components"]]  # type: ignore[attr-defined]
    assert "pkg:pypi/scikit-learn@1.9.1" in purls
    assert "pkg:deb/debian/python3@3.11.2-1+b1?arch=amd64&distro=debian-12" in purls
    again = images.cyclonedx(
        "docker.io/modelship/serving:0.1.0", "k", debian, [meta], timestamp="t"
    )
    assert again == doc


def test_the_operator_image_ships_every_serving_module_the_operator_imports() -> None:
    """The operator image carries only a few modules of the model server; every
    ``modelship_serving`` module the operator imports (also inside a function), and every
    module those import in turn at module level, must be among them, or the operator fails in
    its pod only. (A serving module's imports inside its functions are the server's own: the
    operator never calls those functions.)"""
    import ast

    repo = Path(__file__).resolve().parents[2]
    shipped = set(images.image_specs("0")["operator"].inputs)
    serving = repo / "serving/modelship_serving"

    def serving_imports(path: Path) -> set[str]:
        found: set[str] = set()
        tree = ast.parse(path.read_text())
        nodes = tree.body if path.parent == serving else list(ast.walk(tree))
        for node in nodes:
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1 and path.parent == serving:
                    found.add(module or "__init__")
                elif module.startswith("modelship_serving."):
                    found.add(module.split(".", 1)[1])
                elif module == "modelship_serving":
                    found |= {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {
                    a.name.split(".", 1)[1]
                    for a in node.names
                    if a.name.startswith("modelship_serving.")
                }
        return found

    needed: set[str] = set()
    todo = list((repo / "operator").rglob("*.py"))
    while todo:
        for module in serving_imports(todo.pop()):
            if module not in needed:
                needed.add(module)
                todo.append(serving / f"{module}.py")
    missing = sorted(
        f"serving/modelship_serving/{m}.py"
        for m in needed
        if f"serving/modelship_serving/{m}.py" not in shipped
    )
    assert "contract" in needed and not missing, missing
