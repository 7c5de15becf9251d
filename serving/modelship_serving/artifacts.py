"""Writing model artifacts the server can load safely (skops) and hashing them."""

from __future__ import annotations

import hashlib
import os
import zipfile
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


def save_model(estimator: Any, path: str | os.PathLike[str], *, example: Any = None) -> str:
    """Save a fitted estimator as a skops file and return its sha256 (pin it in the spec).

    skops is the preferred format because loading it never runs arbitrary code: only types
    on an allow-list are rebuilt. ``example``, a pandas DataFrame like the training data (a
    few rows are enough), records the model's columns and their dtypes in the artifact, as
    JSON the server reads to describe and validate the inputs; without it the server reads
    them from the estimator (names, and what its encoders and imputers saw in training).
    """
    import skops.io as sio

    from .signature import SIGNATURE_MEMBER, SavedSignature, columns_of

    saved: SavedSignature | None = None
    if example is not None:
        found = columns_of(estimator, example)
        if found is None:
            raise ValueError(
                "example given, but the estimator has no feature_names_in_: fit it on a "
                "DataFrame to serve named columns"
            )
        saved = SavedSignature(columns=found[0], tabular=found[1])
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    sio.dump(estimator, tmp)
    if saved is not None:
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(SIGNATURE_MEMBER, saved.model_dump_json())
    os.replace(tmp, target)
    return sha256_file(target)
