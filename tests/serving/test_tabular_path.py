"""The numpy-tabular path equals scikit-learn on every pipeline it covers, and every pipeline it
does not cover falls back to scikit-learn on a DataFrame (and still answers correctly)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from modelship_serving.codec import Limits
from modelship_serving.fastpath import SklearnPath, choose_path
from modelship_serving.signature import signature_of
from modelship_serving.tabular import table_from_rows, to_frame
from modelship_serving.tabular_path import TabularPath
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
    TargetEncoder,
)
from tabular_models import churn_frame, records

LIMITS = Limits(max_rows=10_000, allow_non_finite=False)


def ct(*branches: Any, **kw: Any) -> ColumnTransformer:
    return ColumnTransformer(list(branches), **kw)


def imputed_onehot(**kw: Any) -> Pipeline:
    return make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(**kw))


NUM = ["tenure", "spend"]
CAT = ["plan", "region"]
COVERED: dict[str, Callable[[], Pipeline]] = {
    "logreg-onehot-imputed-scaled": lambda: Pipeline(
        [
            (
                "ct",
                ct(
                    ("c", imputed_onehot(handle_unknown="ignore"), CAT),
                    ("n", make_pipeline(SimpleImputer(), StandardScaler()), NUM),
                ),
            ),
            ("m", LogisticRegression(max_iter=300)),
        ]
    ),
    "logreg-sparse-output": lambda: Pipeline(
        [
            (
                "ct",
                ct(
                    ("c", imputed_onehot(handle_unknown="ignore"), CAT),
                    ("n", SimpleImputer(strategy="constant", fill_value=0.0), ["spend"]),
                    sparse_threshold=1.0,
                ),
            ),
            ("m", LogisticRegression(max_iter=300)),
        ]
    ),
    "forest-selector-minmax-remainder": lambda: Pipeline(
        [
            (
                "ct",
                ct(
                    (
                        "c",
                        imputed_onehot(handle_unknown="ignore", sparse_output=False),
                        make_column_selector(dtype_include=[object, "str"]),
                    ),
                    (
                        "n",
                        make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler()),
                        ["spend"],
                    ),
                    remainder="passthrough",
                ),
            ),
            ("m", RandomForestClassifier(n_estimators=15, max_depth=7, random_state=0)),
        ]
    ),
    "ridge-scaler-after-ct": lambda: Pipeline(
        [
            (
                "ct",
                ct(
                    ("c", imputed_onehot(handle_unknown="ignore"), ["plan"]),
                    ("n", SimpleImputer(), NUM),
                    remainder="drop",
                ),
            ),
            ("s", StandardScaler(with_mean=False)),
            ("m", Ridge(alpha=0.5)),
        ]
    ),
    "extra-trees-regressor": lambda: Pipeline(
        [
            (
                "ct",
                ct(
                    ("c", imputed_onehot(handle_unknown="ignore"), CAT), ("n", SimpleImputer(), NUM)
                ),
            ),
            ("m", ExtraTreesRegressor(n_estimators=10, random_state=0)),
        ]
    ),
}
FALLBACK: dict[str, Callable[[], Pipeline]] = {
    "ordinal-encoder": lambda: Pipeline(
        [
            (
                "ct",
                ct(
                    (
                        "c",
                        make_pipeline(
                            SimpleImputer(strategy="most_frequent"),
                            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                        ),
                        CAT,
                    ),
                    ("n", SimpleImputer(), NUM),
                ),
            ),
            ("m", RandomForestClassifier(n_estimators=10, random_state=0)),
        ]
    ),
    "onehot-drop-first": lambda: Pipeline(
        [
            ("ct", ct(("c", imputed_onehot(drop="first"), CAT), ("n", SimpleImputer(), NUM))),
            ("m", LogisticRegression(max_iter=300)),
        ]
    ),
    "onehot-infrequent": lambda: Pipeline(
        [
            (
                "ct",
                ct(
                    (
                        "c",
                        imputed_onehot(handle_unknown="infrequent_if_exist", min_frequency=0.2),
                        CAT,
                    ),
                    ("n", SimpleImputer(), NUM),
                ),
            ),
            ("m", LogisticRegression(max_iter=300)),
        ]
    ),
    "target-encoder": lambda: Pipeline(
        [
            (
                "ct",
                ct(
                    (
                        "c",
                        make_pipeline(
                            SimpleImputer(strategy="most_frequent"), TargetEncoder(cv=KFold(5))
                        ),
                        CAT,
                    ),
                    ("n", SimpleImputer(), NUM),
                ),
            ),
            ("m", LogisticRegression(max_iter=300)),
        ]
    ),
}


def fitted(make: Callable[[], Pipeline], regression: bool) -> Pipeline:
    frame, y = churn_frame(500, seed=3)
    target = frame["spend"].fillna(0).to_numpy() if regression else y
    return make().fit(frame, target)


def check_equal(path: Any, est: Pipeline, frame: pd.DataFrame, signature: Any) -> None:
    table = table_from_rows(records(frame), signature, LIMITS)
    proba = signature.has_predict_proba
    if isinstance(path, TabularPath):
        got = path.run_table(table, proba)
    else:
        got = path.run_frame(to_frame(table, signature), proba)
    expected = est.predict(frame)
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got.labels, expected, rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_array_equal(got.labels, expected)
    if proba:
        np.testing.assert_allclose(got.proba, est.predict_proba(frame), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(COVERED))
def test_numpy_tabular_equals_scikit_learn(name: str) -> None:
    est = fitted(COVERED[name], regression="regressor" in name or "ridge" in name)
    signature = signature_of(est, "test")
    path = choose_path(est, "auto", signature)
    assert path.name == "numpy-tabular"
    unseen = pd.DataFrame(
        {
            "plan": ["platinum", None],
            "region": ["mars", "eu"],
            "tenure": [1, 70],
            "spend": [np.nan, 1e4],
        }
    )
    for frame in (churn_frame(300, seed=8)[0], churn_frame(1, seed=9)[0], unseen):
        check_equal(path, est, frame, signature)


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_uncovered_pipelines_run_scikit_learn_on_a_dataframe(name: str) -> None:
    est = fitted(FALLBACK[name], regression=False)
    signature = signature_of(est, "test")
    path = choose_path(est, "auto", signature)
    assert isinstance(path, SklearnPath), path.name
    check_equal(path, est, churn_frame(200, seed=8)[0], signature)


def test_sklearn_mode_never_compiles() -> None:
    est = fitted(COVERED["logreg-onehot-imputed-scaled"], regression=False)
    assert choose_path(est, "sklearn", signature_of(est, "test")).name == "sklearn"
