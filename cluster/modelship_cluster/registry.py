"""The test bed's model registry: an MLflow tracking server, as most scikit-learn teams run.

``mlflow server`` from PyPI (the project's dev dependencies) runs on the host beside the
model store, bound to the pod network's gateway (:func:`tracking_uri`), so the operator and
the serving pods reach it as they would a team's registry. It keeps runs, registered models
and aliases in a SQLite file (a real backend store, as long as the cluster's state) and
proxies artifacts (``--serve-artifacts``): clients upload model files through it and the
serving pods download them from its ``/api/2.0/mlflow-artifacts/artifacts/`` API, so a
version's files are ``mlflow-artifacts:/...`` URIs the operator resolves to that API.

The artifacts stay on the host's disk, not in the cluster's S3 store: MLflow writes S3
only through boto3, whose botocore pins python-dateutil below 3, which this project's lock
(dateutil 4, kubernetes 37) cannot take. A registry whose versions live in ``s3://`` is
read by the pods directly with ``spec.s3`` (docs/model-sources.md).

``MODELSHIP_MLFLOW=0`` skips it. Pure but for :func:`wait_ready`: the cluster starts the
process from :func:`server_args`, and the tests start the same on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import httpx

PORT: Final = 5000
PROCESS: Final = "model-registry"


def enabled() -> bool:
    """The registry runs unless MODELSHIP_MLFLOW=0."""
    return os.environ.get("MODELSHIP_MLFLOW", "1") != "0"


def mlflow_command() -> Path:
    """``mlflow`` beside the running Python (the project's venv, dev dependencies)."""
    return Path(sys.executable).with_name("mlflow")


def installed() -> bool:
    return mlflow_command().is_file()


def tracking_uri(host: str, port: int = PORT) -> str:
    return f"http://{host}:{port}"


def server_args(
    state: Path, host: str, port: int = PORT, *, app_name: str | None = None
) -> list[str]:
    """``mlflow server`` with its SQLite backend store and artifact folder under ``state``.

    One worker (the test bed's two cores); any Host header is accepted, since pods name the
    server by IP. ``app_name="basic-auth"`` turns MLflow's own login on.
    """
    args = [
        str(mlflow_command()),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{state / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        (state / "artifacts").as_uri(),
        "--workers",
        "1",
        "--allowed-hosts",
        "*",
    ]
    if app_name is not None:
        args += ["--app-name", app_name]
    return args


def wait_ready(uri: str, timeout: float, alive: Callable[[], bool] | None = None) -> None:
    """Wait for the server's /health; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the MLflow server at {uri} exited")
        try:
            if httpx.get(f"{uri}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise RuntimeError(f"the MLflow server at {uri} was not ready in {timeout:.0f}s ({last})")
