"""The accelerated inference paths give scikit-learn's answers.

Tolerance: class predictions identical; probabilities and regression values within
rtol=1e-9, atol=1e-12 of scikit-learn (fastpath.RTOL / ATOL).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from modelship_serving.fastpath import (
    ATOL,
    RTOL,
    SklearnPath,
    agrees_with_sklearn,
    choose_path,
    probe_batch,
)
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDRegressor,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

BC = load_breast_cancer(return_X_y=True)
WINE = load_wine(return_X_y=True)
IRIS = load_iris(return_X_y=True)
DIABETES = load_diabetes(return_X_y=True)
IRIS_NAMES = (IRIS[0], np.array(["setosa", "versicolor", "virginica"])[IRIS[1]])

CASES: list[tuple[str, Any, tuple[np.ndarray, np.ndarray], str]] = [
    ("logreg-binary", LogisticRegression(solver="newton-cholesky"), BC, "numpy-linear"),
    (
        "logreg-multinomial",
        make_pipeline(StandardScaler(), LogisticRegression()),
        WINE,
        "numpy-linear",
    ),
    ("logreg-strings", LogisticRegression(max_iter=1000), IRIS_NAMES, "numpy-linear"),
    ("ridge-classifier", RidgeClassifier(), WINE, "numpy-linear"),
    ("linear-svc", make_pipeline(StandardScaler(), LinearSVC()), BC, "numpy-linear"),
    ("linear-regression", LinearRegression(), DIABETES, "numpy-linear"),
    ("ridge-minmax", make_pipeline(MinMaxScaler(clip=True), Ridge()), DIABETES, "numpy-linear"),
    ("lasso", Lasso(alpha=0.1), DIABETES, "numpy-linear"),
    ("elasticnet", ElasticNet(alpha=0.01), DIABETES, "numpy-linear"),
    (
        "sgd-regressor",
        make_pipeline(StandardScaler(), SGDRegressor(random_state=0)),
        DIABETES,
        "numpy-linear",
    ),
    ("tree-classifier", DecisionTreeClassifier(random_state=0), WINE, "numpy-trees"),
    ("tree-regressor", DecisionTreeRegressor(max_depth=6, random_state=0), DIABETES, "numpy-trees"),
    ("forest-100", RandomForestClassifier(n_estimators=100, random_state=0), BC, "numpy-trees"),
    (
        "forest-strings",
        RandomForestClassifier(n_estimators=20, random_state=0),
        IRIS_NAMES,
        "numpy-trees",
    ),
    (
        "forest-regressor",
        RandomForestRegressor(n_estimators=30, random_state=0),
        DIABETES,
        "numpy-trees",
    ),
    ("extra-trees", ExtraTreesClassifier(n_estimators=30, random_state=0), WINE, "numpy-trees"),
    (
        "extra-trees-reg",
        ExtraTreesRegressor(n_estimators=20, random_state=0),
        DIABETES,
        "numpy-trees",
    ),
    ("gradient-boosting", GradientBoostingClassifier(n_estimators=5), BC, "sklearn"),
    ("knn", KNeighborsClassifier(), IRIS, "sklearn"),
    ("scaler-then-knn", make_pipeline(StandardScaler(), KNeighborsClassifier()), IRIS, "sklearn"),
]


@pytest.mark.parametrize(
    ("case", "estimator", "data", "path_name"), CASES, ids=[c[0] for c in CASES]
)
def test_accelerated_path_matches_scikit_learn(
    case: str, estimator: Any, data: tuple[np.ndarray, np.ndarray], path_name: str
) -> None:
    X, y = data
    estimator.fit(X, y)
    path = choose_path(estimator, "auto")
    assert path.name == path_name
    reference = SklearnPath(estimator)
    rng = np.random.default_rng(1)
    inputs = [
        X,
        X[:1],
        X[:7],
        probe_batch(estimator, X.shape[1], 50),
        rng.normal(size=(9, X.shape[1])) * 100,
    ]
    has_proba = hasattr(estimator, "classes_") and hasattr(estimator, "predict_proba")
    for batch in inputs:
        got = path.run(batch, want_proba=has_proba)
        expected = reference.run(batch, want_proba=has_proba)
        if expected.labels.dtype.kind == "f":
            np.testing.assert_allclose(got.labels, expected.labels, rtol=RTOL, atol=ATOL)
        else:
            assert got.labels.tolist() == expected.labels.tolist()
            assert got.class_indices is not None
            assert got.class_indices.tolist() == expected.class_indices.tolist()  # type: ignore[union-attr]
        if has_proba:
            np.testing.assert_allclose(got.proba, expected.proba, rtol=RTOL, atol=ATOL)  # type: ignore[arg-type]


def test_both_tree_walks_agree_with_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Few rows use the all-nodes walk, many rows the level walk; force each over all rows."""
    import modelship_serving.fastpath as fastpath

    model = RandomForestClassifier(n_estimators=25, random_state=0).fit(*BC)
    reference = SklearnPath(model).run(BC[0], True)
    for limit in (0, 10**9):
        monkeypatch.setattr(fastpath, "_ALL_NODES_MAX", limit)
        got = choose_path(model, "auto").run(BC[0], True)
        assert got.labels.tolist() == reference.labels.tolist()
        np.testing.assert_allclose(got.proba, reference.proba, rtol=RTOL, atol=ATOL)  # type: ignore[arg-type]


def test_sklearn_mode_forces_the_reference_path() -> None:
    model = LogisticRegression(solver="newton-cholesky").fit(*BC)
    assert choose_path(model, "sklearn").name == "sklearn"


def test_disagreement_is_detected() -> None:
    """A compiled path for one model checked against another model must not pass."""
    first = LogisticRegression(solver="newton-cholesky").fit(*BC)
    second = LogisticRegression(C=0.001, solver="newton-cholesky").fit(*BC)
    compiled = choose_path(first, "auto")
    batch = probe_batch(first, BC[0].shape[1])
    assert agrees_with_sklearn(compiled, SklearnPath(first), batch)
    assert not agrees_with_sklearn(compiled, SklearnPath(second), batch)


def test_trees_refuse_values_beyond_float32_like_scikit_learn() -> None:
    model = DecisionTreeClassifier(random_state=0).fit(*IRIS)
    with pytest.raises(ValueError, match="float32"):
        choose_path(model, "auto").run(np.array([[1e300, 1, 1, 1]]), False)
    with pytest.raises(ValueError):
        SklearnPath(model).run(np.array([[1e300, 1, 1, 1]]), False)


LINEAR_CASES = [c for c in CASES if c[3] == "numpy-linear"]


@pytest.mark.parametrize(
    ("case", "estimator", "data", "path_name"), LINEAR_CASES, ids=[c[0] for c in LINEAR_CASES]
)
def test_one_row_python_path_matches_scikit_learn(
    case: str, estimator: Any, data: tuple[np.ndarray, np.ndarray], path_name: str
) -> None:
    """Linear models answer single rows in plain Python: same classes, values within tolerance."""
    X, y = data
    estimator.fit(X, y)
    path = choose_path(estimator, "auto")
    assert path.rows_supported
    reference = SklearnPath(estimator)
    rows = np.concatenate([X[:40], np.random.default_rng(2).normal(size=(20, X.shape[1])) * 50])
    has_proba = hasattr(estimator, "classes_") and hasattr(estimator, "predict_proba")
    expected = reference.run(rows, want_proba=has_proba)
    for i, row in enumerate(rows.tolist()):
        got = path.run_row(row, has_proba)
        if expected.labels.dtype.kind == "f":
            assert got.class_index is None
            assert got.label == pytest.approx(expected.labels[i], rel=RTOL, abs=ATOL)
        else:
            assert got.label == expected.labels.tolist()[i]
            assert got.class_index == expected.class_indices[i]  # type: ignore[index]
        if has_proba:
            np.testing.assert_allclose(got.proba, expected.proba[i], rtol=RTOL, atol=ATOL)  # type: ignore[index]
        else:
            assert got.proba is None


def test_trees_have_no_one_row_python_path() -> None:
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(*IRIS)
    assert not choose_path(model, "auto").rows_supported


def test_one_row_disagreement_is_detected() -> None:
    """A run_row that drifts from scikit-learn fails the load-time check (the model then
    falls back to the scikit-learn path)."""
    model = LogisticRegression(solver="newton-cholesky").fit(*BC)
    compiled = choose_path(model, "auto")
    assert compiled.name == "numpy-linear"
    compiled.head.intercepts = [v + 1e-3 for v in compiled.head.intercepts]
    batch = probe_batch(model, BC[0].shape[1])
    assert not agrees_with_sklearn(compiled, SklearnPath(model), batch)
