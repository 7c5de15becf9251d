"""Real serving processes, several per variant, for router tests of replica affinity."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelship_serving.artifacts import save_model
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

sys.path.append(str(Path(__file__).resolve().parents[1] / "serving"))

from serving_helpers import Artifact, Server, start_server, stop_server, wait_for

#: Serving processes per variant.
REPLICAS = 3


@contextmanager
def replicas_per_variant(tmp_path: Path) -> Iterator[dict[str, list[Server]]]:
    """:data:`REPLICAS` ready model servers of a breast-cancer classifier for each of
    stable and canary (``--variant``), stopped on exit."""
    X, y = load_breast_cancer(return_X_y=True)
    est = LogisticRegression(solver="newton-cholesky").fit(X, y)
    path = tmp_path / "bc.skops"
    artifact = Artifact(path, save_model(est, path), X, y, est)
    started: dict[str, list[Server]] = {"stable": [], "canary": []}
    try:
        for variant, group in started.items():
            for _ in range(REPLICAS):
                group.append(
                    start_server(
                        tmp_path,
                        artifact,
                        "--sha256",
                        artifact.sha256,
                        "--variant",
                        variant,
                        name="bc",
                        wait_ready=False,
                    )
                )
        for server in started["stable"] + started["canary"]:
            wait_for(server, "/v2/health/ready")
        yield started
    finally:
        for server in started["stable"] + started["canary"]:
            stop_server(server)
