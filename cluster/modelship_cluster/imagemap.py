"""Container image -> local command, for the node agent of the local cluster.

The local cluster has no container runtime: each image is an explicit entry of
`images.yaml` (shipped in this package) naming the command of the installed environment it
stands for. Matching is explicit and first-match; an image without an entry is never run.
The argv follows Kubernetes' rules: `command` replaces the image's entrypoint, `args`
replaces its CMD, and the CMD is dropped when only `command` is given.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageEntry(BaseModel):
    """One image pattern and what it runs (see images.yaml for the meaning of each field)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pattern: str
    entrypoint: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    user: int = 65532
    working_dir: str = Field("/", alias="workingDir")
    env: dict[str, str] = Field(default_factory=dict)


class ImageMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[ImageEntry]

    def lookup(self, image: str) -> ImageEntry | None:
        """The first entry whose pattern matches `image` (`name` counts as `name:latest`)."""
        reference = normalize(image)
        for entry in self.images:
            if fnmatch.fnmatchcase(reference, entry.pattern):
                return entry
        return None


class UnknownImage(LookupError):
    """No entry for this image; the pod must wait, never run something else."""

    def __init__(self, image: str) -> None:
        super().__init__(
            f"image {image!r} is not in the local cluster's image map; "
            "add an entry to modelship_cluster/images.yaml (see docs/local-cluster-pods.md)"
        )
        self.image = image


def normalize(image: str) -> str:
    """`name` -> `name:latest`; tags and digests are kept as written."""
    last = image.rsplit("/", 1)[-1]
    if ":" in last or "@" in last:
        return image
    return f"{image}:latest"


def substitute(text: str, venv: Path, python: Path) -> str:
    return text.replace("{venv}", str(venv)).replace("{python}", str(python))


def container_argv(
    entry: ImageEntry,
    command: Sequence[str] | None,
    args: Sequence[str] | None,
) -> list[str]:
    """The process argv for a container, by Kubernetes' entrypoint/command rules."""
    if command:
        return [*command, *(args or [])]
    return [*entry.entrypoint, *(args if args else entry.args)]


def load(path: Path | None = None) -> ImageMap:
    """The image map from `path`, or the one shipped with this package."""
    if path is None:
        text = resources.files("modelship_cluster").joinpath("images.yaml").read_text()
    else:
        text = path.read_text()
    return ImageMap.model_validate(yaml.safe_load(text))


def resolve(
    image_map: ImageMap,
    image: str,
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    venv: Path | None = None,
    python: Path | None = None,
) -> tuple[ImageEntry, list[str]]:
    """Entry and final argv (placeholders filled in) for a container; raises UnknownImage."""
    entry = image_map.lookup(image)
    if entry is None:
        raise UnknownImage(image)
    venv = venv or Path(sys.prefix)
    python = python or venv / "bin" / "python"
    argv = [substitute(a, venv, python) for a in container_argv(entry, command, args)]
    return entry, argv


def default_path(venv: Path | None = None) -> str:
    """PATH inside containers: the environment's bin/ first, then the system's."""
    return f"{venv or Path(sys.prefix)}/bin:{DEFAULT_PATH}"
