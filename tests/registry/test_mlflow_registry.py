"""models:/ URIs against a real MLflow server: the operator's resolution (version, alias,
and each failure with its cause) and the model server loading what it resolved to, in the
formats mlflow.sklearn writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from modelship_operator.mlflow_registry import Credentials, MlflowRegistry
from modelship_operator.sources import (
    RegistryError,
    ResolvedVersion,
    parse_registry_uri,
    resolved_ref,
)
from modelship_serving.artifacts import sha256_file
from modelship_serving.config import Settings
from modelship_serving.errors import ModelLoadError
from modelship_serving.loading import load_model
from registry_helpers import Mlflow, Registered


def resolve(uri: str, server: str, credentials: Credentials | None = None) -> ResolvedVersion:
    return asyncio.run(MlflowRegistry(server, credentials).resolve(parse_registry_uri(uri)))


def settings_for(
    uri: str, found: ResolvedVersion, server: Mlflow, tmp: Path, sha256: str | None = None
) -> Settings:
    """What the operator renders for the resolved version (MODELSHIP_MODEL_URI, _FORMAT,
    _SHA256), as the server's settings."""
    ref = resolved_ref(uri, found, server.uri, version="1.0.0", sha256=sha256, max_size=None)
    return Settings(
        model_uri=ref.uri,
        model_format=ref.format,
        model_sha256=ref.sha256 or None,
        model_cache_dir=str(tmp / "cache"),
    )


def model_file(server: Mlflow, found: ResolvedVersion, name: str) -> Path:
    """The version's file as the tracking server stored it (to pin its sha256)."""
    path = found.artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    return server.state / "artifacts" / path / name


def test_a_version_resolves_to_its_files_and_the_server_loads_the_skops_model(
    registered: Registered, tmp_path: Path
) -> None:
    server = registered.server
    found = resolve("models:/iris/1", server.uri)
    assert found.version == "1"
    assert found.artifact_uri.startswith("mlflow-artifacts:/")
    loaded = load_model(settings_for("models:/iris/1", found, server, tmp_path))
    assert loaded.artifact_format == "skops"
    assert loaded.sha256 == sha256_file(model_file(server, found, "model.skops"))
    np.testing.assert_array_equal(
        loaded.estimator.predict(registered.X), registered.v1.predict(registered.X)
    )


def test_an_alias_resolves_to_the_version_it_names_when_asked(registered: Registered) -> None:
    from mlflow import MlflowClient

    server = registered.server
    assert resolve("models:/iris@champion", server.uri).version == "1"
    client = MlflowClient(server.uri)
    client.set_registered_model_alias("iris", "moving", "1")
    first = resolve("models:/iris@moving", server.uri)
    client.set_registered_model_alias("iris", "moving", "2")
    moved = resolve("models:/iris@moving", server.uri)
    assert (first.version, moved.version) == ("1", "2")
    assert first.artifact_uri != moved.artifact_uri


def test_a_cloudpickled_version_is_unpickled_only_when_its_sha256_is_pinned(
    registered: Registered, tmp_path: Path
) -> None:
    server = registered.server
    found = resolve("models:/iris@challenger", server.uri)
    assert found.version == "2"
    with pytest.raises(
        ModelLoadError, match=r"refusing to unpickle .*model\.pkl.*spec\.model\.sha256"
    ):
        load_model(settings_for("models:/iris@challenger", found, server, tmp_path))
    pinned = sha256_file(model_file(server, found, "model.pkl"))
    loaded = load_model(settings_for("models:/iris@challenger", found, server, tmp_path, pinned))
    assert loaded.sha256 == pinned
    np.testing.assert_array_equal(
        loaded.estimator.predict(registered.X), registered.v2.predict(registered.X)
    )


def test_a_pinned_sha256_that_is_not_the_registered_file_is_refused(
    registered: Registered, tmp_path: Path
) -> None:
    server = registered.server
    found = resolve("models:/iris/1", server.uri)
    with pytest.raises(ModelLoadError, match=r"sha256 mismatch for .*model\.skops"):
        load_model(settings_for("models:/iris/1", found, server, tmp_path, "0" * 64))


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("models:/absent/1", "models:/absent/1: no version 1 of registered model 'absent'"),
        ("models:/iris/99", "models:/iris/99: no version 99 of registered model 'iris'"),
        ("models:/iris@nobody", "models:/iris@nobody: no alias 'nobody' of registered model"),
    ],
)
def test_a_model_version_or_alias_the_registry_lacks_is_named_in_the_error(
    registered: Registered, uri: str, words: str
) -> None:
    with pytest.raises(RegistryError) as caught:
        resolve(uri, registered.server.uri)
    assert words in str(caught.value)
    assert registered.server.uri in str(caught.value)


def test_an_unreachable_registry_is_reported_with_its_address() -> None:
    with pytest.raises(
        RegistryError, match=r"cannot reach the MLflow server at http://127.0.0.1:9"
    ):
        resolve("models:/iris/1", "http://127.0.0.1:9")


def test_credentials_the_registry_refuses_are_reported_with_what_to_set(
    auth_server: Mlflow,
) -> None:
    wrong = Credentials(username="admin", password="not-the-password")
    with pytest.raises(RegistryError) as caught:
        resolve("models:/iris/1", auth_server.uri, wrong)
    message = str(caught.value)
    assert "refused the operator's credentials (HTTP 401" in message
    assert "MLFLOW_TRACKING_USERNAME='admin'" in message
    assert "MLFLOW_TRACKING_TOKEN" in message
    with pytest.raises(RegistryError, match="refused the operator's credentials"):
        resolve("models:/iris/1", auth_server.uri)  # none at all
    # the right login gets past the door: the registry answers about the model
    right = Credentials.from_env(
        {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "registry-admin-pw-1"}
    )
    with pytest.raises(RegistryError, match="no version 1 of registered model 'iris'"):
        resolve("models:/iris/1", auth_server.uri, right)
