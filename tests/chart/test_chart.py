"""The Helm chart renders for every supported case, rejects typos, and stays in step with
the operator's own sources (CRD, RBAC, version) and with `manifests/`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

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
        ("prometheus.auth.type=token", "type"),
        ("prometheus.auth.type=bearer", "prometheus.auth.secretName: name the Secret"),
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


def operator_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def settings_from(container: dict[str, Any], files: dict[str, str], tmp_path: Path) -> Any:
    """OperatorSettings as the pod would see them: its env, the mounted files under
    TMP_PATH (FILES: key -> content), a secretKeyRef resolved to FILES[key]."""
    from modelship_operator.settings import OperatorSettings

    env = {}
    for item in container["env"]:
        if "value" in item:
            value = item["value"]
            if value.startswith("/etc/modelship/"):
                path = tmp_path / value.removeprefix("/etc/modelship/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(files[path.name])
                value = str(path)
            env[item["name"]] = value
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = files[item["valueFrom"]["secretKeyRef"]["key"]]
    with mock.patch.dict(os.environ, env):
        return OperatorSettings()


def test_prometheus_defaults_send_no_credentials_and_mount_nothing() -> None:
    pod, container = operator_container(render())
    names = {e["name"] for e in container["env"]}
    assert not {
        n for n in names if "BEARER" in n or "BASIC" in n or "CA_FILE" in n or "HEADERS" in n
    }
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


BEARER_VALUES = (
    "--set", "prometheus.url=https://mimir.example/prometheus",
    "--set", "prometheus.auth.type=bearer",
    "--set", "prometheus.auth.secretName=prom-token",
    "--set", "prometheus.tls.caSecretName=prom-ca",
    "--set", "prometheus.headers.X-Scope-OrgID=team-a",
)  # fmt: skip


def test_prometheus_bearer_token_and_ca_come_from_secrets_mounted_read_only(
    tmp_path: Path,
) -> None:
    pod, container = operator_container(render(*BEARER_VALUES))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["prometheus-auth"]["secret"] == {
        "secretName": "prom-token",
        "items": [{"key": "token", "path": "token"}],
    }
    assert volumes["prometheus-ca"]["secret"]["secretName"] == "prom-ca"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["prometheus-auth"]["readOnly"] is True and mounts["prometheus-ca"]["readOnly"]
    settings = settings_from(container, {"token": "t0ken", "ca.crt": "PEM"}, tmp_path)
    assert settings.prometheus_url == "https://mimir.example/prometheus"
    assert settings.prometheus_bearer_token_file.read_text() == "t0ken"
    assert settings.prometheus_ca_file.read_text() == "PEM"
    assert settings.prometheus_headers == {"X-Scope-OrgID": "team-a"}


def test_prometheus_basic_auth_takes_the_user_from_the_secret_and_mounts_the_password(
    tmp_path: Path,
) -> None:
    pod, container = operator_container(
        render("--set", "prometheus.auth.type=basic", "--set", "prometheus.auth.secretName=prom")
    )
    (auth,) = [v for v in pod["volumes"] if v["name"] == "prometheus-auth"]
    assert auth["secret"]["items"] == [{"key": "password", "path": "password"}]
    settings = settings_from(container, {"username": "analysis", "password": "pw"}, tmp_path)
    assert settings.prometheus_basic_auth_username == "analysis"
    assert settings.prometheus_basic_auth_password_file.read_text() == "pw"
    assert settings.prometheus_bearer_token_file is None


def test_the_mlflow_registry_is_off_by_default_and_its_login_comes_from_a_secret() -> None:
    _, container = operator_container(render())
    assert not {e["name"] for e in container["env"]} & {
        "MODELSHIP_OPERATOR_MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_TOKEN",
    }
    _, container = operator_container(render(
        "--set", "mlflow.trackingUri=http://mlflow.mlops.svc:5000",
        "--set", "mlflow.credentialsSecretName=registry-login",
    ))  # fmt: skip
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELSHIP_OPERATOR_MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.mlops.svc:5000"
    for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "registry-login", "key": key, "optional": True}
