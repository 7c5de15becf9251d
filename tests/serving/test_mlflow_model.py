"""MLflow model directories: the MLmodel file read as YAML, and the sklearn flavor's file
loaded by the usual rules (skops from the allow-list; pickle only when pinned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelship_serving.artifacts import sha256_file
from modelship_serving.config import Settings
from modelship_serving.errors import ModelLoadError
from modelship_serving.loading import load_model
from modelship_serving.mlflow_model import child_uri, sklearn_flavor
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

FLAVOR = """
flavors:
  python_function: {loader_module: mlflow.sklearn, model_path: model.skops}
  sklearn: {pickled_model: %s, serialization_format: %s, sklearn_version: 1.9.1}
"""


@pytest.mark.parametrize(
    ("serialization", "fmt"), [("skops", "skops"), ("pickle", "pickle"), ("cloudpickle", "pickle")]
)
def test_the_sklearn_flavor_names_the_file_and_its_format(serialization: str, fmt: str) -> None:
    flavor = sklearn_flavor(FLAVOR % ("model.bin", serialization), "MLmodel")
    assert (flavor.file, flavor.format, flavor.sklearn_version) == ("model.bin", fmt, "1.9.1")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("flavors: {xgboost: {data: model.xgb}}", "has no sklearn flavor (flavors: xgboost)"),
        ("artifact_path: x", "it has no flavors"),
        ("flavors: [", "is not a readable MLmodel file"),
        (FLAVOR % ("../../etc/passwd", "skops"), "must be a file inside the model directory"),
        (FLAVOR % ("/abs/model.skops", "skops"), "must be a file inside the model directory"),
        (FLAVOR % ("model.onnx", "onnx"), "serialization_format 'onnx' is not one of"),
        ("flavors: {sklearn: {serialization_format: skops}}", "names no pickled_model file"),
    ],
)
def test_an_mlmodel_the_server_cannot_serve_is_refused_with_the_reason(
    text: str, words: str
) -> None:
    with pytest.raises(ModelLoadError, match="s3://b/m/MLmodel") as caught:
        sklearn_flavor(text, "s3://b/m/MLmodel")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("directory", "child"),
    [
        ("s3://bucket/1/m-1/artifacts", "s3://bucket/1/m-1/artifacts/MLmodel"),
        ("http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/0/m/artifacts/",
         "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/0/m/artifacts/MLmodel"),
        ("file:///models/churn", "file:///models/churn/MLmodel"),
    ],
)  # fmt: skip
def test_files_of_a_model_directory_are_named_below_it(directory: str, child: str) -> None:
    assert child_uri(directory, "MLmodel") == child


def _saved(tmp_path: Path, serialization: str) -> tuple[Path, LogisticRegression, np.ndarray]:
    import mlflow.sklearn

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    target = tmp_path / serialization
    mlflow.sklearn.save_model(model, target, serialization_format=serialization)
    return target, model, X


def test_a_model_saved_by_mlflow_with_skops_is_served_unpinned(tmp_path: Path) -> None:
    folder, model, X = _saved(tmp_path, "skops")
    loaded = load_model(Settings(model_uri=folder.as_uri(), model_format="mlflow"))
    assert loaded.artifact_format == "skops"
    assert loaded.sha256 == sha256_file(folder / "model.skops")
    np.testing.assert_array_equal(loaded.estimator.predict(X), model.predict(X))


def test_a_model_saved_by_mlflow_with_cloudpickle_needs_its_pin(tmp_path: Path) -> None:
    folder, model, X = _saved(tmp_path, "cloudpickle")
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        load_model(Settings(model_uri=folder.as_uri(), model_format="mlflow"))
    pin = sha256_file(folder / "model.pkl")
    loaded = load_model(Settings(model_uri=folder.as_uri(), model_format="mlflow",
                                 model_sha256=pin))  # fmt: skip
    np.testing.assert_array_equal(loaded.estimator.predict(X), model.predict(X))
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_model(Settings(model_uri=folder.as_uri(), model_format="mlflow",
                            model_sha256="1" * 64))  # fmt: skip
