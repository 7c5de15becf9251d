"""The Helm chart on the local cluster, as a user installs it: install, `helm test`, a
ModelDeployment and every example in manifests/examples/ served with only the chart's RBAC,
upgrade with changed values, and an uninstall that leaves nothing behind but the CRD."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from modelship_cluster.binaries import toolset
from modelship_operator.generate import MONITORING_VALUES
from modelship_serving import contract
from modelship_serving.artifacts import save_model
from operator_harness import prometheus_query, serving, until
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelship"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
RELEASE = "modelship-helm-e2e"
INSTANCE = "app.kubernetes.io/instance"


@pytest.fixture
def helm(local_cluster: Any) -> Any:
    def run(
        *args: str, check: bool = True, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(toolset().helm), "--kubeconfig", str(local_cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return run


def operator_env(apps: client.AppsV1Api, namespace: str) -> dict[str, str]:
    deployment = apps.read_namespaced_deployment(f"{RELEASE}-operator", namespace)
    return {e.name: e.value for e in deployment.spec.template.spec.containers[0].env if e.value}


def release_objects(api: Any, namespace: str) -> list[str]:
    """Everything labelled with the release, namespaced or cluster-wide."""
    selector = f"{INSTANCE}={RELEASE}"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    rbac, policy = client.RbacAuthorizationV1Api(api), client.PolicyV1Api(api)
    found = []
    for kind, lister in (
        ("Deployment", lambda: apps.list_namespaced_deployment(namespace, label_selector=selector)),
        ("Pod", lambda: core.list_namespaced_pod(namespace, label_selector=selector)),
        ("Service", lambda: core.list_namespaced_service(namespace, label_selector=selector)),
        (
            "ServiceAccount",
            lambda: core.list_namespaced_service_account(namespace, label_selector=selector),
        ),
        ("Role", lambda: rbac.list_namespaced_role(namespace, label_selector=selector)),
        (
            "RoleBinding",
            lambda: rbac.list_namespaced_role_binding(namespace, label_selector=selector),
        ),
        ("ClusterRole", lambda: rbac.list_cluster_role(label_selector=selector)),
        ("ClusterRoleBinding", lambda: rbac.list_cluster_role_binding(label_selector=selector)),
        (
            "PodDisruptionBudget",
            lambda: policy.list_namespaced_pod_disruption_budget(
                namespace, label_selector=selector
            ),
        ),
    ):
        found += [f"{kind}/{item.metadata.name}" for item in lister().items]
    return found


def check_examples(kubectl: Any, local_cluster: Any, namespace: str, tmp_path: Path) -> None:
    """manifests/examples/ as a user adapts them: their own artifacts, one replica and one
    router pod here; applied, then applied again with a new model, which starts the
    example's rollout."""
    X, y = make_classification(n_samples=200, n_features=4, random_state=5)
    docs: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    for example in EXAMPLES:
        doc = yaml.safe_load(example.read_text())
        stored = []
        for part, seed in (("model", 1), ("next", 2)):
            path = tmp_path / f"{example.stem}-{part}.skops"
            save_model(LogisticRegression(C=seed).fit(X, y), path)
            stored.append(
                local_cluster.add_model(path, name=f"{namespace}-{example.stem}-{part}.skops")
            )
        doc["spec"]["model"].update(uri=stored[0].uri, sha256=stored[0].sha256)
        doc["spec"]["replicas"] = 1
        # One router pod each too: six examples at once fill the one node's CPU requests.
        doc["spec"].setdefault("router", {})["replicas"] = 1
        if "s3" in doc["spec"]:
            # The model comes from the model store here; the example's Secret must exist for
            # its pods to start (the kubelet resolves its keys).
            secret = {"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": doc["spec"]["s3"]["secretName"]},
                      "stringData": {"AWS_ACCESS_KEY_ID": "example",
                                     "AWS_SECRET_ACCESS_KEY": "example"}}  # fmt: skip
            kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(secret))
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        next_model = {"version": "9.9.9", "uri": stored[1].uri, "sha256": stored[1].sha256}
        docs[doc["metadata"]["name"]] = (doc, next_model)

    def status_of(name: str) -> dict[str, Any]:
        body = json.loads(kubectl("get", "mdep", name, "-n", namespace, "-o", "json").stdout)
        return body.get("status") or {}

    def serves_its_model(name: str) -> dict[str, Any] | None:
        status = status_of(name)
        return status if serving(status, docs[name][0]["spec"]["model"]["version"]) else None

    def rolling_out(name: str) -> dict[str, Any] | None:
        status = status_of(name)
        canary_up = ((status.get("canary") or {}).get("readyReplicas") or 0) >= 1
        return status if canary_up and status.get("phase") == "Progressing" else None

    for name, (doc, next_model) in docs.items():
        until(lambda n=name: serves_its_model(n), f"example {name} to serve its model", 240)
        doc["spec"]["model"].update(next_model)
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    for name in docs:
        until(lambda n=name: rolling_out(n), f"example {name} to roll its next model out", 240)
    for name in docs:
        kubectl("delete", "mdep", name, "-n", namespace, "--wait=false")


def check_monitoring(namespace: str) -> None:
    """The chart's PodMonitors make the test bed's Prometheus Operator scrape the operator and
    the serving pods (jobs named after them), and Prometheus loaded the chart's rules."""
    for component in ("operator", "serving"):
        job = f"{namespace}/{RELEASE}-{component}"
        until(
            lambda j=job: prometheus_query(f'up{{job="{j}"}} == 1'),
            f"Prometheus to scrape {job}",
            120,
        )
    series = until(
        lambda: prometheus_query(f'{contract.READY}{{namespace="{namespace}"}}'),
        "the serving pod's series",
        60,
    )
    assert series[0]["metric"]["deployment"] == "clf", series

    def rule_groups() -> set[str]:
        from modelship_cluster.node import prometheus_url

        answer = httpx.get(f"{prometheus_url()}/api/v1/rules", timeout=10).json()
        return {g["name"] for g in answer["data"]["groups"] if namespace in g["file"]}

    groups = until(
        lambda: {"modelship-rollouts", "modelship-serving", "modelship-operator"} <= rule_groups(),
        "Prometheus to load the chart's PrometheusRule",
        120,
    )
    assert groups


def test_install_test_serve_upgrade_and_uninstall(
    helm: Any, kube_api: Any, kubectl: Any, local_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    apps = client.AppsV1Api(kube_api)
    # The release watches only its own namespace, so it never meets another test's operator.
    values = [
        "--set", f"watchNamespaces={{{namespace}}}",
        "--set", "rbac.aggregateToDefaultRoles=false",
        "--set", "resyncSeconds=2",
        *[arg for value in MONITORING_VALUES for arg in ("--set", value)],
    ]  # fmt: skip
    helm("install", RELEASE, str(CHART), "-n", namespace, *values, "--wait", "--timeout", "3m")
    try:
        notes = helm("status", RELEASE, "-n", namespace).stdout
        assert f"It watches ModelDeployments in: {namespace}." in notes

        tested = helm("test", RELEASE, "-n", namespace, "--timeout", "2m")
        assert "Phase:          Succeeded" in tested.stdout

        # The chart's RBAC is enough to serve a model.
        X, y = make_classification(n_samples=200, n_features=4, random_state=3)
        path = tmp_path / "helm-e2e-1.0.0.skops"
        save_model(LogisticRegression().fit(X, y), path)
        stored = local_cluster.add_model(path, name=f"{namespace}-1.0.0.skops")
        resource = {
            "apiVersion": "modelship.io/v1alpha2",
            "kind": "ModelDeployment",
            "metadata": {"name": "clf"},
            "spec": {"model": {"version": "1.0.0", "uri": stored.uri, "sha256": stored.sha256}},
        }
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource))

        def ready() -> bool:
            out = kubectl("get", "mdep", "clf", "-n", namespace, "-o", "json").stdout
            conditions = (json.loads(out).get("status") or {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        def diagnose() -> str:
            parts = [
                kubectl("get", "mdep,deploy,pods", "-n", namespace, "-o", "wide", check=False),
                kubectl("describe", "mdep", "clf", "-n", namespace, check=False),
                kubectl("logs", f"deploy/{RELEASE}-operator", "-n", namespace, "--tail=60",
                        check=False),
            ]  # fmt: skip
            return "\n".join(p.stdout + p.stderr for p in parts)

        until(ready, "the ModelDeployment to be Ready under the chart's operator", 180, diagnose)
        check_monitoring(namespace)
        check_examples(kubectl, local_cluster, namespace, tmp_path)

        helm(
            "upgrade", RELEASE, str(CHART), "-n", namespace, "--reuse-values",
            "--set", "logLevel=debug", "--set", "replicaCount=2", "--wait", "--timeout", "3m",
        )  # fmt: skip
        deployment = apps.read_namespaced_deployment(f"{RELEASE}-operator", namespace)
        assert deployment.spec.replicas == 2
        assert operator_env(apps, namespace)["MODELSHIP_OPERATOR_LOG_LEVEL"] == "debug"
        assert f"{RELEASE}-operator" in [
            p.metadata.name
            for p in client.PolicyV1Api(kube_api)
            .list_namespaced_pod_disruption_budget(namespace)
            .items
        ]
        assert "Phase:          Succeeded" in helm("test", RELEASE, "-n", namespace).stdout

        kubectl("delete", "mdep", "clf", "-n", namespace, "--wait=true", timeout=120)
    finally:
        helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "2m", check=False)

    until(lambda: release_objects(kube_api, namespace) == [], "the release's objects to go", 60)
    crd = kubectl("get", "crd", "modeldeployments.modelship.io", "-o", "name").stdout.strip()
    assert crd == "customresourcedefinition.apiextensions.k8s.io/modeldeployments.modelship.io"
