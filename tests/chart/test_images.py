"""The images' Dockerfiles: non-root, a pinned base, a small final stage, and the same
dependency versions the tests ran with."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(REPO.glob("*/Dockerfile"))


def test_every_component_has_a_dockerfile() -> None:
    assert {p.parent.name for p in DOCKERFILES} >= {"operator", "serving", "router"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_dockerfile_is_non_root_multi_stage_and_pinned(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base, "the base image is one pinned ARG"
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "build tools stay in the build stage"
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 65532(:65532)?$", final_stage, re.M)
    assert "pip install" not in final_stage and "apt-get" not in final_stage


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_pinned_dependencies_are_the_tested_versions(dockerfile: Path) -> None:
    pins = re.findall(r'"([A-Za-z0-9_.\-\[\]]+)==([^"]+)"', dockerfile.read_text())
    assert pins, "dependencies are pinned"
    for name, pinned in pins:
        assert version(re.sub(r"\[.*\]", "", name)) == pinned, f"{dockerfile}: {name}"
