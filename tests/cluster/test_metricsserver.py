"""The test bed's metrics-server: its build recipe and image (pure), and its objects as
rendered (pure), with a serving certificate from the cluster CA and without one."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from modelship_cluster import binaries, images, metricsserver, pki

OBJECTS = metricsserver.manifests()

#: Volume kinds the restricted Pod Security profile admits.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}  # fmt: skip


def one(kind: str, name: str | None = None, objects: list[dict[str, Any]] = OBJECTS) -> Any:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def pod(objects: list[dict[str, Any]] = OBJECTS) -> Any:
    return one("Deployment", objects=objects)["spec"]["template"]["spec"]


def container(objects: list[dict[str, Any]] = OBJECTS) -> Any:
    (only,) = pod(objects)["containers"]
    return only


def serving(tmp_path: Path) -> tuple[metricsserver.Serving, pki.CertPair]:
    ca = pki.create_ca(tmp_path)
    pair = pki.issue(
        ca,
        tmp_path,
        "metrics-server",
        "metrics-server",
        dns_names=metricsserver.SERVING_DNS_NAMES,
        server=True,
    )
    chosen = metricsserver.Serving(
        ca.cert.read_bytes(), pair.cert.read_bytes(), pair.key.read_bytes()
    )
    return chosen, ca


# ------------------------------------------------------------------------ the build


def test_the_recipe_builds_the_command_at_the_pinned_version_with_upstreams_version_flags() -> None:
    recipe = binaries.metrics_server_recipe()
    assert recipe.modules == ("sigs.k8s.io/metrics-server@v0.8.0",)
    assert recipe.packages == ("sigs.k8s.io/metrics-server/cmd/metrics-server",)
    assert "-X k8s.io/client-go/pkg/version.gitVersion=v0.8.0" in recipe.ldflags
    assert recipe.replaces == ()
    text = binaries.wrapper_go_mod("metricsserverbin", recipe)
    assert "\tsigs.k8s.io/metrics-server v0.8.0\n" in text and "replace" not in text
    assert binaries.metrics_server_recipe("0.8.1").key() != recipe.key()
    folder = binaries.metrics_server_bin_dir()
    assert folder.parent.name == f"v0.8.0-{recipe.key()}"
    assert folder in binaries.toolset().bin_dirs


def test_the_image_packs_the_built_binary_and_the_node_imports_it() -> None:
    spec = images.IMAGES["metrics-server"]
    assert spec.ref == metricsserver.IMAGE == "localhost/modelship-testbed/metrics-server:v0.8.0"
    assert spec.prebuilt == "metrics-server" and not spec.uses_base
    assert images.go_module_recipe("metrics-server") == {
        "module": "sigs.k8s.io/metrics-server@v0.8.0",
        "binary": "metrics-server",
        "recipe": binaries.metrics_server_recipe().key(),
    }
    assert metricsserver.image_refs() == (spec.ref,)
    assert container()["image"] == spec.ref


@pytest.mark.skipif(
    not (binaries.metrics_server_bin_dir() / "metrics-server").exists(),
    reason="metrics-server is not built (modelship-cluster build)",
)
def test_the_built_binary_knows_the_flags_the_deployment_passes() -> None:
    binary = binaries.metrics_server_bin_dir() / "metrics-server"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "v0.8.0"
    helptext = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True)
    for flag in metricsserver.args(serving=True):
        assert flag.split("=")[0] in helptext.stdout, flag


# ---------------------------------------------------------------------- the objects


def test_objects_come_in_apply_order_and_live_in_kube_system() -> None:
    kinds = [o["kind"] for o in OBJECTS]
    assert kinds[0] == "ServiceAccount" and kinds[-1] == "APIService"
    assert kinds.index("ClusterRoleBinding") < kinds.index("Deployment")
    for obj in OBJECTS:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "APIService"):
            assert obj["metadata"]["namespace"] == "kube-system", obj["kind"]
        else:
            assert "namespace" not in obj["metadata"], obj["kind"]
    names = [(o["kind"], o["metadata"]["name"]) for o in OBJECTS]
    assert len(names) == len(set(names))
    assert "Secret" not in kinds  # only with a serving certificate


def test_the_service_fronts_the_secure_port_and_the_apiservice_names_it() -> None:
    service = one("Service", "metrics-server")
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["name"]) == (443, "https", "https")
    assert container()["ports"] == [{"name": "https", "containerPort": 10250, "protocol": "TCP"}]
    template = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template.items()
    spec = one("APIService", "v1beta1.metrics.k8s.io")["spec"]
    assert spec["service"] == {"name": "metrics-server", "namespace": "kube-system", "port": 443}
    assert (spec["group"], spec["version"]) == ("metrics.k8s.io", "v1beta1")
    assert (spec["groupPriorityMinimum"], spec["versionPriority"]) == (100, 100)


def test_kubelets_are_verified_with_the_cluster_ca_never_skipped() -> None:
    args = container()["args"]
    assert "--kubelet-certificate-authority=/etc/kubelet-ca/ca.crt" in args
    assert not any("insecure" in a for a in args), args
    assert args[:5] == [
        "--cert-dir=/tmp",
        "--secure-port=10250",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        "--metric-resolution=15s",
    ]
    volume = {v["name"]: v for v in pod()["volumes"]}["kubelet-ca"]
    assert volume["configMap"] == {
        "name": "kube-root-ca.crt",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    mount = {m["name"]: m for m in container()["volumeMounts"]}["kubelet-ca"]
    assert mount == {"name": "kubelet-ca", "mountPath": "/etc/kubelet-ca", "readOnly": True}
    assert {"name": "tmp", "mountPath": "/tmp"} in container()["volumeMounts"]


def test_the_probes_ask_the_secure_port() -> None:
    ready, live = container()["readinessProbe"], container()["livenessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert live["httpGet"] == {"path": "/livez", "port": "https", "scheme": "HTTPS"}


def test_everything_passes_the_restricted_pod_security_profile(tmp_path: Path) -> None:
    for objects in (OBJECTS, metricsserver.manifests(serving=serving(tmp_path)[0])):
        spec = pod(objects)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag)
        for volume in spec["volumes"]:
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
        for c in spec["containers"]:
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["readOnlyRootFilesystem"] is True
            assert not security.get("privileged")
            assert not any("hostPort" in p for p in c["ports"])
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        assert {v["name"] for v in spec["volumes"]} == {m["name"] for m in c["volumeMounts"]}


def rules_of(kind: str) -> list[dict[str, Any]]:
    return [r for o in OBJECTS if o["kind"] == kind for r in o["rules"]]


def test_rbac_is_least_privilege() -> None:
    assert rules_of("Role") == []  # it binds existing roles, makes no namespaced one
    for rule in rules_of("ClusterRole"):
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    assert one("ClusterRole", "system:metrics-server")["rules"] == [
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    ]
    reader = one("ClusterRole", "system:aggregated-metrics-reader")
    assert reader["rules"] == [
        {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"],
         "verbs": ["get", "list", "watch"]}
    ]  # fmt: skip
    for role in ("view", "edit", "admin"):
        assert reader["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{role}"] == (
            "true"
        )
    account = [{"kind": "ServiceAccount", "name": "metrics-server", "namespace": "kube-system"}]
    bound = {
        (o["kind"], o["roleRef"]["kind"], o["roleRef"]["name"])
        for o in OBJECTS
        if o["kind"].endswith("Binding") and o["subjects"] == account
    }
    assert bound == {
        ("ClusterRoleBinding", "ClusterRole", "system:metrics-server"),
        ("ClusterRoleBinding", "ClusterRole", "system:auth-delegator"),
        ("RoleBinding", "Role", "extension-apiserver-authentication-reader"),
    }
    assert one("RoleBinding")["metadata"]["namespace"] == "kube-system"
    assert pod()["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]


def test_without_a_serving_certificate_only_the_apiserver_hop_skips_verification() -> None:
    spec = one("APIService")["spec"]
    assert spec["insecureSkipTLSVerify"] is True and "caBundle" not in spec
    assert not any(a.startswith("--tls-") for a in container()["args"])


def test_with_a_serving_certificate_the_apiserver_verifies_metrics_server(tmp_path: Path) -> None:
    chosen, ca = serving(tmp_path)
    objects = metricsserver.manifests(serving=chosen)
    spec = one("APIService", objects=objects)["spec"]
    assert "insecureSkipTLSVerify" not in spec
    assert base64.b64decode(spec["caBundle"]) == ca.cert.read_bytes()
    secret = one("Secret", "metrics-server-tls", objects)
    assert secret["type"] == "kubernetes.io/tls"
    assert base64.b64decode(secret["data"]["tls.key"]) == chosen.key
    args = container(objects)["args"]
    assert "--tls-cert-file=/etc/metrics-server/tls/tls.crt" in args
    assert "--tls-private-key-file=/etc/metrics-server/tls/tls.key" in args
    assert "--kubelet-certificate-authority=/etc/kubelet-ca/ca.crt" in args
    volume = {v["name"]: v for v in pod(objects)["volumes"]}["tls"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    kinds = [o["kind"] for o in objects]
    assert kinds.index("Secret") < kinds.index("Deployment")
    # The certificate chains to the bundle and names the host the apiserver dials.
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert.read_bytes()))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "metrics-server.kube-system.svc" in sans.get_values_for_type(x509.DNSName)


def test_the_waits_follow_the_deployment_then_the_apiservice() -> None:
    assert metricsserver.WAIT_FOR == (
        ("-n", "kube-system", "deployment/metrics-server", "--for=condition=Available"),
        ("apiservice/v1beta1.metrics.k8s.io", "--for=condition=Available"),
    )


def test_the_yaml_stream_round_trips(tmp_path: Path) -> None:
    assert list(yaml.safe_load_all(metricsserver.manifests_yaml())) == OBJECTS
    chosen = serving(tmp_path)[0]
    text = metricsserver.manifests_yaml(serving=chosen)
    assert list(yaml.safe_load_all(text)) == metricsserver.manifests(serving=chosen)
