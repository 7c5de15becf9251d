"""Train the serving benchmark's models with whichever Python runs this file.

Both servers get the same model: the same scikit-learn estimator, hyper-parameters, random seed
and bundled data set, fitted in each server's own environment (so neither loads an artifact from
another scikit-learn version). Usage: python serving_train.py OUT_DIR FORMAT(joblib|skops)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

MODELS = {
    "logreg": lambda: LogisticRegression(solver="newton-cholesky"),
    "forest": lambda: RandomForestClassifier(n_estimators=100, random_state=0),
}


def main() -> None:
    out, fmt = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    X, y = load_breast_cancer(return_X_y=True)
    result = {}
    for name, make in MODELS.items():
        estimator = make().fit(X, y)
        path = out / f"{name}.{fmt}"
        if fmt == "skops":
            from modelship_serving.artifacts import save_model

            result[name] = {"path": str(path), "sha256": save_model(estimator, path)}
        else:
            import joblib

            joblib.dump(estimator, path)
            result[name] = {"path": str(path)}
    import sklearn

    result["sklearn_version"] = sklearn.__version__  # type: ignore[assignment]
    result["row"] = X[0].tolist()  # type: ignore[assignment]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
