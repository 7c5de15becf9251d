"""The local cluster's model store: model files served over HTTP to the pods.

A real cluster keeps models in object storage or a model registry and pods download them
by URI; here a read-only static file server on the pod network's gateway plays that part,
so ModelDeployments use `http://10.244.0.1:8000/<file>` URIs exactly as they would use
`https://models.example.com/<file>`. It serves one folder and nothing else (Python's own
`http.server`, which lists and reads files but never writes).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

PORT = 8000


@dataclass(frozen=True)
class StoredModel:
    uri: str
    sha256: str
    path: Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def server_args(directory: Path, host: str, port: int = PORT) -> list[str]:
    return [
        sys.executable,
        "-m",
        "http.server",
        "--bind",
        host,
        "--directory",
        str(directory),
        str(port),
    ]


def base_url(host: str, port: int = PORT) -> str:
    return f"http://{host}:{port}"


def add(directory: Path, source: Path, host: str, name: str | None = None) -> StoredModel:
    """Copy `source` into the store (world-readable, as pods run non-root) and return its URI."""
    if not source.is_file():
        raise FileNotFoundError(f"no model file at {source}")
    target_name = name or source.name
    if "/" in target_name or target_name.startswith("."):
        raise ValueError(f"{target_name!r} is not a plain file name")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / target_name
    shutil.copyfile(source, target)
    target.chmod(0o644)
    return StoredModel(f"{base_url(host)}/{target_name}", sha256_of(target), target)
