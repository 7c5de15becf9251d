"""Fixtures of the rollout end-to-end tests (``test_rollout_*.py``): the operator installed
from manifests once per module, the rollout models in the cluster's model store, and a
namespace enforcing the restricted Pod Security profile per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import Env, Operator, label_restricted
from rollout_harness import Stored, train_models


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
