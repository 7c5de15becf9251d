"""Model registry sources: parsing ``models:/`` URIs and deciding what they resolve to. Pure.

``spec.model.uri`` may name a version in an MLflow model registry instead of a file:
``models:/<name>/<version>`` or ``models:/<name>@<alias>``. The operator resolves it once,
when the rollout of that model starts (:mod:`modelship_operator.mlflow_registry` does the
REST calls), to the artifact's real location, and records the result in status
(``ModelRef.uri``, ``resolvedFrom``, ``registryVersion``). While the spec keeps naming the
same registry URI, the recorded artifact is reused and the registry is not asked again: an
alias moved later does not change a running rollout, nor what stable serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote

from modelship_operator.status import ModelRef

SCHEME: Final = "models:/"
#: Registered model names: MLflow allows almost anything but '/' and '@' are separators here.
_NAME = r"[^\s/@:]{1,256}"
_VERSION = r"[1-9][0-9]{0,9}"
_ALIAS = r"[A-Za-z0-9_-]{1,255}"
REGISTRY_URI_PATTERN: Final = rf"^models:/{_NAME}(/{_VERSION}|@{_ALIAS})$"
REGISTRY_URI_MESSAGE: Final = (
    "a registry uri must be models:/<name>/<version> (a version number, e.g. models:/churn/3) "
    "or models:/<name>@<alias> (e.g. models:/churn@champion)"
)
#: The serving format of an MLflow model directory (MLmodel + the flavor's file).
MLFLOW_FORMAT: Final = "mlflow"
#: Artifact schemes the serving pods can read an MLflow model from, once resolved.
READABLE_SCHEMES: Final = ("s3://", "http://", "https://", "file:///")


class RegistryError(Exception):
    """A registry URI cannot be resolved; the message says why, for the Degraded condition."""


@dataclass(frozen=True)
class RegistryRef:
    """A parsed ``models:/`` URI: a version number or an alias of a registered model."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return (
            f"{SCHEME}{self.name}/{self.version}"
            if self.version
            else f"{SCHEME}{self.name}@{self.alias}"
        )


@dataclass(frozen=True)
class ModelFile:
    """The file of an MLflow model the operator read the MLmodel of: what the pods load."""

    uri: str
    #: skops or pickle (the flavor's serialization_format).
    format: str
    #: The sha256 the operator computed of a skops file (None for a pickle: its hash must be
    #: pinned by the user, as a pickle runs code when loaded).
    sha256: str | None


@dataclass(frozen=True)
class ResolvedVersion:
    """What the registry said about a model version: its number and where its files are."""

    version: str
    #: The model directory, as the registry names it (s3://, mlflow-artifacts:/, runs:/...).
    artifact_uri: str


def is_registry_uri(uri: str) -> bool:
    return uri.startswith(SCHEME)


def parse_registry_uri(uri: str) -> RegistryRef:
    """``models:/name/3`` or ``models:/name@alias``; ValueError with the accepted shapes."""
    if not re.fullmatch(REGISTRY_URI_PATTERN, uri):
        raise ValueError(f"{REGISTRY_URI_MESSAGE}, got {uri!r}")
    rest = uri.removeprefix(SCHEME)
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return RegistryRef(name=name, alias=alias)
    name, version = rest.split("/", 1)
    return RegistryRef(name=name, version=version)


def artifact_location(artifact_uri: str, tracking_uri: str) -> str:
    """Where the serving pods read an MLflow model directory from.

    ``mlflow-artifacts:/path`` (a tracking server that proxies its artifact store) becomes
    the server's own artifact download API; ``s3://``, ``http(s)://`` and ``file:///`` are
    read as they are (``spec.s3`` holds the S3 credentials). Other stores (dbfs, gs, wasbs,
    ...) are refused with the reason.
    """
    location = artifact_uri.rstrip("/")
    if location.startswith("mlflow-artifacts:"):
        path = location.removeprefix("mlflow-artifacts:").lstrip("/")
        # mlflow-artifacts://host/path names another server; the path is what counts here.
        if location.startswith("mlflow-artifacts://"):
            path = path.partition("/")[2]
        base = tracking_uri.rstrip("/")
        return f"{base}/api/2.0/mlflow-artifacts/artifacts/{quote(path)}"
    if location.startswith(READABLE_SCHEMES):
        return location
    raise RegistryError(
        f"the model's artifacts are at {artifact_uri!r}, a store the serving pods cannot "
        "read: use an MLflow server that proxies artifacts (mlflow-artifacts:/) or keeps "
        "them in S3 (s3://)"
    )


def recorded(
    uri: str, version: str, sha256: str | None, max_size: str | None, *refs: ModelRef | None
) -> ModelRef | None:
    """The artifact recorded for registry URI ``uri`` by an earlier reconcile (the rollout's
    candidate, or what stable serves), used again instead of asking the registry while the
    spec names the same URI, version, sha256 and maxSize."""
    for ref in refs:
        if (
            ref is not None
            and ref.resolved_from == uri
            and ref.version == version
            and _same_pin(ref, sha256)
            and ref.max_size == max_size
        ):
            return ref
    return None


def _same_pin(ref: ModelRef, sha256: str | None) -> bool:
    """Whether REF carries the spec's pin SHA256: the user's own, or (without one) the
    operator's or none."""
    if sha256:
        return ref.sha256_source == "spec" and ref.sha256 == sha256.lower()
    return ref.sha256_source != "spec"


def resolved_ref(
    uri: str,
    found: ResolvedVersion,
    tracking_uri: str,
    *,
    version: str,
    sha256: str | None,
    max_size: str | None,
    file: ModelFile | None = None,
) -> ModelRef:
    """The ModelRef a registry URI stands for, pinned to the spec's sha256 if any.

    With ``file`` (the operator read the version's MLmodel): that file in its format,
    pinned to the user's sha256, else to the one the operator computed of a skops file,
    so every pod of the version verifies the same bytes; a pickle stays unpinned without
    the user's pin, and the server refuses it. Without: the model directory (format
    mlflow: each pod reads MLmodel itself), pinned only by the user."""
    pin = (sha256 or "").lower()
    source: Literal["spec", "operator"] | None = "spec" if pin else None
    location, fmt = artifact_location(found.artifact_uri, tracking_uri), MLFLOW_FORMAT
    if file is not None:
        location, fmt = file.uri, file.format
        if not pin and file.sha256:
            pin, source = file.sha256, "operator"
    return ModelRef(
        version=version,
        uri=location,
        sha256=pin,
        sha256_source=source,
        format=fmt,
        max_size=max_size,
        resolved_from=uri,
        registry_version=found.version,
    )


def spec_model(ref: ModelRef) -> dict[str, str | None]:
    """The spec.model fields that name ``ref`` again (``kubectl modelship undo``): a
    registry model by its version number (``models:/<name>/<registryVersion>``, which no
    alias move changes), unpinned unless it was pinned; any other as recorded. None marks a
    field to remove (a JSON merge patch's null)."""
    fields = ref.to_api()
    for recorded_only in ("resolvedFrom", "registryVersion", "sha256Source"):
        fields.pop(recorded_only, None)
    if ref.resolved_from is None:
        return fields
    name = parse_registry_uri(ref.resolved_from).name
    number = ref.registry_version
    uri = f"{SCHEME}{name}/{number}" if number else ref.resolved_from
    pin = ref.sha256 if ref.sha256_source == "spec" else None
    return fields | {"uri": uri, "format": "auto", "sha256": pin}
