"""Drift against the reference profile saved with the model, through real servers: models
trained here, saved with ``reference=`` their training inputs, served by modelship-serve."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from modelship_serving import contract
from modelship_serving.artifacts import save_model
from modelship_serving.profile import REFERENCE_MEMBER
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import Artifact, Server, start_server, stop_server
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from tabular_models import TabularArtifact, churn_frame, churn_pipeline, records

WINDOW = 1000
ENV = {"MODELSHIP_DRIFT_WINDOW": str(WINDOW)}
NAMES = [f"f{i}" for i in range(6)]


def psi_of(server: Server) -> dict[str, float]:
    """The PSI samples of /metrics, by feature."""
    text = server.client.get("/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == contract.INPUT_FEATURE_PSI:
            assert family.type == "gauge"
            out = {s.labels[contract.FEATURE]: s.value for s in family.samples}
    return out


def predict(server: Server, rows: list[Any], batch: int = 250) -> None:
    for start in range(0, len(rows), batch):
        answer = server.client.post(
            f"/v1/models/{server.name}:predict", json={"instances": rows[start : start + batch]}
        )
        assert answer.status_code == 200, answer.text


def drift_reference(server: Server) -> bool:
    parameters = server.client.get(f"/v2/models/{server.name}").json()["parameters"]
    return bool(parameters["drift_reference"])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Artifact, pd.DataFrame]:
    """LogisticRegression fitted on a DataFrame of six numeric columns, saved with the
    training split as reference; the test split is returned for the live rows."""
    X, y = make_classification(n_samples=6000, n_features=6, n_informative=4, random_state=0)
    frame = pd.DataFrame(X, columns=NAMES)
    train, test, y_train, _ = train_test_split(frame, y, test_size=1 / 3, random_state=0)
    est = LogisticRegression().fit(train, y_train)
    path = tmp_path_factory.mktemp("models") / "synthetic.skops"
    sha = save_model(est, path, reference=train)
    with zipfile.ZipFile(path) as archive:
        assert REFERENCE_MEMBER in archive.namelist()
    return Artifact(path, sha, train.to_numpy(), y_train, est), test


@pytest.fixture(scope="module")
def synthetic_server(
    tmp_path_factory: pytest.TempPathFactory, synthetic: tuple[Artifact, pd.DataFrame]
) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("srv"), synthetic[0], name="synthetic", env=ENV)
    yield server
    stop_server(server)


def test_rows_like_the_test_split_have_a_small_psi(
    synthetic: tuple[Artifact, pd.DataFrame], synthetic_server: Server
) -> None:
    assert drift_reference(synthetic_server)
    test = synthetic[1].to_numpy()
    rows = test[np.random.default_rng(1).integers(0, len(test), WINDOW)]
    predict(synthetic_server, rows.tolist())
    psi = psi_of(synthetic_server)
    assert set(psi) == set(NAMES)
    assert max(psi.values()) < 0.1, psi


def test_one_shifted_feature_has_a_large_psi_the_others_not(
    synthetic: tuple[Artifact, pd.DataFrame], synthetic_server: Server
) -> None:
    test = synthetic[1].to_numpy()
    rows = test[np.random.default_rng(2).integers(0, len(test), WINDOW)]
    rows[:, 2] += 3 * synthetic[0].X[:, 2].std()
    predict(synthetic_server, rows.tolist())  # the whole window: no earlier row is left
    psi = psi_of(synthetic_server)
    assert psi["f2"] > 0.25, psi
    assert max(v for k, v in psi.items() if k != "f2") < 0.1, psi


def test_fewer_rows_than_the_minimum_export_no_psi(
    tmp_path: Path, synthetic: tuple[Artifact, pd.DataFrame]
) -> None:
    server = start_server(tmp_path, synthetic[0], name="synthetic", env=ENV)
    try:
        rows = synthetic[1].to_numpy()[: contract.PSI_MIN_ROWS].tolist()
        predict(server, rows[:-1])
        assert psi_of(server) == {}
        assert "modelship_input_feature_window_mean" in server.client.get("/metrics").text
        predict(server, rows[-1:])  # the hundredth row, on the one-row path
        assert set(psi_of(server)) == set(NAMES)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def positional(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """Breast-cancer LogisticRegression fitted on an array (no column names)."""
    X, y = load_breast_cancer(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=0)
    est = LogisticRegression(solver="newton-cholesky").fit(X_train, y_train)
    path = tmp_path_factory.mktemp("models") / "bc-reference.skops"
    return Artifact(path, save_model(est, path, reference=X_train), X_train, y_train, est)


def test_unnamed_columns_are_matched_by_position(tmp_path: Path, positional: Artifact) -> None:
    server = start_server(tmp_path, positional, name="bc", env=ENV)
    try:
        assert drift_reference(server)
        X = positional.X
        rows = X[np.random.default_rng(3).integers(0, len(X), WINDOW)]
        rows[:, 5] += 3 * X[:, 5].std()
        predict(server, rows.tolist())
        psi = psi_of(server)
        assert set(psi) == {str(j) for j in range(30)}
        assert psi["5"] > 0.25, psi
        assert max(v for k, v in psi.items() if k != "5") < 0.1, psi
    finally:
        stop_server(server)


def test_save_model_refuses_a_reference_of_another_width(
    tmp_path: Path, positional: Artifact
) -> None:
    with pytest.raises(ValueError, match="reference has 3 columns"):
        save_model(positional.estimator, tmp_path / "m.skops", reference=positional.X[:, :3])
    narrow = pd.DataFrame(positional.X[:, :3], columns=["a", "b", "c"])
    with pytest.raises(ValueError, match="3 numeric columns"):
        save_model(positional.estimator, tmp_path / "m.skops", reference=narrow)
    assert not (tmp_path / "m.skops").exists()


def test_without_a_reference_no_psi(classifier_server: Server, classifier: Artifact) -> None:
    assert not drift_reference(classifier_server)
    predict(classifier_server, classifier.X[:200].tolist())
    assert psi_of(classifier_server) == {}
    assert contract.INPUT_FEATURE_PSI not in classifier_server.client.get("/metrics").text


def test_tabular_models_compare_their_numeric_columns(tmp_path: Path) -> None:
    frame, y = churn_frame(3000, seed=5)
    est = churn_pipeline().fit(frame, y)
    path = tmp_path / "churn-reference.skops"
    sha = save_model(est, path, example=frame.head(20), reference=frame)
    artifact = TabularArtifact(path, sha, frame, y, est)
    server = start_server(tmp_path, artifact, name="churn", env=ENV)
    try:
        assert drift_reference(server)
        live, _ = churn_frame(WINDOW, seed=6)
        predict(server, records(live))
        psi = psi_of(server)
        assert set(psi) == {"tenure", "spend"}  # strings are not profiled
        assert max(psi.values()) < 0.1, psi
        live["spend"] = live["spend"] * 3
        predict(server, records(live))
        psi = psi_of(server)
        assert psi["spend"] > 0.25 and psi["tenure"] < 0.1, psi
    finally:
        stop_server(server)


def with_member(source: Path, target: Path, text: bytes) -> Artifact:
    """A copy of the artifact whose reference member is ``text``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            if item.filename != REFERENCE_MEMBER:
                new.writestr(item, old.read(item.filename))
        new.writestr(REFERENCE_MEMBER, text)
    return Artifact(target, "", np.zeros((0, 0)), np.zeros(0), None)


@pytest.mark.parametrize(
    "text",
    [
        b"{not json",
        b'{"rows": 3, "features": [{"name": "x0", "edges": [1.0], "proportions": [1.0]}]}',
    ],
    ids=["not-json", "bad-proportions"],
)
def test_a_corrupt_reference_fails_to_load(
    tmp_path: Path, positional: Artifact, text: bytes
) -> None:
    broken = with_member(positional.path, tmp_path / "broken.skops", text)
    server = start_server(tmp_path, broken, name="bc", wait_ready=False)
    try:
        assert server.process.wait(timeout=60) == 1
        log = server.log()
        assert f"invalid {REFERENCE_MEMBER}" in log, log
    finally:
        stop_server(server)


def test_a_reference_of_other_features_is_ignored_with_a_warning(
    tmp_path: Path, positional: Artifact
) -> None:
    three = (
        b'{"rows": 3, "features": ['
        + b",".join(b'{"name": "x%d", "edges": [], "proportions": [1.0]}' % j for j in range(3))
        + b"]}"
    )
    other = with_member(positional.path, tmp_path / "other.skops", three)
    server = start_server(tmp_path, other, name="bc", env=ENV)
    try:
        assert not drift_reference(server)
        predict(server, positional.X[:200].tolist())
        assert psi_of(server) == {}
        assert "the reference profile has 3 features, the model 30" in server.log()
    finally:
        stop_server(server)
