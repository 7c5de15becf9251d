"""pytest fixtures for tests against the local cluster.

- `local_cluster` (session): the running cluster at the default state folder if there is
  one (`make cluster-up`), else one started for this test session and stopped after it
  (set MODELSHIP_KEEP_CLUSTER=1 to leave it running for the next session).
- `kube_api` (session): a `kubernetes.client.ApiClient` with the admin identity.
- `namespace` (function): a fresh namespace per test, deleted after it.
- `root` (function): skips a test that needs root when not root; under `CI=true` it fails
  instead, with the reason (`skip_or_fail` does the same for any other precondition).
- `kubectl` (session): run kubectl against the cluster, `kubectl("get", "pods", ...)`.

Tests using them carry the `cluster` marker, added automatically.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelship_cluster import binaries
from modelship_cluster.cluster import Cluster

KubectlRunner = Callable[..., subprocess.CompletedProcess[str]]
CLUSTER_FIXTURES = {"local_cluster", "kube_api", "namespace", "kubectl"}


def skip_or_fail(reason: str) -> None:
    """Skip, or under CI=true fail: CI never skips a test silently."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root (a kubelet, containerd, network namespaces and mounts)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[Cluster]:
    from modelship_cluster import node

    if not node.enabled():
        skip_or_fail(f"the local cluster runs no pods here ({node.why_disabled()})")
    cluster = Cluster()
    cluster.root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = cluster.root.parent / f".{cluster.root.name}.lock"
    started_here = False
    with open(lock_path, "w") as lock:
        # Two test sessions at once must not both start (or half-start) the same cluster.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not cluster.is_up():
                cluster.up()
                started_here = True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    yield cluster
    if started_here and os.environ.get("MODELSHIP_KEEP_CLUSTER") != "1":
        cluster.down()
        left = node.leftovers()
        assert left == [], f"the cluster left these behind: {left}"


@pytest.fixture(scope="session")
def kube_api(local_cluster: Cluster) -> Iterator[object]:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(local_cluster.kubeconfig))  # type: ignore[no-untyped-call]
    yield api
    api.close()


@pytest.fixture(scope="session")
def kubectl(local_cluster: Cluster) -> KubectlRunner:
    kubectl_path = binaries.toolset().kubectl

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(kubectl_path), f"--kubeconfig={local_cluster.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    return run


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_api: object) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = create_namespace(core, f"{base}-{uuid.uuid4().hex[:6]}")
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def create_namespace(core: Any, name: str) -> str:
    """Create namespace NAME through CORE (a CoreV1Api) and return it once it can take pods:
    they are refused until the controller manager has made its `default` ServiceAccount."""
    from kubernetes import client

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(
        name, field_selector="metadata.name=default"
    ).items:
        if time.monotonic() > deadline:
            raise AssertionError(f"namespace {name} got no default ServiceAccount in 30s")
        time.sleep(0.1)
    return name
