"""Fixtures: real models trained here, served by real modelship-serve processes on loopback
(the serving tests' helpers)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "serving"))

from modelship_serving.artifacts import save_model
from serving_helpers import Artifact, Server, start_server, stop_server
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from tabular_models import TabularArtifact, churn_frame, strict_forest


@pytest.fixture(scope="session")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> TabularArtifact:
    frame, y = churn_frame(500, seed=21, missing=False)
    labels = [("churn" if v else "stay") for v in y]
    est = strict_forest().fit(frame, labels)
    path = tmp_path_factory.mktemp("models") / "churn.skops"
    return TabularArtifact(path, save_model(est, path, example=frame.head()), frame, y, est)


@pytest.fixture(scope="session")
def numeric(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    X, y = load_breast_cancer(return_X_y=True)
    est = LogisticRegression(solver="newton-cholesky").fit(X, y)
    path = tmp_path_factory.mktemp("models") / "bc.skops"
    return Artifact(path, save_model(est, path), X, y, est)


@pytest.fixture(scope="session")
def tabular_server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularArtifact
) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("srv"), tabular, "--model-version", "2.0.0", name="churn"
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def numeric_server(tmp_path_factory: pytest.TempPathFactory, numeric: Artifact) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("srv"), numeric, name="bc")
    yield server
    stop_server(server)
