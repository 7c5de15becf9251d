"""Fixtures of the end-to-end tests: the operator installed from manifests once per module
(``test_operator_e2e.py`` uses it under its own names); for the rollout tests
(``test_rollout_*.py``) also the rollout models in the cluster's model store, a namespace
enforcing the restricted Pod Security profile per test, and ``rollout`` bundling them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import Env, Operator, label_restricted
from rollout_harness import Rollout, Stored, access_secret, train_models


@pytest.fixture(scope="module")
def cluster_env(kube_api: Any, kubectl: Any, local_cluster: Any) -> Env:
    return Env(kube_api, kubectl, local_cluster.root / "node")


@pytest.fixture(scope="module")
def installed_operator(cluster_env: Env) -> Iterator[Operator]:
    installed = Operator(cluster_env)
    installed.install()
    yield installed
    if os.environ.get("MODELSHIP_KEEP_OPERATOR") != "1":
        installed.uninstall()


@pytest.fixture(scope="module")
def rollout_models(
    local_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Stored]]:
    stored = train_models(local_cluster, tmp_path_factory.mktemp("models"))
    yield stored
    for model in stored.values():
        model.path.unlink(missing_ok=True)


@pytest.fixture
def restricted_ns(namespace: str, cluster_env: Env) -> str:
    label_restricted(cluster_env, namespace)
    return namespace


@pytest.fixture
def rollout(
    cluster_env: Env,
    installed_operator: Operator,
    rollout_models: dict[str, Stored],
    restricted_ns: str,
) -> Rollout:
    cluster_env.apply(restricted_ns, access_secret())
    return Rollout(cluster_env, installed_operator, rollout_models, restricted_ns)
