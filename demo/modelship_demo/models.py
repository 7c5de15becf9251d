"""The demo's three model versions, trained on scikit-learn's bundled breast-cancer data.

- 1.0.0, stable: logistic regression on the raw features (good, not the best);
- 2.0.0, better: the same with standardised features (higher accuracy) - promoted;
- 3.0.0, faulty: trained on labels a broken join flipped for every large tumour (mean
  radius above 15), so it is wrong on that part of the input domain; it serves without
  errors and fast, and only its accuracy against ground truth gives it away - rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from modelship_serving.artifacts import save_model
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SEED = 7


@dataclass(frozen=True)
class DemoModel:
    version: str
    story: str
    path: Path
    sha256: str
    holdout_accuracy: float


@dataclass(frozen=True)
class Holdout:
    """Rows the models never saw: the demo's traffic, with their true labels as feedback."""

    features: np.ndarray
    labels: np.ndarray


def train(out_dir: Path) -> tuple[list[DemoModel], Holdout]:
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.4, random_state=SEED, stratify=y
    )
    corrupted = y_train.copy()
    large = X_train[:, 0] > 15.0  # mean radius
    corrupted[large] = 1 - corrupted[large]

    specs = [
        (
            "1.0.0",
            "logistic regression, raw features",
            LogisticRegression(C=0.01, max_iter=10000),
            y_train,
        ),
        (
            "2.0.0",
            "logistic regression, standardised features",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            y_train,
        ),
        (
            "3.0.0",
            "trained with the labels of large tumours flipped",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            corrupted,
        ),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    models = []
    for version, story, estimator, labels in specs:
        estimator.fit(X_train, labels)
        path = out_dir / f"breast-cancer-{version}.skops"
        sha256 = save_model(estimator, path)
        accuracy = float((estimator.predict(X_test) == y_test).mean())
        models.append(DemoModel(version, story, path, sha256, accuracy))
    return models, Holdout(X_test, y_test)
