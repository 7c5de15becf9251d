"""Writing model artifacts the server can load safely (skops) and hashing them."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .profile import ReferenceProfile

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks so large artifacts do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    estimator: Any, path: str | os.PathLike[str], *, example: Any = None, reference: Any = None
) -> str:
    """Save a fitted estimator as a skops file and return its sha256 (pin it in the spec).

    skops is the preferred format because loading it never runs arbitrary code: only types
    on an allow-list are rebuilt. ``example``, a pandas DataFrame like the training data (a
    few rows are enough), records the model's columns and their dtypes in the artifact, as
    JSON the server reads to describe and validate the inputs; without it the server reads
    them from the estimator (names, and what its encoders and imputers saw in training).

    ``reference``, the training inputs (a DataFrame, or an array of numbers), records a profile
    of each numeric feature (its deciles and the share of rows between them) the server
    compares its recent inputs with, exporting each feature's population stability index
    (drift). Features are named by the DataFrame's columns, else the estimator's
    ``feature_names_in_``, else ``x0`` .. ``x{n-1}``.
    """
    import skops.io as sio

    from .profile import REFERENCE_MEMBER
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
    profile = None if reference is None else reference_profile(estimator, reference)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    sio.dump(estimator, tmp)
    if saved is not None:
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(SIGNATURE_MEMBER, saved.model_dump_json())
    if profile is not None:
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(REFERENCE_MEMBER, profile.model_dump_json())
    os.replace(tmp, target)
    return sha256_file(target)


def reference_profile(estimator: Any, reference: Any) -> ReferenceProfile:
    """The profile ``save_model(..., reference=)`` records: a DataFrame by its numeric columns,
    an array by the estimator's ``feature_names_in_`` (or ``x0`` ..), its width checked
    against the number of features the estimator was fitted on."""
    import numpy as np

    from .profile import profile_of

    names = getattr(estimator, "feature_names_in_", None)
    n_in = getattr(estimator, "n_features_in_", None)
    if hasattr(reference, "columns") and hasattr(reference, "dtypes"):
        profile = profile_of(reference)
        width = len(profile.features)
        if names is None and n_in is not None and width != int(n_in):
            # the estimator's columns have no names: its profile is matched by position
            raise ValueError(
                f"reference has {width} numeric columns, the estimator was fitted on "
                f"{int(n_in)} unnamed features"
            )
        return profile
    shape = np.shape(reference)
    if len(shape) == 2 and n_in is not None and shape[1] != int(n_in):
        raise ValueError(
            f"reference has {shape[1]} columns, the estimator was fitted on {int(n_in)} "
            "features: pass the training inputs (a DataFrame for named columns)"
        )
    return profile_of(reference, None if names is None else [str(n) for n in names])
