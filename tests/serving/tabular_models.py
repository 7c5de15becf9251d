"""Tabular models and data for the serving tests: real scikit-learn pipelines over a pandas
DataFrame with string, integer and float columns (and missing values)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

PLANS = ["basic", "pro", "team", "enterprise"]
REGIONS = ["eu", "us", "apac"]
COLUMNS = ["plan", "region", "tenure", "spend"]


@dataclass
class TabularArtifact:
    path: Path
    sha256: str
    frame: pd.DataFrame
    y: np.ndarray
    estimator: Any

    @property
    def uri(self) -> str:
        return self.path.as_uri()


def churn_frame(n: int, seed: int, missing: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers: plan and region (strings), tenure in months (int), monthly spend (float)."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(PLANS, n).astype(object)
    region = rng.choice(REGIONS, n).astype(object)
    tenure = rng.integers(0, 72, n)
    spend = np.round(rng.gamma(4.0, 15.0, n), 2)
    logit = 0.04 * (36 - tenure) + (plan == "basic") * 1.2 - (region == "eu") * 0.5
    logit = logit + (spend - 60) / 40
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"plan": plan, "region": region, "tenure": tenure, "spend": spend})
    if missing:
        frame.loc[rng.random(n) < 0.05, "plan"] = None
        frame.loc[rng.random(n) < 0.05, "spend"] = np.nan
    return frame, y


def churn_pipeline() -> Pipeline:
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    columns = ColumnTransformer(
        [("cat", categorical, ["plan", "region"]), ("num", numeric, ["tenure", "spend"])]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=500))])


def strict_forest() -> Pipeline:
    columns = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="error", sparse_output=False), ["plan"]),
            ("num", "passthrough", ["tenure", "spend"]),
        ],
        remainder="drop",
    )
    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)
    return Pipeline([("columns", columns), ("model", forest)])


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON objects (NaN and None become null)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (None if _missing(v) else _plain(v)) for k, v in row.items()})
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value
