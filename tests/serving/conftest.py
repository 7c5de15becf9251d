"""Fixtures: real models trained here, and real modelship-serve processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from modelship_serving.artifacts import save_model
from serving_helpers import Artifact, Server, start_server, stop_server
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from tabular_models import TabularArtifact, churn_frame, churn_pipeline, strict_forest


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def classifier(models_dir: Path) -> Artifact:
    """Breast-cancer LogisticRegression: binary classifier with predict_proba."""
    X, y = load_breast_cancer(return_X_y=True)
    est = LogisticRegression(solver="newton-cholesky").fit(X, y)
    path = models_dir / "bc-logreg.skops"
    return Artifact(path, save_model(est, path), X, y, est)


@pytest.fixture(scope="session")
def regressor(models_dir: Path) -> Artifact:
    """Diabetes Ridge regression."""
    X, y = load_diabetes(return_X_y=True)
    est = Ridge().fit(X, y)
    path = models_dir / "diabetes-ridge.skops"
    return Artifact(path, save_model(est, path), X, y, est)


@pytest.fixture(scope="session")
def named_forest(models_dir: Path) -> Artifact:
    """Iris RandomForest with string classes and feature names (as if fitted on a DataFrame)."""
    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    est = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, labels)
    est.feature_names_in_ = np.array(["sl", "sw", "pl", "pw"], dtype=object)
    path = models_dir / "iris-forest.skops"
    return Artifact(path, save_model(est, path), X, labels, est)


@pytest.fixture(scope="module")
def classifier_server(
    tmp_path_factory: pytest.TempPathFactory, classifier: Artifact
) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("srv"),
        classifier,
        "--sha256",
        classifier.sha256,
        "--model-version",
        "1.4.0",
        "--variant",
        "canary",
        name="bc",
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def regressor_server(
    tmp_path_factory: pytest.TempPathFactory, regressor: Artifact
) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("srv"), regressor, "--model-version", "2", name="diabetes"
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def forest_server(
    tmp_path_factory: pytest.TempPathFactory, named_forest: Artifact
) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("srv"), named_forest, name="iris")
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def churn(models_dir: Path) -> TabularArtifact:
    """ColumnTransformer (imputed one-hot strings, imputed scaled numbers) + LogisticRegression,
    fitted on a DataFrame with missing values; its columns recorded at save time."""
    frame, y = churn_frame(600, seed=1)
    est = churn_pipeline().fit(frame, y)
    path = models_dir / "churn.skops"
    return TabularArtifact(path, save_model(est, path, example=frame.head(20)), frame, y, est)


@pytest.fixture(scope="session")
def strict(models_dir: Path) -> TabularArtifact:
    """One-hot strings that refuse unseen categories, numbers passed through, a dropped column,
    a RandomForest with string classes; columns read from the estimator (no example)."""
    frame, y = churn_frame(600, seed=2, missing=False)
    labels = np.where(y == 1, "churn", "stay")
    est = strict_forest().fit(frame, labels)
    path = models_dir / "strict.skops"
    return TabularArtifact(path, save_model(est, path), frame, labels, est)


@pytest.fixture(scope="module")
def churn_server(
    tmp_path_factory: pytest.TempPathFactory, churn: TabularArtifact
) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("srv"), churn, "--sha256", churn.sha256, name="churn"
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def strict_server(
    tmp_path_factory: pytest.TempPathFactory, strict: TabularArtifact
) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("srv"), strict, name="strict")
    yield server
    stop_server(server)
