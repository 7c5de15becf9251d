"""What the registry tests share: the MLflow server and the models registered in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class Mlflow:
    uri: str
    state: Path


@dataclass(frozen=True)
class Registered:
    """The models registered as "iris": version 1 (skops, alias champion) and version 2
    (cloudpickle, alias challenger), with the data to check their predictions."""

    server: Mlflow
    X: np.ndarray
    v1: RandomForestClassifier
    v2: LogisticRegression
