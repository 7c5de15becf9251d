"""One lock file: requirements/lock.txt pins every Python dependency (with hashes); the
images install subsets of it and .venv installs all of it, so tests run what images ship."""

from __future__ import annotations

import re
from importlib.metadata import distributions
from pathlib import Path

import pytest
from modelship_cluster import images

REPO = images.REPO
LOCK = images.parse_requirements((REPO / images.LOCK_FILE).read_text())
COMPONENTS = [name for name, spec in images.IMAGES.items() if spec.requirements]
DOCKERFILES = {name: REPO / spec.dockerfile for name, spec in images.IMAGES.items()}


def test_every_component_has_an_image_with_its_requirement_subset() -> None:
    assert set(COMPONENTS) == {"serving", "router", "operator"}


@pytest.mark.parametrize("name", [*COMPONENTS, "build"])
def test_each_subset_pins_the_lock_versions_and_covers_its_roots(name: str) -> None:
    subset = images.parse_requirements((REPO / f"requirements/{name}.txt").read_text())
    assert images.subset_errors(LOCK, subset) == [], "run `make lock`"
    roots = images.requirement_roots((REPO / f"requirements/{name}.in").read_text())
    assert set(roots) <= set(subset), "run `make lock`"


def test_the_lock_covers_pyproject_dependencies() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {images.normalize_name(re.match(r"[A-Za-z0-9._-]+", d).group(0)) for d in wanted}  # type: ignore[union-attr]
    assert names <= set(LOCK), f"not in the lock: {sorted(names - set(LOCK))}; run `make lock`"


def test_the_venv_runs_the_locked_versions() -> None:
    installed = {images.normalize_name(d.metadata["Name"]): d.version for d in distributions()}
    wrong = {
        name: (installed.get(name), pin.version)
        for name, pin in LOCK.items()
        if installed.get(name) != pin.version
    }
    assert wrong == {}, "installed vs locked; run `make venv` (scripts/bootstrap-venv.sh)"


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_dockerfile_installs_only_from_its_subset(name: str) -> None:
    text = DOCKERFILES[name].read_text()
    assert f"COPY requirements/{name}.txt " in text
    assert re.search(rf"--require-hashes\s+\\\s+-r /tmp/requirements/{name}\.txt", text)
    assert not re.search(r"[A-Za-z]==\d", text), "no version pins of its own: the lock has them"


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_dockerfile_is_non_root_multi_stage_and_debian(name: str) -> None:
    text = DOCKERFILES[name].read_text()
    assert re.search(r"^ARG BASE=docker\.io/library/debian:bookworm-slim$", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) >= 3, "build tools stay in the build stages"
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert final_stage.startswith("runtime\n")
    assert re.search(r"^USER 65532:65532$", final_stage, re.M)
    assert f'ENTRYPOINT ["modelship-{"serve" if name == "serving" else name}"]' in final_stage
    assert "pip install" not in final_stage and "apt-get" not in final_stage
    assert "RUN" not in final_stage, "the final stage only copies: no layer to rebuild"


def _runtime_stage(path: Path) -> str:
    text = path.read_text()
    return text[text.index("FROM ${BASE} AS runtime") :].split("\n\n", 1)[0]


def test_the_runtime_stage_is_one_text_so_one_cached_layer() -> None:
    stages = {name: _runtime_stage(DOCKERFILES[name]) for name in [*COMPONENTS, "testbed"]}
    assert len(set(stages.values())) == 1, "keep the runtime stages identical"


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_the_cache_key_covers_every_file_the_build_copies(name: str) -> None:
    spec = images.IMAGES[name]
    text = DOCKERFILES[name].read_text()
    sources = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        sources += line.split()[:-1]
    assert sources, "the build copies something"
    prefix = "" if spec.context_is_repo else str(Path(spec.dockerfile).parent) + "/"
    built = {spec.prebuilt}
    if spec.prebuilt in images.GO_MODULE_PREBUILT:
        built.add(images.GO_MODULE_PREBUILT[spec.prebuilt][1])  # the binary's own name
    for source in sources:
        if source in built:
            continue  # built into the context; its recipe is in the key
        path = prefix + source.rstrip("/")
        assert any(path == i or path.startswith(i.rstrip("/") + "/") for i in spec.inputs) or (
            not spec.context_is_repo and path in spec.inputs
        ), f"{name} copies {source} but its key does not hash it"
