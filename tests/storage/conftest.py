"""A real SeaweedFS (`weed server -filer -s3`) on 127.0.0.1 with access keys, and models
trained here stored in it. Without the built `weed` (`make binaries`) the tests skip, and
under CI=true they fail."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from modelship_cluster.pytest_plugin import skip_or_fail
from modelship_cluster.seaweedfs import SeaweedFS, weed_binary
from modelship_serving.artifacts import save_model, sha256_file
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

sys.path.append(str(Path(__file__).resolve().parents[1] / "serving"))

from serving_helpers import Artifact
from storage_helpers import READER, SCOPED, Stored


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    weed = weed_binary()
    if weed is None:
        skip_or_fail("SeaweedFS' weed is not built: run `make binaries` (or set MODELSHIP_WEED)")
        raise AssertionError("unreachable")
    store = SeaweedFS(weed, tmp_path_factory.mktemp("seaweedfs"), [READER, SCOPED])
    store.start()
    yield store
    store.stop()


def _store(seaweed: SeaweedFS, path: Path, bucket: str, key: str, art: Artifact) -> Stored:
    seaweed.put(bucket, key, path.read_bytes())
    return Stored(path, sha256_file(path), art.X, art.y, art.estimator, f"s3://{bucket}/{key}")


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    X, y = load_iris(return_X_y=True)
    estimator = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("models") / "iris.skops"
    return Artifact(path, save_model(estimator, path), X, y, estimator)


@pytest.fixture(scope="session")
def stored(seaweed: SeaweedFS, iris: Artifact) -> Stored:
    """The iris forest as s3://models/iris/1.0.0/model.skops."""
    return _store(seaweed, iris.path, "models", "iris/1.0.0/model.skops", iris)


@pytest.fixture(scope="session")
def stored_private(seaweed: SeaweedFS, iris: Artifact) -> Stored:
    """The same artifact in the "private" bucket, which SCOPED may not read."""
    return _store(seaweed, iris.path, "private", "iris.skops", iris)


@pytest.fixture(scope="session")
def stored_pickle(
    seaweed: SeaweedFS, iris: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> Stored:
    """The iris forest as a joblib pickle: it loads only with its sha256 pinned."""
    path = tmp_path_factory.mktemp("pickles") / "iris.joblib"
    joblib.dump(iris.estimator, path)
    return _store(seaweed, path, "models", "iris/1.0.0/model.joblib", iris)
