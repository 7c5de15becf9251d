"""The test bed's Prometheus Operator and Prometheus, as rendered (pure), and the CRDs of
the same module version."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml
from modelship_cluster import binaries, images, monitoring
from modelship_operator.settings import OperatorSettings

OBJECTS = monitoring.manifests()


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in OBJECTS if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def test_objects_come_in_apply_order_and_live_in_monitoring() -> None:
    kinds = [o["kind"] for o in OBJECTS]
    assert kinds[0] == "Namespace"
    assert kinds.index("ServiceAccount") < kinds.index("Deployment") < kinds.index("Prometheus")
    for obj in OBJECTS:
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "monitoring", obj["kind"]
    names = [(o["kind"], o["metadata"]["name"]) for o in OBJECTS]
    assert len(names) == len(set(names))


def test_the_service_is_the_modelship_operators_default_prometheus_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MODELSHIP_OPERATOR_PROMETHEUS_URL", raising=False)
    assert OperatorSettings().prometheus_url == monitoring.URL
    service = one("Service", "prometheus")
    assert service["spec"]["ports"] == [{"name": "web", "port": 9090, "targetPort": "web"}]
    # The labels the Prometheus Operator puts on the pods of Prometheus "modelship".
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "prometheus",
        "operator.prometheus.io/name": one("Prometheus")["metadata"]["name"],
    }


def test_prometheus_selects_every_monitor_and_rule_in_every_namespace() -> None:
    spec = one("Prometheus")["spec"]
    for kind in ("podMonitor", "serviceMonitor", "rule"):
        assert spec[f"{kind}Selector"] == {} and spec[f"{kind}NamespaceSelector"] == {}
    assert spec["scrapeInterval"] == spec["evaluationInterval"] == "2s"
    assert spec["version"] == f"v{binaries.PROMETHEUS_VERSION}"
    assert spec["serviceAccountName"] == one("ServiceAccount", "prometheus")["metadata"]["name"]
    assert monitoring.manifests(interval="5s")[-2]["spec"]["scrapeInterval"] == "5s"


def test_the_images_are_the_ones_the_test_bed_builds() -> None:
    built = {images.IMAGES[n].ref for n in images.GO_MODULE_PREBUILT if "prometheus" in n}
    assert set(monitoring.image_refs()) == built
    assert one("Prometheus")["spec"]["image"] == monitoring.PROMETHEUS_IMAGE
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == monitoring.OPERATOR_IMAGE
    assert f"--prometheus-config-reloader={monitoring.RELOADER_IMAGE}" in container["args"]
    assert "--prometheus-instance-namespaces=monitoring" in container["args"]


def rules_of(kind: str) -> list[dict[str, Any]]:
    return [r for o in OBJECTS if o["kind"] == kind for r in o["rules"]]


def test_the_operator_writes_only_in_monitoring_and_only_reads_elsewhere() -> None:
    writes = {"create", "update", "patch", "delete"}
    cluster = one("ClusterRole", "prometheus-operator")["rules"]
    for rule in cluster:
        if rule["resources"] != ["events"]:
            assert not writes & set(rule["verbs"]), rule
    assert {"podmonitors", "servicemonitors", "prometheusrules"} <= {
        r for rule in cluster for r in rule["resources"]
    }
    local = one("Role", "prometheus-operator")["rules"]
    assert any("statefulsets" in r["resources"] and "create" in r["verbs"] for r in local)
    assert not any("secrets" in r["resources"] for r in cluster)
    for rule in rules_of("ClusterRole") + rules_of("Role"):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
    prometheus = one("ClusterRole", "modelship-testbed-prometheus")["rules"]
    assert all(set(r["verbs"]) == {"get", "list", "watch"} for r in prometheus)
    binding = one("ClusterRoleBinding", "modelship-testbed-prometheus")
    assert binding["subjects"][0]["name"] == "prometheus"


def test_everything_passes_the_restricted_pod_security_profile() -> None:
    labels = one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True
    # The Prometheus Operator hardens the containers it renders; the pod's part is ours.
    prometheus = one("Prometheus")["spec"]["securityContext"]
    assert prometheus["runAsNonRoot"] is True and prometheus["runAsUser"] != 0
    assert prometheus["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_yaml_stream_round_trips() -> None:
    assert list(yaml.safe_load_all(monitoring.manifests_yaml())) == OBJECTS


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go toolchain")
def test_the_crds_of_the_operators_module_version_define_the_kinds() -> None:
    kinds = set()
    for path in binaries.prometheus_operator_crds():
        crd = yaml.safe_load(path.read_text())
        assert crd["spec"]["group"] == "monitoring.coreos.com"
        kinds.add(crd["spec"]["names"]["kind"])
    assert kinds == {"Prometheus", "PodMonitor", "ServiceMonitor", "PrometheusRule", "Probe"}
