"""MLflow models: a directory with an ``MLmodel`` file naming the scikit-learn flavor's file.

``mlflow.sklearn.save_model``/``log_model`` write ``MLmodel`` (YAML) beside the model file;
its ``flavors.sklearn`` says which file (``pickled_model``, e.g. ``model.skops`` or
``model.pkl``) and how it was written (``serialization_format``: ``skops``, ``pickle`` or
``cloudpickle``). The server reads MLmodel as plain YAML (nothing is unpickled), then loads
that one file by the usual rules (:mod:`modelship_serving.loading`): verified against the
pinned sha256 first, skops rebuilt from the type allow-list, a pickle or cloudpickle file
opened only because its sha256 is pinned (or with the explicit unsafe opt-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final
from urllib.parse import urlparse

import yaml

from .config import Settings
from .errors import ModelLoadError

MLMODEL: Final = "MLmodel"
#: MLflow's serialization_format -> the server's artifact format.
FORMATS: Final = {"skops": "skops", "pickle": "pickle", "cloudpickle": "pickle"}
#: MLmodel is a few hundred bytes; anything this large is not one.
MLMODEL_MAX_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class SklearnFlavor:
    """What MLmodel says about the scikit-learn model: its file and its format."""

    file: str
    format: str
    sklearn_version: str | None = None


def child_uri(directory: str, name: str) -> str:
    """The URI of file ``name`` in model directory ``directory`` (any scheme)."""
    parsed = urlparse(directory)
    path = parsed.path.rstrip("/") + "/" + name
    return parsed._replace(path=path).geturl()


def sklearn_flavor(text: str | bytes, where: str) -> SklearnFlavor:
    """Parse an MLmodel file; ModelLoadError naming ``where`` when it is not a scikit-learn
    model this server can load."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{where} is not a readable MLmodel file: {exc}") from exc
    flavors = document.get("flavors") if isinstance(document, dict) else None
    if not isinstance(flavors, dict):
        raise ModelLoadError(f"{where} is not an MLmodel file: it has no flavors")
    flavor = flavors.get("sklearn")
    if not isinstance(flavor, dict):
        raise ModelLoadError(
            f"{where} has no sklearn flavor (flavors: {', '.join(sorted(flavors)) or 'none'}): "
            "modelship serves scikit-learn models logged with mlflow.sklearn"
        )
    name = flavor.get("pickled_model")
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{where}: the sklearn flavor names no pickled_model file")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or "\\" in name:
        raise ModelLoadError(
            f"{where}: pickled_model {name!r} must be a file inside the model directory"
        )
    serialization = flavor.get("serialization_format", "cloudpickle")
    fmt = FORMATS.get(str(serialization))
    if fmt is None:
        raise ModelLoadError(
            f"{where}: serialization_format {serialization!r} is not one of "
            f"{', '.join(sorted(FORMATS))}"
        )
    version = flavor.get("sklearn_version")
    return SklearnFlavor(file=name, format=fmt, sklearn_version=str(version) if version else None)


def model_file(settings: Settings) -> Settings:
    """Read the MLmodel of the directory ``settings.model_uri`` names and return settings
    pointing at its model file, in its format (the pinned sha256 is that file's)."""
    from .loading import local_artifact

    where = child_uri(settings.model_uri, MLMODEL)
    meta = settings.model_copy(
        update={
            "model_uri": where,
            "model_sha256": None,
            "model_max_bytes": min(settings.model_max_bytes, MLMODEL_MAX_BYTES),
        }
    )
    path = local_artifact(meta)
    flavor = sklearn_flavor(path.read_bytes(), where)
    return settings.model_copy(
        update={
            "model_uri": child_uri(settings.model_uri, flavor.file),
            "model_format": flavor.format,
        }
    )
