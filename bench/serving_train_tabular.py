"""Train the tabular serving benchmark's model with whichever Python runs this file.

A churn model over a DataFrame with string, integer and float columns (and missing values):
ColumnTransformer (imputed one-hot strings, imputed and scaled numbers) + LogisticRegression.
Both servers get the same estimator, hyper-parameters, seed and data, fitted in each server's own
environment. Prints the artifact paths and the benchmark's request rows as JSON.

Usage: python serving_train_tabular.py OUT_DIR FORMAT(joblib|skops)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

PLANS = ["basic", "pro", "team", "enterprise"]
REGIONS = ["eu", "us", "apac", "latam"]
CHANNELS = ["web", "store", "partner"]


def frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "plan": rng.choice(PLANS, n).astype(object),
            "region": rng.choice(REGIONS, n).astype(object),
            "channel": rng.choice(CHANNELS, n).astype(object),
            "tenure": rng.integers(0, 72, n),
            "spend": np.round(rng.gamma(4.0, 15.0, n), 2),
            "tickets": rng.poisson(1.5, n),
        }
    )
    logit = 0.04 * (36 - data["tenure"]) + (data["plan"] == "basic") * 1.2 + data["tickets"] * 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    data.loc[rng.random(n) < 0.05, "plan"] = None
    data.loc[rng.random(n) < 0.05, "spend"] = np.nan
    return data, y


def pipeline() -> Pipeline:
    strings = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    columns = ColumnTransformer(
        [
            ("strings", strings, ["plan", "region", "channel"]),
            ("numbers", numbers, ["tenure", "spend", "tickets"]),
        ]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=500))])


def main() -> None:
    out, fmt = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    train, y = frame(5000, seed=0)
    estimator = pipeline().fit(train, y)
    path = out / f"churn.{fmt}"
    result: dict[str, object] = {"path": str(path)}
    if fmt == "skops":
        from modelship_serving.artifacts import save_model

        result["sha256"] = save_model(estimator, path, example=train.head(50))
    else:
        import joblib

        joblib.dump(estimator, path)
    test, _ = frame(32, seed=1)
    test = test.fillna({"spend": 50.0, "plan": "pro"})
    result["rows"] = json.loads(test.to_json(orient="records"))
    result["predictions"] = estimator.predict(test).tolist()
    import sklearn

    result["sklearn_version"] = sklearn.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
