"""The Helm chart renders for every supported case, rejects typos, and stays in step with
the operator's own sources (CRD, RBAC, version) and with `manifests/`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelship_cluster.binaries import toolset
from modelship_operator import generate, rbac
from modelship_operator.settings import package_version

CHART = generate.CHART
CASES = sorted((CHART / "ci").glob("*-values.yaml"))


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(toolset().helm), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(*extra: str) -> list[dict[str, Any]]:
    out = helm(
        "template",
        "modelship",
        str(CHART),
        "-n",
        "modelship-system",
        "--kube-version",
        generate.KUBE_VERSION,
        *extra,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_helm_lint_passes_strict() -> None:
    helm("lint", "--strict", str(CHART))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_every_ci_case_renders(case: Path) -> None:
    docs = render("-f", str(case))
    deployment = by_kind(docs, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_defaults_are_cluster_wide_with_images_at_the_app_version() -> None:
    docs = render()
    assert len(by_kind(docs, "ClusterRoleBinding")) == 1
    env = {
        e["name"]: e.get("value")
        for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    version = package_version()
    assert env["MODELSHIP_OPERATOR_NAMESPACES"] == ""
    assert env["MODELSHIP_OPERATOR_SERVING_IMAGE"] == f"modelship/serving:{version}"
    assert env["MODELSHIP_OPERATOR_ROUTER_IMAGE"] == f"modelship/router:{version}"
    image = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"modelship/operator:{version}"


def test_namespaced_install_grants_roles_only_in_the_listed_namespaces() -> None:
    docs = render("--set", "watchNamespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterRoleBinding")
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "modelship-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    env = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODELSHIP_OPERATOR_NAMESPACES", "value": "team-a,team-b"} in env


def test_chart_rbac_is_exactly_the_operators_rbac() -> None:
    docs = render()
    cluster_role = next(
        r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == "modelship-operator"
    )
    assert cluster_role["rules"] == [r.to_api() for r in rbac.operator_rules()]
    leader = next(r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("election"))
    assert leader["rules"] == [r.to_api() for r in rbac.leader_election_rules()]


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ("replicaCont=2", "additional properties 'replicaCont' not allowed"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("prometheus.url=not-a-url", "url"),
        ("watchNamespaces={Bad_NS}", "watchNamespaces"),
    ],
)
def test_values_schema_rejects_typos_and_bad_values(override: str, complaint: str) -> None:
    result = helm(
        "template",
        "x",
        str(CHART),
        "--kube-version",
        generate.KUBE_VERSION,
        "--set",
        override,
        check=False,
    )
    assert result.returncode != 0
    assert complaint in result.stderr


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == package_version()


def test_generated_files_match_their_sources() -> None:
    """CRD, RBAC rule files, reference doc and manifests/modelship.yaml: `make generate`."""
    drifted = [
        str(path.relative_to(generate.REPO))
        for path, produce in generate.targets().items()
        if not path.exists() or path.read_text() != produce()
    ]
    assert drifted == [], f"run `make generate`: {drifted}"


def test_two_replicas_get_a_disruption_budget_and_spread() -> None:
    assert not by_kind(render(), "PodDisruptionBudget")
    docs = render("--set", "replicaCount=2")
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert "podAntiAffinity" in pod["affinity"]


def test_helm_test_pod_probes_the_operator_health_endpoint() -> None:
    out = helm(
        "template", "modelship", str(CHART), "-n", "ms", "--kube-version", generate.KUBE_VERSION,
        "--show-only", "templates/tests/test-operator-health.yaml",
    ).stdout  # fmt: skip
    pod = yaml.safe_load(out)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["args"] == [
        "--healthcheck",
        "http://modelship-operator-metrics.ms.svc:8081/healthz",
    ]
