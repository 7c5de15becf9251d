"""Fetch, verify and load a model artifact without ever unpickling an unverified file.

Order matters: the bytes are fetched, hashed and compared with the pinned sha256 before any
deserialiser sees them. skops files are rebuilt from an explicit type allow-list; joblib and
pickle files can run code on load, so they are only opened when their sha256 is pinned (or the
operator opted in to the risk explicitly).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .artifacts import sha256_file
from .config import Settings
from .downloads import write_limited
from .errors import ModelLoadError
from .profile import REFERENCE_MEMBER, ReferenceProfile
from .retries import TransientError, with_retries
from .signature import SIGNATURE_MEMBER, ModelSignature, SavedSignature, signature_of

log = logging.getLogger("modelship.serving")

# Types skops does not trust by default but that fitted scikit-learn models are made of. They are
# plain data containers (their __setstate__ only copies arrays), so rebuilding them runs no code.
DEFAULT_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.LogLink",
    "collections.OrderedDict",
    "numpy.dtype",
)


@dataclass(frozen=True)
class LoadedModel:
    """A verified, deserialised estimator and what was learnt while loading it."""

    estimator: Any
    signature: ModelSignature
    sha256: str
    artifact_format: str
    load_seconds: float
    local_path: Path
    #: The profile of the training inputs ``save_model(..., reference=)`` recorded, or None.
    reference: ReferenceProfile | None = None


def local_artifact(settings: Settings) -> Path:
    """Resolve the URI to a local file, downloading http(s) and s3 artifacts into the cache dir."""
    uri = settings.model_uri
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ModelLoadError(f"file URI must be file:///absolute/path, got {uri!r}")
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path} (from {uri!r})")
        return path
    if parsed.scheme in ("http", "https", "s3"):
        target = _cache_target(uri, settings)
        pinned = settings.model_sha256
        if pinned and target.is_file() and sha256_file(target) == pinned:
            log.info("model %s already downloaded to %s", uri, target)
            return target
        if parsed.scheme == "s3":
            _download_s3(uri, target, settings)
        else:
            _download(uri, target, settings)
        return target
    raise ModelLoadError(
        f"unsupported model URI scheme {parsed.scheme!r} in {uri!r}: "
        "use file://, http(s):// or s3://"
    )


def _cache_target(uri: str, settings: Settings) -> Path:
    """Where a downloaded artifact is kept in the pod (named by its pinned hash, so a
    restarted server of the same pod reads it again without downloading)."""
    cache = Path(settings.model_cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    name = Path(urlparse(uri).path).name or "model"
    key = settings.model_sha256 or hashlib.sha256(uri.encode()).hexdigest()
    return cache / f"{key[:16]}-{name}"


def _download_s3(uri: str, target: Path, settings: Settings) -> None:
    from .s3 import fetch

    fetch(
        uri,
        target,
        endpoint=settings.s3_endpoint_url,
        region=settings.s3_region,
        addressing_style=settings.s3_addressing_style,
        max_bytes=settings.model_max_bytes,
        timeout=settings.download_timeout_seconds,
        attempts=settings.download_attempts,
    )


def _download(uri: str, target: Path, settings: Settings) -> None:
    import httpx

    part = target.with_name(target.name + ".part")

    def attempt() -> int:
        try:
            with httpx.stream(
                "GET", uri, timeout=settings.download_timeout_seconds, follow_redirects=True
            ) as response:
                status = response.status_code
                if status >= 500 or status == 429:
                    raise TransientError(f"HTTP {status}")
                if status != 200:
                    raise ModelLoadError(f"downloading {uri} failed: HTTP {status}")
                return write_limited(uri, response.iter_bytes(1 << 20),
                                     response.headers.get("content-length"), part,
                                     settings.model_max_bytes)  # fmt: skip
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"downloading {uri} failed: {exc}") from exc

    log.info("downloading model from %s", uri)
    try:
        with_retries(f"downloading {uri}", attempt, settings.download_attempts)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)


def detect_format(path: Path, declared: str) -> str:
    """skops artifacts are zip archives; everything else is treated as joblib/pickle."""
    if declared != "auto":
        return declared
    if path.suffix == ".skops" or zipfile.is_zipfile(path):
        return "skops"
    return "joblib"


def _load_skops(path: Path, extra_trusted: list[str]) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a readable skops file: {exc}") from exc
    allowed = set(DEFAULT_TRUSTED_TYPES) | set(extra_trusted)
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise ModelLoadError(
            f"refusing to load {path}: it contains types outside the trusted list: {refused}. "
            "If you trust them, add them to MODELSHIP_TRUSTED_TYPES (comma separated) "
            "or --trusted-types."
        )
    return sio.load(path, trusted=sorted(t for t in untrusted if t in allowed))


def _member(path: Path, member: str) -> bytes | None:
    try:
        with zipfile.ZipFile(path) as archive:
            if member not in archive.namelist():
                return None
            return archive.read(member)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def recorded_signature(path: Path) -> SavedSignature | None:
    """The columns ``save_model(..., example=)`` recorded in a skops artifact (plain JSON,
    validated; nothing is unpickled), or None."""
    from pydantic import ValidationError

    text = _member(path, SIGNATURE_MEMBER)
    if text is None:
        return None
    try:
        return SavedSignature.model_validate_json(text)
    except ValidationError as exc:
        raise ModelLoadError(f"{path} has an invalid {SIGNATURE_MEMBER}: {exc}") from exc


def recorded_reference(path: Path) -> ReferenceProfile | None:
    """The profile of the training inputs ``save_model(..., reference=)`` recorded in a skops
    artifact (plain JSON, validated), or None."""
    from pydantic import ValidationError

    text = _member(path, REFERENCE_MEMBER)
    if text is None:
        return None
    try:
        return ReferenceProfile.model_validate_json(text)
    except ValidationError as exc:
        raise ModelLoadError(
            f"{path} has an invalid {REFERENCE_MEMBER} (the reference profile of the training "
            f"inputs; save the model again with save_model(..., reference=)): {exc}"
        ) from exc


def _load_pickle(path: Path) -> Any:
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a loadable joblib/pickle file: {exc}") from exc


def load_model(settings: Settings) -> LoadedModel:
    """Fetch, verify and deserialise the model the settings point at; raise ModelLoadError."""
    from sklearn.exceptions import InconsistentVersionWarning

    started = time.perf_counter()
    if settings.model_format == "mlflow":
        from .mlflow_model import model_file

        settings = model_file(settings)
    path = local_artifact(settings)
    actual = sha256_file(path)
    if settings.model_sha256 is not None and actual != settings.model_sha256:
        raise ModelLoadError(
            f"sha256 mismatch for {settings.model_uri}: expected {settings.model_sha256}, "
            f"file has {actual}. Refusing to start: the artifact is not the one that was pinned."
        )
    fmt = detect_format(path, settings.model_format)
    saved = recorded_signature(path) if fmt == "skops" else None
    reference = recorded_reference(path) if fmt == "skops" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        if fmt == "skops":
            estimator = _load_skops(path, settings.trusted_types)
        else:
            if settings.model_sha256 is None and not settings.allow_unsafe_pickle:
                raise ModelLoadError(
                    f"refusing to unpickle {settings.model_uri}: {fmt} files can run arbitrary "
                    "code when loaded, and this one's sha256 is not pinned. Pin it with --sha256 "
                    "/ MODELSHIP_MODEL_SHA256 (spec.model.sha256 of a ModelDeployment), or "
                    "save the model with skops "
                    "(modelship_serving.artifacts.save_model), or accept the risk with "
                    "MODELSHIP_ALLOW_UNSAFE_PICKLE=true."
                )
            estimator = _load_pickle(path)
    saved_version = None
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            saved_version = warning.message.original_sklearn_version
            break
    import sklearn

    if not callable(getattr(estimator, "predict", None)):
        raise ModelLoadError(
            f"{settings.model_uri} holds a {type(estimator).__name__}, which has no predict()"
        )
    try:
        signature = signature_of(estimator, saved_version or sklearn.__version__, saved)
    except ValueError as exc:
        raise ModelLoadError(f"cannot serve {settings.model_uri}: {exc}") from exc
    if signature.version_skew:
        log.warning(
            "SCIKIT-LEARN VERSION SKEW: %s was saved with scikit-learn %s but is served with %s; "
            "predictions may differ or fail. Re-save the model with the serving version.",
            settings.model_uri,
            signature.sklearn_version_saved,
            signature.sklearn_version_runtime,
        )
    return LoadedModel(
        estimator=estimator,
        signature=signature,
        sha256=actual,
        artifact_format=fmt,
        load_seconds=time.perf_counter() - started,
        local_path=path,
        reference=reference,
    )
