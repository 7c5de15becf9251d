"""Rendering a ModelDeployment's children: names, labels, pods, routing, pruning."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mdep_fixtures import ACCESS, SHA_CANARY, base_resource
from modelship_operator.kinds import CHILD_KINDS, ChildRef
from modelship_operator.render import (
    DesiredState,
    VariantPlan,
    apply_waves,
    stale_children,
    state_from_spec,
)
from modelship_operator.render import render as render_state
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ModelRef, Traffic
from modelship_router.config import RoutingConfig

SETTINGS = OperatorSettings(
    serving_image="modelship/serving:9.9", router_image="modelship/router:9.9"
)
CANARY = {"version": "1.5.0", "uri": "file:///models/churn-1.5.0.skops", "sha256": SHA_CANARY}


#: The candidate each resource made by md(canary=...) rolls out (by id of the resource).
_CANDIDATES: dict[int, ModelRef] = {}


def md(canary: dict[str, Any] | None = None, **spec: Any) -> ModelDeployment:
    """A resource; with ``canary``, rendered with that candidate on the canary variant (as
    the rollout engine does while it rolls spec.model out)."""
    resource = ModelDeployment.from_api(base_resource(**spec))
    _CANDIDATES.pop(id(resource), None)  # an id may be reused once a resource is gone
    if canary is not None:
        _CANDIDATES[id(resource)] = ModelRef(**{"format": "auto", **canary})
    return resource


def render(
    resource: ModelDeployment, settings: OperatorSettings, state: DesiredState | None = None
) -> list[dict[str, Any]]:
    if state is None:
        state = state_from_spec(resource, candidate=_CANDIDATES.get(id(resource)))
    return render_state(resource, settings, state)


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def pod_spec(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = by_key(objects)[("Deployment", name)]["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


ROUTER_OBJECTS = {
    ("ServiceAccount", "churn-router"),
    ("Role", "churn-router"),
    ("RoleBinding", "churn-router"),
    ("ConfigMap", "churn-router"),
    ("Service", "churn-router"),
    ("Deployment", "churn-router"),
    # Two router pods by default, so one may be evicted at a time.
    ("PodDisruptionBudget", "churn-router"),
    # Serving pods admit only the router and the scrapers; the router admits clients.
    ("NetworkPolicy", "churn-serving"),
    ("NetworkPolicy", "churn-router"),
}
STABLE = {("Service", "churn-stable"), ("Deployment", "churn-stable")}
CANARY_OBJS = {("Service", "churn-canary"), ("Deployment", "churn-canary")}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, STABLE | ROUTER_OBJECTS),
        ({"canary": CANARY}, STABLE | CANARY_OBJS | ROUTER_OBJECTS),
        (
            {"canary": CANARY, "replicas": 2},
            STABLE
            | CANARY_OBJS
            | ROUTER_OBJECTS
            | {("PodDisruptionBudget", "churn-stable"), ("PodDisruptionBudget", "churn-canary")},
        ),
        ({"router": {"type": "none"}}, STABLE),
        ({"router": {"type": "none"}, "canary": CANARY}, STABLE | CANARY_OBJS),
        (
            {"router": {"replicas": 1}},
            STABLE | ROUTER_OBJECTS - {("PodDisruptionBudget", "churn-router")},
        ),
    ],
    ids=["stable-only", "canary", "replicas-2", "no-router", "no-router-canary", "one-router"],
)
def test_children_per_configuration(spec: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    objects = render(md(**spec), SETTINGS)
    assert set(by_key(objects)) == expected
    assert len(objects) == len(expected)


def test_every_child_is_owned_labelled_and_of_a_managed_kind() -> None:
    kinds = {(k.api_version, k.kind) for k in CHILD_KINDS}
    for obj in render(md(canary=CANARY, replicas=3, router={"replicas": 2}), SETTINGS):
        meta = obj["metadata"]
        assert (obj["apiVersion"], obj["kind"]) in kinds
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "modelship.io/v1alpha2",
                "kind": "ModelDeployment",
                "name": "churn",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "modelship"
        assert meta["labels"]["app.kubernetes.io/instance"] == "churn"
        assert meta["labels"]["modelship.io/deployment"] == "churn"


def test_apply_order_puts_rbac_and_config_before_the_pods_that_need_them() -> None:
    kinds = [o["kind"] for o in render(md(canary=CANARY), SETTINGS)]
    assert kinds.index("Role") < kinds.index("Deployment")
    assert kinds.index("RoleBinding") < kinds.index("Deployment")
    assert kinds.index("ConfigMap") < kinds.index("Deployment")


def test_apply_waves_put_everything_a_pod_needs_first_and_keep_the_order() -> None:
    resource = md(canary=CANARY, replicas=2, autoscaling={"maxReplicas": 4})
    objects = render(resource, SETTINGS)
    waves = apply_waves(objects)
    assert [o for wave in waves for o in wave] == objects  # nothing lost, nothing reordered
    kinds = [sorted({o["kind"] for o in wave}) for wave in waves]
    assert kinds == [
        ["Role", "ServiceAccount"],
        ["ConfigMap", "NetworkPolicy", "RoleBinding", "Service"],
        ["Deployment"],  # stable, canary and the router at once
        ["HorizontalPodAutoscaler", "PodDisruptionBudget"],
    ]
    assert len(waves[2]) == 3


def test_rendering_is_deterministic_and_plain_json() -> None:
    resource = md(canary=CANARY, replicas=2)
    first = json.dumps(render(resource, SETTINGS), sort_keys=True)
    assert first == json.dumps(render(resource, SETTINGS), sort_keys=True)


@pytest.mark.parametrize("variant", ["stable", "canary"])
def test_serving_deployment_of_each_variant(variant: str) -> None:
    objects = render(md(canary=CANARY, replicas=2), SETTINGS)
    deployment = by_key(objects)[("Deployment", f"churn-{variant}")]
    version = "1.4.0" if variant == "stable" else "1.5.0"
    labels = {
        "app.kubernetes.io/name": "modelship-serving",
        "app.kubernetes.io/instance": "churn",
        "app.kubernetes.io/managed-by": "modelship",
        "modelship.io/deployment": "churn",
        "modelship.io/variant": variant,
        "modelship.io/model-version": version,
    }
    template = deployment["spec"]["template"]
    assert labels.items() <= template["metadata"]["labels"].items()
    assert labels.items() <= deployment["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "modelship.io/deployment": "churn",
        "modelship.io/variant": variant,
    }
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = template["spec"]["containers"]
    assert container["image"] == "modelship/serving:9.9"
    sha = "a" * 64 if variant == "stable" else SHA_CANARY
    uri = "file:///models/churn-1.4.0.skops" if variant == "stable" else CANARY["uri"]
    assert env_of(container) == {
        "MODELSHIP_DEPLOYMENT": "churn",  # the deployment label of every series
        "MODELSHIP_MODEL_URI": uri,
        "MODELSHIP_MODEL_SHA256": sha,
        "MODELSHIP_MODEL_NAME": "churn",
        "MODELSHIP_MODEL_VERSION": version,
        "MODELSHIP_MODEL_FORMAT": "auto",
        "MODELSHIP_VARIANT": variant,
        "MODELSHIP_PORT": "8080",
        "MODELSHIP_GRPC_PORT": "8081",
        "MODELSHIP_MODEL_CACHE_DIR": "/tmp/modelship-models",
        "MODELSHIP_PREDICTION_TTL_SECONDS": "600",  # spec.feedback.window (10m)
        "MODELSHIP_FEEDBACK_ENABLED": "false",  # no spec.access: nobody may post feedback
    }
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/v2/health/ready",
        "port": "http",
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert template["spec"]["automountServiceAccountToken"] is False


def test_variant_service_maps_port_80_to_http_and_8081_to_grpc() -> None:
    svc = by_key(render(md(canary=CANARY), SETTINGS))[("Service", "churn-canary")]
    assert svc["spec"]["selector"] == {
        "modelship.io/deployment": "churn",
        "modelship.io/variant": "canary",
    }
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": "kubernetes.io/h2c"},
    ]  # fmt: skip
    # The router speaks HTTP only: its Service has no gRPC port.
    router = by_key(render(md(canary=CANARY), SETTINGS))[("Service", "churn-router")]
    assert [p["name"] for p in router["spec"]["ports"]] == ["http"]


def test_router_and_serving_selectors_never_overlap() -> None:
    objects = by_key(render(md(canary=CANARY), SETTINGS))
    deployments = [o for (kind, _), o in objects.items() if kind == "Deployment"]
    for selecting in deployments:
        wanted = selecting["spec"]["selector"]["matchLabels"].items()
        matched = [
            d["metadata"]["name"]
            for d in deployments
            if wanted <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched == [selecting["metadata"]["name"]]


# The checks of the Pod Security Standard "restricted" profile (v1.37) that a pod spec can
# fail, written out so a change to the rendering that breaks one names the rule.
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    problems = []
    psc = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(flag)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: {kinds}")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: capabilities")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{c['name']}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{c['name']}: seccompProfile")
        if any("hostPort" in p for p in c.get("ports", [])):
            problems.append(f"{c['name']}: hostPort")
        if not sc.get("readOnlyRootFilesystem"):
            problems.append(f"{c['name']}: writable root filesystem")
    return problems


@pytest.mark.parametrize("name", ["churn-stable", "churn-canary", "churn-router"])
def test_pods_meet_the_restricted_pod_security_profile(name: str) -> None:
    objects = render(md(canary=CANARY, storage={"claimName": "models"}, access=ACCESS), SETTINGS)
    pod = pod_spec(objects, name)
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 65532


def test_the_restricted_check_itself_catches_violations() -> None:
    pod = pod_spec(render(md(), SETTINGS), "churn-stable")
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(restricted_violations(pod)) == 2


def test_storage_is_mounted_read_only() -> None:
    objects = render(md(storage={"claimName": "models", "mountPath": "/data"}), SETTINGS)
    pod = pod_spec(objects, "churn-stable")
    assert {
        "name": "models",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    } in (pod["volumes"])
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "models", "mountPath": "/data", "readOnly": True} in mounts


def test_a_pvc_model_mounts_its_claim_read_only_for_its_variant_only() -> None:
    canary = {**CANARY, "uri": "pvc://team-models/churn/1.5.0/model.skops"}
    objects = render(md(canary=canary), SETTINGS)
    pod = pod_spec(objects, "churn-canary")
    assert {
        "name": "model-claim",
        "persistentVolumeClaim": {"claimName": "team-models", "readOnly": True},
    } in pod["volumes"]
    container = pod["containers"][0]
    mount = {"name": "model-claim", "mountPath": "/mnt/pvc/team-models", "readOnly": True}
    assert mount in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELSHIP_MODEL_URI"] == "file:///mnt/pvc/team-models/churn/1.5.0/model.skops"
    assert restricted_violations(pod) == []
    stable = pod_spec(objects, "churn-stable")
    assert not [v for v in stable["volumes"] if "persistentVolumeClaim" in v]


def test_a_resolved_registry_model_serves_its_mlflow_directory_unpinned_without_a_pin() -> None:
    from modelship_operator.observed import deployment_view

    directory = "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/models/m-7/artifacts"
    canary = {**CANARY, "uri": directory, "sha256": "", "format": "mlflow",
              "resolvedFrom": "models:/churn@champion", "registryVersion": "7"}  # fmt: skip
    objects = render(md(canary=canary), SETTINGS)
    env = env_of(pod_spec(objects, "churn-canary")["containers"][0])
    assert (env["MODELSHIP_MODEL_URI"], env["MODELSHIP_MODEL_FORMAT"]) == (directory, "mlflow")
    # No empty variable: the API server would drop it and the live object would differ.
    assert "MODELSHIP_MODEL_SHA256" not in env
    canary_deployment = by_key(objects)[("Deployment", "churn-canary")]
    assert deployment_view(canary_deployment).sha256 == ""  # what runs() compares with
    stable = env_of(pod_spec(objects, "churn-stable")["containers"][0])
    assert stable["MODELSHIP_MODEL_SHA256"] == "a" * 64


def test_max_size_is_the_download_limit_and_the_disk_has_room_for_it() -> None:
    canary = {**CANARY, "maxSize": "3Gi"}
    objects = render(md(canary=canary), SETTINGS)
    expected = [("churn-stable", None, "2Gi"), ("churn-canary", 3 << 30, "3584Mi")]
    for name, limit, room in expected:
        pod = pod_spec(objects, name)
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env.get("MODELSHIP_MODEL_MAX_BYTES") == (None if limit is None else str(limit))
        (tmp,) = [v for v in pod["volumes"] if "emptyDir" in v]
        assert tmp["emptyDir"]["sizeLimit"] == room


def test_s3_settings_and_secret_keys_become_the_serving_env() -> None:
    s3 = {
        "secretName": "model-store",
        "endpoint": "http://seaweedfs.storage:8333",
        "region": "eu-west-1",
        "serviceAccountName": "model-reader",
    }
    pod = pod_spec(render(md(canary=CANARY, s3=s3), SETTINGS), "churn-canary")
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MODELSHIP_S3_ENDPOINT_URL"]["value"] == "http://seaweedfs.storage:8333"
    assert env["MODELSHIP_S3_REGION"]["value"] == "eu-west-1"
    assert env["MODELSHIP_S3_ADDRESSING_STYLE"]["value"] == "auto"
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert refs == {
        key: {"name": "model-store", "key": key, "optional": optional}
        for key, optional in [
            ("AWS_ACCESS_KEY_ID", False),
            ("AWS_SECRET_ACCESS_KEY", False),
            ("AWS_SESSION_TOKEN", True),
            ("AWS_REGION", True),
            ("AWS_ENDPOINT_URL", True),
        ]
    }
    assert pod["serviceAccountName"] == "model-reader"
    assert pod["automountServiceAccountToken"] is False
    assert restricted_violations(pod) == []


@pytest.mark.parametrize("name", ["churn-stable", "churn-canary", "churn-router"])
def test_the_access_token_is_a_file_the_pods_read_and_the_operator_never_does(name: str) -> None:
    access = {"tokenSecret": {"name": "churn-access", "key": "feedback-token"}}
    pod = pod_spec(render(md(canary=CANARY, access=access), SETTINGS), name)
    volume = next(v for v in pod["volumes"] if v["name"] == "access")
    assert volume == {
        "name": "access",
        "secret": {
            "secretName": "churn-access",
            "items": [{"key": "feedback-token", "path": "token"}],
            "defaultMode": 0o440,
            "optional": True,  # a missing Secret refuses feedback, never stops predictions
        },
    }
    (container,) = pod["containers"]
    assert {
        "name": "access",
        "mountPath": "/var/run/secrets/modelship.io/access",
        "readOnly": True,
    } in container["volumeMounts"]
    env = env_of(container)
    setting = "MODELSHIP_ROUTER_TOKEN_FILE" if name == "churn-router" else (
        "MODELSHIP_FEEDBACK_TOKEN_FILE")  # fmt: skip
    assert env[setting] == "/var/run/secrets/modelship.io/access/token"
    assert "MODELSHIP_FEEDBACK_ENABLED" not in env
    assert not any("secretKeyRef" in str(e) for e in container["env"])


@pytest.mark.parametrize("name", ["churn-stable", "churn-router"])
def test_without_access_feedback_is_off_and_no_token_is_mounted(name: str) -> None:
    pod = pod_spec(render(md(), SETTINGS), name)
    (container,) = pod["containers"]
    assert all(v["name"] != "access" for v in pod["volumes"])
    env = env_of(container)
    assert "MODELSHIP_ROUTER_TOKEN_FILE" not in env
    assert "MODELSHIP_FEEDBACK_TOKEN_FILE" not in env
    if name == "churn-stable":
        assert env["MODELSHIP_FEEDBACK_ENABLED"] == "false"


def test_naming_a_variant_is_a_privileged_rule_and_testers_rules_are_not() -> None:
    resource = md(
        canary=CANARY,
        strategy={"type": "ABTest", "abTest": {"match": [{"header": "x-group", "value": "beta"}]}},
        access=ACCESS,
    )
    config = routing(resource, Traffic(stable=50, canary=50))
    assert [(m.header, m.value, m.variant, m.privileged) for m in config.match] == [
        ("x-group", "beta", "canary", False),
        ("x-modelship-variant", "stable", "stable", True),
        ("x-modelship-variant", "canary", "canary", True),
    ]


def test_without_s3_no_credentials_reach_the_pods() -> None:
    pod = pod_spec(render(md(), SETTINGS), "churn-stable")
    names = {e["name"] for e in pod["containers"][0]["env"]}
    assert not {n for n in names if n.startswith(("AWS_", "MODELSHIP_S3_"))}
    assert "serviceAccountName" not in pod


def test_s3_without_a_secret_passes_settings_only() -> None:
    pod = pod_spec(render(md(s3={"region": "eu-west-1"}), SETTINGS), "churn-stable")
    env = pod["containers"][0]["env"]
    assert not [e for e in env if "valueFrom" in e]
    assert {"name": "MODELSHIP_S3_REGION", "value": "eu-west-1"} in env


@pytest.mark.parametrize(
    ("spec", "settings", "image", "policy"),
    [
        ({}, SETTINGS, "modelship/serving:9.9", None),
        ({"images": {"serving": "reg.local/s:2"}}, SETTINGS, "reg.local/s:2", None),
        (
            {"images": {"pullPolicy": "Never"}},
            SETTINGS.model_copy(update={"image_pull_policy": "Always"}),
            "modelship/serving:9.9",
            "Never",
        ),
        ({}, SETTINGS.model_copy(update={"image_pull_policy": "Always"}), None, "Always"),
    ],
)
def test_images_come_from_settings_unless_the_spec_overrides(
    spec: dict[str, Any], settings: OperatorSettings, image: str | None, policy: str | None
) -> None:
    (container,) = pod_spec(render(md(**spec), settings), "churn-stable")["containers"]
    if image is not None:
        assert container["image"] == image
    assert container.get("imagePullPolicy") == policy


def test_default_images_are_tagged_with_the_installed_version() -> None:
    settings = OperatorSettings()
    assert settings.serving_image.startswith("modelship/serving:")
    assert settings.router_image.startswith("modelship/router:")
    assert settings.serving_image.split(":")[1] == settings.router_image.split(":")[1]


def test_model_name_defaults_to_the_resource_name_and_sha_is_lowercased() -> None:
    resource = md(
        model={"name": "churn-model", "version": "1", "uri": "file:///m", "sha256": "AB" * 32}
    )
    env = env_of(pod_spec(render(resource, SETTINGS), "churn-stable")["containers"][0])
    assert env["MODELSHIP_MODEL_NAME"] == "churn-model"
    assert env["MODELSHIP_MODEL_SHA256"] == "ab" * 32


def test_router_deployment_and_its_least_privilege_role() -> None:
    objects = by_key(render(md(canary=CANARY), SETTINGS))
    pod = objects[("Deployment", "churn-router")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "modelship/router:9.9"
    assert env_of(container) == {
        "MODELSHIP_ROUTER_DEPLOYMENT": "churn",
        "MODELSHIP_ROUTER_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "MODELSHIP_ROUTER_CONFIGMAP": "churn-router",
        "MODELSHIP_ROUTER_PORT": "8080",
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["serviceAccountName"] == "churn-router"
    assert objects[("Role", "churn-router")]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "watch"],
            "resourceNames": ["churn-router"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    binding = objects[("RoleBinding", "churn-router")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "churn-router",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "churn-router", "namespace": "ml"}
    ]


def test_two_router_pods_by_default_and_every_group_spread_over_nodes() -> None:
    objects = by_key(render(md(canary=CANARY), SETTINGS))
    router = objects[("Deployment", "churn-router")]["spec"]
    assert router["replicas"] == 2
    budget = objects[("PodDisruptionBudget", "churn-router")]["spec"]
    assert budget == {"maxUnavailable": 1, "selector": router["selector"]}
    for name in ("churn-router", "churn-stable", "churn-canary"):
        spec = objects[("Deployment", name)]["spec"]
        constraints = spec["template"]["spec"]["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in constraints] == [
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        ]
        for constraint in constraints:
            # A preference over the group's own pods: one node still runs them all.
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
            assert constraint["maxSkew"] == 1
            assert constraint["labelSelector"] == spec["selector"]
    single = by_key(render(md(router={"replicas": 1}), SETTINGS))
    assert single[("Deployment", "churn-router")]["spec"]["replicas"] == 1
    assert ("PodDisruptionBudget", "churn-router") not in single


def routing(resource: ModelDeployment, traffic: Traffic | None = None) -> RoutingConfig:
    state = state_from_spec(resource, traffic, _CANDIDATES.get(id(resource)))
    objects = by_key(render(resource, SETTINGS, state))
    return RoutingConfig.from_json(objects[("ConfigMap", "churn-router")]["data"]["routing.json"])


def test_routing_without_canary_sends_everything_to_stable() -> None:
    config = routing(md())
    assert config.weights() == {"stable": 100.0}
    assert config.variant("stable").service == "churn-stable"
    assert config.variant("stable").model_version == "1.4.0"
    assert config.fallback == "stable"


def test_routing_of_a_canary_step() -> None:
    config = routing(md(canary=CANARY), Traffic(stable=75, canary=25))
    assert config.weights() == {"stable": 75.0, "canary": 25.0}
    assert config.variant("canary").service == "churn-canary"
    assert config.variant("canary").port == "http"
    assert config.sticky is None and config.mirror is None
    # Feedback names the variant that served the prediction and is routed back to it.
    assert [(m.header, m.value, m.variant) for m in config.match] == [
        ("x-modelship-variant", "stable", "stable"),
        ("x-modelship-variant", "canary", "canary"),
    ]


def test_routing_of_an_ab_test_is_sticky_with_match_rules() -> None:
    resource = md(
        canary=CANARY,
        strategy={
            "type": "ABTest",
            "abTest": {
                "stickyKey": {"cookie": "uid"},
                "split": 30,
                "match": [{"header": "X-Group", "value": "beta"}],
            },
        },
        access=ACCESS,
    )
    config = routing(resource, Traffic(stable=70, canary=30))
    assert config.sticky is not None and config.sticky.cookie == "uid"
    assert [(m.header, m.value, m.variant) for m in config.match] == [
        ("x-group", "beta", "canary"),  # the user's rules come first
        ("x-modelship-variant", "stable", "stable"),
        ("x-modelship-variant", "canary", "canary"),
    ]
    assert config.weights() == {"stable": 70.0, "canary": 30.0}


def test_routing_of_a_sticky_canary_salts_per_rollout() -> None:
    resource = md(canary=CANARY, strategy={"stickyKey": {"header": "X-User"}})
    config = routing(resource, Traffic(stable=90, canary=10))
    assert config.sticky is not None and config.sticky.header == "x-user"
    assert config.salt == f"churn/1.5.0/{SHA_CANARY[:12]}"
    # The salt is the same at every step of the rollout: users never flip back.
    assert routing(resource, Traffic(stable=50, canary=50)).salt == config.salt
    other = md(canary=CANARY | {"version": "1.6.0"}, strategy={"stickyKey": {"cookie": "uid"}})
    assert routing(other, Traffic(stable=90, canary=10)).salt != config.salt


def test_feedback_window_becomes_the_prediction_ttl_of_the_serving_pods() -> None:
    resource = md(feedback={"window": "1h30m"})
    objects = by_key(render(resource, SETTINGS, state_from_spec(resource)))
    template = objects[("Deployment", "churn-stable")]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert env_of(container)["MODELSHIP_PREDICTION_TTL_SECONDS"] == "5400"


def test_routing_of_a_canary_without_sticky_key_has_no_salt() -> None:
    config = routing(md(canary=CANARY), Traffic(stable=90, canary=10))
    assert config.sticky is None and config.salt is None


def test_routing_of_shadow_mode_mirrors_without_serving_the_canary() -> None:
    resource = md(canary=CANARY, strategy={"type": "Shadow"})
    config = routing(resource, Traffic(stable=100, canary=0, mirror=40))
    assert config.mirror is not None
    assert (config.mirror.variant, config.mirror.percent) == ("canary", 40.0)
    assert config.weights()["canary"] == 0


def test_router_generation_is_written_into_the_config() -> None:
    resource = md()
    state = DesiredState(
        stable=VariantPlan("stable", resource.spec.desired_model(), 1),
        canary=None,
        traffic=Traffic(),
        router_generation=7,
    )
    objects = by_key(render(resource, SETTINGS, state))
    text = objects[("ConfigMap", "churn-router")]["data"]["routing.json"]
    assert RoutingConfig.from_json(text).generation == 7


def test_a_scaled_down_canary_keeps_its_service_but_not_its_budget() -> None:
    resource = md(canary=CANARY, replicas=3)
    canary = ModelRef(version="1.5.0", uri=CANARY["uri"], sha256=SHA_CANARY)
    state = DesiredState(
        stable=VariantPlan("stable", resource.spec.desired_model(), 3),
        canary=VariantPlan("canary", canary, 0),
        traffic=Traffic(),
    )
    objects = by_key(render(resource, SETTINGS, state))
    assert objects[("Deployment", "churn-canary")]["spec"]["replicas"] == 0
    assert ("Service", "churn-canary") in objects
    assert ("PodDisruptionBudget", "churn-canary") not in objects
    assert ("PodDisruptionBudget", "churn-stable") in objects


@pytest.mark.parametrize(
    ("traffic", "canary"),
    [(Traffic(stable=50, canary=40), True), (Traffic(stable=90, canary=10), False),
     (Traffic(stable=100, mirror=10), False)],
)  # fmt: skip
def test_inconsistent_states_are_refused(traffic: Traffic, canary: bool) -> None:
    resource = md(canary=CANARY)
    model = resource.spec.desired_model()
    with pytest.raises(ValueError, match="traffic"):
        DesiredState(
            stable=VariantPlan("stable", model, 1),
            canary=VariantPlan("canary", model, 1) if canary else None,
            traffic=traffic,
        )


# --- pruning --------------------------------------------------------------------------------


def existing(
    objects: list[dict[str, Any]], uid: str = "uid-1", managed: bool = True
) -> list[dict[str, Any]]:
    """Objects as the API would list them (ownerReferences and labels as given)."""
    out = []
    for obj in objects:
        copy = json.loads(json.dumps(obj))
        copy["metadata"]["ownerReferences"][0]["uid"] = uid
        if not managed:
            del copy["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        out.append(copy)
    return out


def refs(*pairs: tuple[str, str]) -> list[ChildRef]:
    versions = {k.kind: k.api_version for k in CHILD_KINDS}
    return sorted(ChildRef(versions[k], k, n) for k, n in pairs)


def test_finished_canary_is_pruned() -> None:
    before = render(md(canary=CANARY, replicas=2), SETTINGS)
    after = render(md(replicas=2), SETTINGS)
    assert stale_children(after, existing(before), "uid-1") == refs(
        ("Deployment", "churn-canary"),
        ("Service", "churn-canary"),
        ("PodDisruptionBudget", "churn-canary"),
    )


def test_budget_is_pruned_when_scaled_to_one_and_router_objects_when_router_goes() -> None:
    before = render(md(replicas=2), SETTINGS)
    after = render(md(replicas=1, router={"type": "none"}), SETTINGS)
    assert stale_children(after, existing(before), "uid-1") == refs(
        ("PodDisruptionBudget", "churn-stable"),
        ("ServiceAccount", "churn-router"),
        ("Role", "churn-router"),
        ("RoleBinding", "churn-router"),
        ("ConfigMap", "churn-router"),
        ("Service", "churn-router"),
        ("Deployment", "churn-router"),
        ("PodDisruptionBudget", "churn-router"),
        ("NetworkPolicy", "churn-serving"),
        ("NetworkPolicy", "churn-router"),
    )


@pytest.mark.parametrize(
    ("uid", "managed", "why"),
    [
        ("uid-other", True, "owned by an earlier ModelDeployment of the same name"),
        ("uid-1", False, "not labelled as managed by modelship"),
    ],
)
def test_objects_that_are_not_ours_are_never_pruned(uid: str, managed: bool, why: str) -> None:
    before = render(md(canary=CANARY), SETTINGS)
    after = render(md(), SETTINGS)
    assert stale_children(after, existing(before, uid=uid, managed=managed), "uid-1") == [], why


def test_kinds_the_operator_does_not_manage_are_never_pruned() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "churn-canary-abc",
            "labels": {"app.kubernetes.io/managed-by": "modelship"},
            "ownerReferences": [{"uid": "uid-1", "controller": True}],
        },
    }
    assert stale_children(render(md(), SETTINGS), [pod], "uid-1") == []


def test_nothing_is_pruned_when_everything_is_still_wanted() -> None:
    objects = render(md(canary=CANARY, replicas=2), SETTINGS)
    assert stale_children(objects, existing(objects), "uid-1") == []


def test_spec_changes_do_not_rename_children() -> None:
    a = render(md(canary=CANARY), SETTINGS)
    b = render(md(canary={**CANARY, "version": "2.0"}, replicas=4), SETTINGS)
    names_a = {(o["kind"], o["metadata"]["name"]) for o in a if o["kind"] != "PodDisruptionBudget"}
    names_b = {(o["kind"], o["metadata"]["name"]) for o in b if o["kind"] != "PodDisruptionBudget"}
    assert names_a == names_b


def test_probability_checks_ask_the_pods_to_score_probabilities() -> None:
    strategy = {
        "metrics": [
            {"name": "log-loss", "max": 0.3},
            {"name": "roc-auc", "className": "yes, churned", "compareTo": "stable",
             "margin": {"absolute": 0.02}},
        ]
    }  # fmt: skip
    resource = md(canary=CANARY, strategy=strategy, access=ACCESS)
    for name in ("churn-stable", "churn-canary"):
        (container,) = pod_spec(render(resource, SETTINGS), name)["containers"]
        env = env_of(container)
        assert env["MODELSHIP_FEEDBACK_LOG_LOSS"] == "true"
        # A JSON list: a class name may hold a comma.
        assert json.loads(env["MODELSHIP_FEEDBACK_SCORE_CLASSES"]) == ["yes, churned"]


def test_without_probability_checks_the_pods_remember_no_probabilities() -> None:
    strategy = {"metrics": [{"name": "accuracy", "min": 80}]}
    (container,) = pod_spec(render(md(strategy=strategy, access=ACCESS), SETTINGS),
                            "churn-stable")["containers"]  # fmt: skip
    env = env_of(container)
    assert "MODELSHIP_FEEDBACK_LOG_LOSS" not in env
    assert "MODELSHIP_FEEDBACK_SCORE_CLASSES" not in env
