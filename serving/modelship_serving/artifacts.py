"""Writing model artifacts the server can load safely (skops) and hashing them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks so large artifacts do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(estimator: Any, path: str | os.PathLike[str]) -> str:
    """Save a fitted estimator as a skops file and return its sha256 (pin it in the spec).

    skops is the preferred format because loading it never runs arbitrary code: only types
    on an allow-list are rebuilt.
    """
    import skops.io as sio

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    sio.dump(estimator, tmp)
    os.replace(tmp, target)
    return sha256_file(target)
