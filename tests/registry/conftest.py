"""A real MLflow tracking server on 127.0.0.1 (the test bed's own command line,
``modelship_cluster.registry.server_args``: SQLite backend store, proxied artifacts), and
scikit-learn models registered in it with mlflow's own client."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelship_cluster import registry
from modelship_cluster.ports import free_port as _free_port
from registry_helpers import Mlflow, Registered
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression


def _start(
    tmp: Path, *, app_name: str | None = None, env: dict[str, str] | None = None
) -> Iterator[Mlflow]:
    port = _free_port()
    uri = registry.tracking_uri("127.0.0.1", port)
    log = open(tmp / "mlflow.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        registry.server_args(tmp, "127.0.0.1", port, app_name=app_name),
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # its workers are stopped with it, by process group
    )
    try:
        registry.wait_ready(uri, 180, lambda: proc.poll() is None)
    except RuntimeError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError((tmp / "mlflow.log").read_text()[-3000:]) from None
    yield Mlflow(uri, tmp)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    yield from _start(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    """MLflow with its own login (the basic-auth app): user admin, password below."""
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    config = tmp / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp / 'auth.db'}\n"
        "admin_username = admin\nadmin_password = registry-admin-pw-1\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-bed"}
    yield from _start(tmp, app_name="basic-auth", env=env)


@pytest.fixture(scope="session")
def registered(mlflow_server: Mlflow) -> Registered:
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    X, y = load_iris(return_X_y=True)
    v1 = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    v2 = LogisticRegression(max_iter=500).fit(X, y)
    mlflow.set_tracking_uri(mlflow_server.uri)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            v1,
            name="model",
            registered_model_name="iris",
            serialization_format="skops",
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            v2, name="model", registered_model_name="iris", serialization_format="cloudpickle"
        )
    client = MlflowClient(mlflow_server.uri)
    client.set_registered_model_alias("iris", "champion", "1")
    client.set_registered_model_alias("iris", "challenger", "2")
    return Registered(mlflow_server, X, v1, v2)
