"""Writing a downloaded artifact to disk within a size limit."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import ModelLoadError


def too_large(uri: str, size: int, limit: int) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load {uri}: the object is {size} bytes, over the limit of {limit} bytes "
        "(raise spec.model.maxSize; for the server alone, MODELSHIP_MODEL_MAX_BYTES or "
        "--max-model-bytes)"
    )


def write_limited(
    uri: str, chunks: Iterable[bytes], declared: str | None, part: Path, max_bytes: int
) -> int:
    """Write CHUNKS to PART, refusing before the first byte when the declared length
    (Content-Length) is over MAX_BYTES and as soon as the bytes written are; return the size.
    """
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(uri, int(declared), max_bytes)
    written = 0
    with open(part, "wb") as out:
        for chunk in chunks:
            written += len(chunk)
            if written > max_bytes:
                raise too_large(uri, written, max_bytes)
            out.write(chunk)
    return written
