"""Render a ModelDeployment's child objects: pure functions, plain dicts, no I/O.

The result is what the operator server-side applies, in order: the router's ServiceAccount,
Role and RoleBinding, the routing ConfigMap, a Service per variant and for the router, a
serving Deployment per variant, the router Deployment, and PodDisruptionBudgets. Every
object carries the common labels and a controller ownerReference to the ModelDeployment,
so Kubernetes' garbage collector removes them with it and :func:`stale_children` can find
the ones the spec no longer asks for.

What runs where is decided before rendering (:class:`DesiredState`): which model each
variant serves, how many replicas, and the traffic split. Without a rollout engine that is
simply the spec (:func:`state_from_spec`); during a rollout the reconciler passes the
state the step machine chose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from modelship_router.config import (
    CONFIGMAP_KEY,
    Mirror,
    RoutingConfig,
    StickyKey,
)
from modelship_router.config import (
    MatchRule as RouterMatchRule,
)
from modelship_router.config import (
    Variant as RouterVariant,
)
from modelship_serving.contract import DEPLOYMENT_ENV

from modelship_operator import netpol
from modelship_operator.capacity import Bounds, bounds
from modelship_operator.kinds import (
    CHILD_KINDS,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_MODEL_VERSION,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_VARIANT,
    MANAGED_BY,
    ChildRef,
)
from modelship_operator.rbac import router_rules
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import (
    API_VERSION,
    KIND,
    PVC_MOUNT_ROOT,
    S3_OPTIONAL_SECRET_KEYS,
    S3_SECRET_KEYS,
    ModelDeployment,
    ResourceList,
    Variant,
    pvc_location,
    size_bytes,
)
from modelship_operator.status import ModelRef, Traffic

PORT: Final = 8080
SERVICE_PORT: Final = 80
PORT_NAME: Final = "http"
#: The model server's Open Inference Protocol gRPC port (same port on pod and Service).
GRPC_PORT: Final = 8081
GRPC_PORT_NAME: Final = "grpc"
RUN_AS: Final = 65532
TMP_VOLUME: Final = "tmp"
MODELS_VOLUME: Final = "models"
#: The claim of a pvc://claim/path model.
MODEL_CLAIM_VOLUME: Final = "model-claim"
#: Where the model server downloads http(s) and s3 artifacts (on the writable emptyDir).
MODEL_CACHE_DIR: Final = "/tmp/modelship-models"
#: spec.access's Secret key, mounted in router and serving pods (the kubelet keeps it current).
ACCESS_VOLUME: Final = "access"
ACCESS_DIR: Final = "/var/run/secrets/modelship.io/access"
ACCESS_TOKEN_FILE: Final = f"{ACCESS_DIR}/token"


# --- what runs where ------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantPlan:
    """One variant's Deployment: the model it serves and how many pods (``replicas``, or
    an autoscaler's range, which then owns the Deployment's replicas)."""

    variant: Variant
    model: ModelRef
    replicas: int
    autoscale: Bounds | None = None

    @property
    def most_pods(self) -> int:
        return self.autoscale.max_replicas if self.autoscale is not None else self.replicas


@dataclass(frozen=True)
class DesiredState:
    """Everything rendering needs beyond the spec: the decisions of the reconciler."""

    stable: VariantPlan
    canary: VariantPlan | None
    traffic: Traffic
    router_generation: int = 1

    def __post_init__(self) -> None:
        if self.traffic.stable + self.traffic.canary != 100:
            raise ValueError(f"traffic must add up to 100%: {self.traffic}")
        if self.canary is None and (self.traffic.canary or self.traffic.mirror):
            raise ValueError("traffic for a canary that is not deployed")

    def variants(self) -> tuple[VariantPlan, ...]:
        return (self.stable,) if self.canary is None else (self.stable, self.canary)


def state_from_spec(
    md: ModelDeployment, traffic: Traffic | None = None, candidate: ModelRef | None = None
) -> DesiredState:
    """spec.model on the stable variant at full size (what the first apply of a resource
    deploys; the rollout engine decides everything after that), and ``candidate`` on the
    canary at full size if given."""
    full = bounds(md.spec.autoscaling)
    canary = None if candidate is None else VariantPlan("canary", candidate, md.spec.replicas, full)
    return DesiredState(
        stable=VariantPlan("stable", md.desired_model(), md.spec.replicas, full),
        canary=canary,
        traffic=traffic or Traffic(),
        router_generation=md.status.router_config_generation or 1,
    )


# --- names and metadata ---------------------------------------------------------------------


def variant_name(md_name: str, variant: Variant) -> str:
    """``<name>-stable`` / ``<name>-canary``: the Deployment and Service of a variant."""
    return f"{md_name}-{variant}"


def router_name(md_name: str) -> str:
    """``<name>-router``: the router's Deployment, Service, ConfigMap and RBAC objects."""
    return f"{md_name}-router"


def common_labels(md: ModelDeployment) -> dict[str, str]:
    """Labels on every child: who owns it and what it belongs to."""
    return {
        LABEL_INSTANCE: md.name,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "modelship",
        LABEL_DEPLOYMENT: md.name,
    }


def serving_labels(md: ModelDeployment, plan: VariantPlan) -> dict[str, str]:
    return common_labels(md) | {
        LABEL_NAME: "modelship-serving",
        LABEL_COMPONENT: "serving",
        LABEL_VARIANT: plan.variant,
        LABEL_MODEL_VERSION: plan.model.version,
    }


def router_labels(md: ModelDeployment) -> dict[str, str]:
    return common_labels(md) | {LABEL_NAME: "modelship-router", LABEL_COMPONENT: "router"}


def serving_selector(md: ModelDeployment, variant: Variant) -> dict[str, str]:
    """Pod selector of a variant; never includes the version (selectors are immutable)."""
    return {LABEL_DEPLOYMENT: md.name, LABEL_VARIANT: variant}


def router_selector(md: ModelDeployment) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: md.name, LABEL_COMPONENT: "router"}


def serving_pods_selector(md: ModelDeployment) -> dict[str, str]:
    """Every serving pod of the ModelDeployment, whichever variant."""
    return {LABEL_DEPLOYMENT: md.name, LABEL_COMPONENT: "serving"}


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    """Controller reference: garbage collection deletes children with their owner."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.name,
        "uid": md.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(md: ModelDeployment, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": md.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(md)],
    }


# --- pods -----------------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    """Pod-level settings of the ``restricted`` Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def spread(selector: Mapping[str, str]) -> list[dict[str, Any]]:
    """Spread a group's pods over nodes, then zones, where the cluster has several: a
    preference (``ScheduleAnyway``), so a one-node cluster still runs them all, and a
    node lost takes only its share of the group with it."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def container_security_context() -> dict[str, Any]:
    """Container-level settings of the ``restricted`` profile, plus a read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _resources(requests: ResourceList, limits: ResourceList) -> dict[str, Any]:
    out = {"requests": requests.to_api(), "limits": limits.to_api()}
    return {key: value for key, value in out.items() if value}


def _image_pull_policy(md: ModelDeployment, settings: OperatorSettings) -> dict[str, str]:
    policy = md.spec.images.pull_policy or settings.image_pull_policy
    return {} if policy is None else {"imagePullPolicy": policy}


def _env(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _seconds(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    return str(int(seconds)) if seconds.is_integer() else str(seconds)


def serving_env(md: ModelDeployment, plan: VariantPlan) -> dict[str, str]:
    """The model server's configuration (its ``MODELSHIP_*`` settings). The deployment,
    model, version and variant become the labels of every series it exports
    (``modelship_serving.contract``), which is all the analysis selects by."""
    return {
        DEPLOYMENT_ENV: md.name,
        "MODELSHIP_MODEL_URI": served_uri(plan.model),
        # Unpinned (a models:/ version without spec.model.sha256): no variable at all, as
        # the API server would drop an empty value and the live object would differ.
        **({"MODELSHIP_MODEL_SHA256": plan.model.sha256} if plan.model.sha256 else {}),
        "MODELSHIP_MODEL_NAME": md.model_name,
        "MODELSHIP_MODEL_VERSION": plan.model.version,
        "MODELSHIP_MODEL_FORMAT": plan.model.format,
        "MODELSHIP_VARIANT": plan.variant,
        "MODELSHIP_PORT": str(PORT),
        "MODELSHIP_GRPC_PORT": str(GRPC_PORT),
        "MODELSHIP_MODEL_CACHE_DIR": MODEL_CACHE_DIR,
        "MODELSHIP_PREDICTION_TTL_SECONDS": _seconds(md.spec.feedback.window_delta),
        **_max_bytes(plan.model),
        # Feedback steers promotion: only clients holding spec.access's token may post it.
        **(
            {"MODELSHIP_FEEDBACK_TOKEN_FILE": ACCESS_TOKEN_FILE}
            if md.spec.access is not None
            else {"MODELSHIP_FEEDBACK_ENABLED": "false"}
        ),
        **_probability_settings(md),
    }


def _probability_settings(md: ModelDeployment) -> dict[str, str]:
    """What the pods score from the class probabilities they remember: the log loss, and
    the score histograms of roc-auc's classes. Absent unless a check reads them, so other
    deployments' pods pay nothing (and their templates do not change)."""
    env = {}
    if md.spec.needs_log_loss():
        env["MODELSHIP_FEEDBACK_LOG_LOSS"] = "true"
    classes = md.spec.score_classes()
    if classes:
        # A JSON list: a class name may hold a comma.
        env["MODELSHIP_FEEDBACK_SCORE_CLASSES"] = json.dumps(classes)
    return env


def served_uri(model: ModelRef) -> str:
    """The URI the server loads: a pvc://claim/path becomes the file on the claim's
    read-only mount (:func:`_model_claim`); every other URI is passed as written."""
    location = pvc_location(model.uri)
    if location is None:
        return model.uri
    claim, path = location
    return f"file://{PVC_MOUNT_ROOT}/{claim}/{path}"


def _model_claim(model: ModelRef) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(volume, mount) of a pvc://claim/path model's claim, mounted read-only."""
    location = pvc_location(model.uri)
    if location is None:
        return None
    claim = location[0]
    volume = {
        "name": MODEL_CLAIM_VOLUME,
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    mount = {
        "name": MODEL_CLAIM_VOLUME,
        "mountPath": f"{PVC_MOUNT_ROOT}/{claim}",
        "readOnly": True,
    }
    return volume, mount


def _max_bytes(model: ModelRef) -> dict[str, str]:
    """spec.model.maxSize, as the server's download limit (omitted: the server's 1 GiB)."""
    if model.max_size is None:
        return {}
    return {"MODELSHIP_MODEL_MAX_BYTES": str(size_bytes(model.max_size))}


def _tmp_size_limit(model: ModelRef) -> str:
    """The pod's /tmp (where downloads land): room for the largest artifact allowed and
    its partial download, at least 2Gi."""
    limit = 2 << 30
    if model.max_size is not None:
        limit = max(limit, size_bytes(model.max_size) + (512 << 20))
    # In the API server's canonical form (2Gi, not 2048Mi), so what is applied reads back
    # unchanged and a comparison with the live object finds no drift.
    mebibytes = -(-limit // (1 << 20))
    return f"{mebibytes >> 10}Gi" if mebibytes % 1024 == 0 else f"{mebibytes}Mi"


def _service_account(md: ModelDeployment) -> dict[str, str]:
    """spec.s3.serviceAccountName (a web identity webhook projects its token into the pod
    itself: the API token stays unmounted)."""
    s3 = md.spec.s3
    if s3 is None or s3.service_account_name is None:
        return {}
    return {"serviceAccountName": s3.service_account_name}


def s3_env(md: ModelDeployment) -> list[dict[str, Any]]:
    """spec.s3 as the model server's environment: settings as values, the Secret's keys by
    reference (the kubelet reads the Secret, so the operator needs no access to it). A
    missing Secret or required key keeps the pod in CreateContainerConfigError, which the
    status reports."""
    s3 = md.spec.s3
    if s3 is None:
        return []
    values: dict[str, str] = {"MODELSHIP_S3_ADDRESSING_STYLE": s3.addressing_style}
    if s3.endpoint is not None:
        values["MODELSHIP_S3_ENDPOINT_URL"] = s3.endpoint
    if s3.region is not None:
        values["MODELSHIP_S3_REGION"] = s3.region
    env = _env(values)
    if s3.secret_name is not None:
        for key, optional in [
            *((k, False) for k in S3_SECRET_KEYS),
            *((k, True) for k in S3_OPTIONAL_SECRET_KEYS),
        ]:
            ref = {"name": s3.secret_name, "key": key, "optional": optional}
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def access_volume(md: ModelDeployment) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """spec.access's Secret key as the file ``ACCESS_TOKEN_FILE`` (volume, mount), or None.

    Optional: a Secret created after the ModelDeployment (or deleted) leaves the pods
    serving predictions, with feedback and forcing refused until the kubelet mounts it. The
    operator never reads the Secret itself."""
    access = md.spec.access
    if access is None:
        return None
    secret = access.token_secret
    volume = {
        "name": ACCESS_VOLUME,
        "secret": {
            "secretName": secret.name,
            "items": [{"key": secret.key, "path": "token"}],
            "defaultMode": 0o440,  # the pod's fsGroup reads it, nobody else
            "optional": True,
        },
    }
    return volume, {"name": ACCESS_VOLUME, "mountPath": ACCESS_DIR, "readOnly": True}


def serving_deployment(
    md: ModelDeployment, plan: VariantPlan, settings: OperatorSettings
) -> dict[str, Any]:
    """The Deployment serving one variant's model.

    Rolling updates are readiness-gated with ``maxUnavailable: 0``: a new pod must report
    ready (model loaded and verified) before an old one is stopped, so changing the model
    never drops capacity. A pod that cannot load its model never becomes ready and the old
    ones keep serving; its last log lines become its termination message, which the status
    reports.
    """
    labels = serving_labels(md, plan)
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": _tmp_size_limit(plan.model)}}
    ]
    if md.spec.storage is not None:
        mounts.append(
            {"name": MODELS_VOLUME, "mountPath": md.spec.storage.mount_path, "readOnly": True}
        )
        volumes.append(
            {
                "name": MODELS_VOLUME,
                "persistentVolumeClaim": {
                    "claimName": md.spec.storage.claim_name,
                    "readOnly": True,
                },
            }
        )
    for extra in (_model_claim(plan.model), access_volume(md)):
        if extra is not None:
            volumes.append(extra[0])
            mounts.append(extra[1])
    probe = 1 if md.spec.scales_to_zero() else 2
    container = {
        "name": "serving",
        "image": md.spec.images.serving or settings.serving_image,
        **_image_pull_policy(md, settings),
        "ports": [
            {"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": [*_env(serving_env(md, plan)), *s3_env(md)],
        "resources": _resources(md.spec.resources.requests, md.spec.resources.limits),
        # Loading (and downloading) a model can take a while; liveness waits for startup.
        # A pod started from zero has a request waiting for it: probe it every second.
        "startupProbe": _probe("/v2/health/live", period=probe, failures=300 // probe),
        "readinessProbe": _probe("/v2/health/ready", period=probe, failures=2),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(md, variant_name(md.name, plan.variant), labels),
        "spec": {
            # Under an autoscaler the field is its own: the operator never sets it.
            **({"replicas": plan.replicas} if plan.autoscale is None else {}),
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": serving_selector(md, plan.variant)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    **_service_account(md),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "terminationGracePeriodSeconds": 30,
                    "topologySpreadConstraints": spread(serving_selector(md, plan.variant)),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(
    md: ModelDeployment,
    name: str,
    labels: Mapping[str, str],
    selector: Mapping[str, str],
    grpc: bool = False,
) -> dict[str, Any]:
    """A ClusterIP Service, port 80 to the pods' named port http (8080); with GRPC also
    port 8081 to the model server's gRPC port (HTTP/2 without TLS, as appProtocol says)."""
    ports: list[dict[str, Any]] = [
        {"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
    ]
    if grpc:
        ports.append(
            {
                "name": GRPC_PORT_NAME,
                "port": GRPC_PORT,
                "targetPort": GRPC_PORT_NAME,
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(md, name, labels),
        "spec": {"type": "ClusterIP", "selector": dict(selector), "ports": ports},
    }


def autoscaler(md: ModelDeployment, plan: VariantPlan) -> dict[str, Any]:
    """The HorizontalPodAutoscaler of a variant's Deployment: its range, on CPU use."""
    assert plan.autoscale is not None and md.spec.autoscaling is not None
    name = variant_name(md.name, plan.variant)
    scaling = md.spec.autoscaling
    cpu = {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(md, name, serving_labels(md, plan)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": plan.autoscale.min_replicas,
            "maxReplicas": plan.autoscale.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": cpu}}],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds
                }
            },
        },
    }


def pod_disruption_budget(
    md: ModelDeployment, name: str, labels: Mapping[str, str], selector: Mapping[str, str]
) -> dict[str, Any]:
    """At most one pod of the group evicted at a time (node drains keep the model up)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(md, name, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }


# --- the router -----------------------------------------------------------------------------


#: Response header naming the variant that served; as a request header it selects it.
VARIANT_HEADER: Final = "x-modelship-variant"


def network_policies(md: ModelDeployment, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Serving pods admit only their router and the scrapers; the router admits clients
    (modelship_operator.netpol). None without the builtin router (clients then call the
    variants' Services) or when the installation turns them off."""
    if not settings.network_policies or md.spec.router.type != "builtin":
        return []
    serving_name = f"{md.name}-serving"
    serving_meta_labels = common_labels(md) | {LABEL_COMPONENT: "serving"}
    scrapers = netpol.scraper_peer(settings.scraper_namespace, settings.scraper_pod_labels)
    name = router_name(md.name)
    return [
        netpol.serving_policy(
            _meta(md, serving_name, serving_meta_labels),
            serving_pods_selector(md),
            router_selector(md),
            scrapers,
            http_port=PORT,
            grpc_port=GRPC_PORT,
        ),
        netpol.router_policy(_meta(md, name, router_labels(md)), router_selector(md), PORT),
    ]


def routing_config(md: ModelDeployment, state: DesiredState) -> RoutingConfig:
    """The router's configuration (schema owned by the router: modelship_router.config).

    Canary: weights. ABTest: weights plus the sticky key and match rules. Shadow: a mirror
    of the configured share of requests to the canary. Stable is always the fallback when
    the chosen variant has no ready pod.
    """
    variants = [
        RouterVariant(
            name=plan.variant,
            model_version=plan.model.version,
            service=variant_name(md.name, plan.variant),
            port=PORT_NAME,
            weight=float(
                state.traffic.stable if plan.variant == "stable" else state.traffic.canary
            ),
            # Stable may be scaled to zero: a request for it wakes it (modelship_router.activate).
            scale_target=(
                variant_name(md.name, plan.variant)
                if plan.variant == "stable" and md.spec.scales_to_zero()
                else None
            ),
        )
        for plan in state.variants()
    ]
    strategy = md.spec.strategy
    sticky: StickyKey | None = None
    match: tuple[RouterMatchRule, ...] = ()
    if strategy.type == "ABTest" and state.canary is not None:
        ab = strategy.ab_test_settings
        sticky = StickyKey(header=ab.sticky_key.header, cookie=ab.sticky_key.cookie)
        match = tuple(
            RouterMatchRule(header=r.header, cookie=r.cookie, value=r.value, variant=r.variant)
            for r in ab.match
        )
    elif strategy.sticky_key is not None and state.canary is not None:
        key = strategy.sticky_key
        sticky = StickyKey(header=key.header, cookie=key.cookie)
    # A client names the variant that served a prediction (the response's
    # x-modelship-variant) when it sends feedback for it, so ground truth reaches the
    # variant that made the prediction whatever the weights are by then. Privileged: the
    # router honours it only with spec.access's token (and never for a shadow).
    match += tuple(
        RouterMatchRule(header=VARIANT_HEADER, value=v.name, variant=v.name, privileged=True)
        for v in variants
    )
    mirror = (
        Mirror(variant="canary", percent=float(state.traffic.mirror))
        if state.canary is not None and state.traffic.mirror > 0
        else None
    )
    return RoutingConfig(
        deployment=md.name,
        generation=state.router_generation,
        variants=tuple(variants),
        fallback="stable",
        sticky=sticky,
        salt=sticky_salt(md, state) if sticky is not None else None,
        match=match,
        mirror=mirror,
        # Only with scale to zero: a router of an earlier version refuses the key.
        activation_seconds=(
            md.spec.autoscaling.activation_timeout_seconds
            if md.spec.autoscaling is not None and md.spec.scales_to_zero()
            else None
        ),
    )


def sticky_salt(md: ModelDeployment, state: DesiredState) -> str:
    """Salt of sticky assignment: one per rollout (deployment and candidate version).

    Fixed for the whole rollout, so raising the canary's weight only moves users from
    stable to canary; a new candidate gets a new salt, so experiments split independently.
    """
    if state.canary is None:
        return md.name
    model = state.canary.model
    return f"{md.name}/{model.version}/{model.sha256[:12]}"


def router_configmap(md: ModelDeployment, state: DesiredState) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(md, router_name(md.name), router_labels(md)),
        "data": {CONFIGMAP_KEY: routing_config(md, state).to_json()},
    }


def scale_targets(md: ModelDeployment) -> tuple[str, ...]:
    """The Deployments the router may scale from zero (stable's, with scale to zero)."""
    return (variant_name(md.name, "stable"),) if md.spec.scales_to_zero() else ()


def router_rbac(md: ModelDeployment) -> list[dict[str, Any]]:
    """ServiceAccount, Role (read its ConfigMap and EndpointSlices) and RoleBinding."""
    name = router_name(md.name)
    labels = router_labels(md)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(md, name, labels),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(md, name, labels),
            "rules": [rule.to_api() for rule in router_rules(name, scale_targets(md))],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(md, name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": md.namespace}],
        },
    ]


def router_deployment(md: ModelDeployment, settings: OperatorSettings) -> dict[str, Any]:
    """The router pods: they watch their ConfigMap and the variants' EndpointSlices."""
    name = router_name(md.name)
    labels = router_labels(md)
    router = md.spec.router
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}]
    token: list[dict[str, Any]] = []
    access = access_volume(md)
    if access is not None:
        volumes.append(access[0])
        mounts.append(access[1])
        token.append({"name": "MODELSHIP_ROUTER_TOKEN_FILE", "value": ACCESS_TOKEN_FILE})
    container = {
        "name": "router",
        "image": md.spec.images.router or settings.router_image,
        **_image_pull_policy(md, settings),
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": "MODELSHIP_ROUTER_DEPLOYMENT", "value": md.name},
            {
                "name": "MODELSHIP_ROUTER_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "MODELSHIP_ROUTER_CONFIGMAP", "value": name},
            {"name": "MODELSHIP_ROUTER_PORT", "value": str(PORT)},
            *token,
        ],
        "resources": _resources(router.resources.requests, router.resources.limits),
        "readinessProbe": _probe("/readyz", period=2, failures=2),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(md, name, labels),
        "spec": {
            "replicas": router.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": router_selector(md)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": name,
                    # The token is mounted here only: the router reads the API, serving pods
                    # do not.
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "terminationGracePeriodSeconds": 30,
                    "topologySpreadConstraints": spread(router_selector(md)),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


# --- everything -----------------------------------------------------------------------------


def render(
    md: ModelDeployment, settings: OperatorSettings, state: DesiredState | None = None
) -> list[dict[str, Any]]:
    """Every child object the ModelDeployment needs now, in apply order."""
    state = state or state_from_spec(md)
    objects: list[dict[str, Any]] = []
    builtin_router = md.spec.router.type == "builtin"
    if builtin_router:
        objects += router_rbac(md)
        objects.append(router_configmap(md, state))
    for plan in state.variants():
        name = variant_name(md.name, plan.variant)
        objects.append(
            service(
                md, name, serving_labels(md, plan), serving_selector(md, plan.variant), grpc=True
            )
        )
    if builtin_router:
        name = router_name(md.name)
        objects.append(service(md, name, router_labels(md), router_selector(md)))
    # Before any pod: a serving pod is never reachable from elsewhere, not even at first.
    objects += network_policies(md, settings)
    for plan in state.variants():
        objects.append(serving_deployment(md, plan, settings))
    if builtin_router:
        objects.append(router_deployment(md, settings))
    for plan in state.variants():
        if plan.autoscale is not None:
            objects.append(autoscaler(md, plan))
    for plan in state.variants():
        if plan.most_pods > 1:
            name = variant_name(md.name, plan.variant)
            objects.append(
                pod_disruption_budget(
                    md, name, serving_labels(md, plan), serving_selector(md, plan.variant)
                )
            )
    if builtin_router and md.spec.router.replicas > 1:
        name = router_name(md.name)
        objects.append(pod_disruption_budget(md, name, router_labels(md), router_selector(md)))
    return objects


#: Kinds whose objects make pods: everything rendered before them is in place first.
WORKLOAD_KINDS: Final = frozenset({"Deployment"})


def apply_waves(objects: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``objects`` (in :func:`render`'s apply order) cut into waves that may each be applied
    at once: a wave ends where the objects turn from ones that make no pod to workloads, or
    back, and before a RoleBinding (after the Role it binds). So the RBAC, configuration,
    Services and NetworkPolicies are all in place before any pod can exist, and a
    workload's autoscaler and disruption budget come after it."""
    waves: list[list[dict[str, Any]]] = []
    for obj in objects:
        workload = obj["kind"] in WORKLOAD_KINDS
        # A RoleBinding after its Role: the API server refuses to bind a Role it cannot see
        # (it checks the binder holds every permission of it).
        binding = obj["kind"] == "RoleBinding"
        if waves and not binding and (waves[-1][-1]["kind"] in WORKLOAD_KINDS) == workload:
            waves[-1].append(obj)
        else:
            waves.append([obj])
    return waves


def ref(obj: Mapping[str, Any]) -> ChildRef:
    """The address of an object (API dict or rendered)."""
    return ChildRef(obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


def _controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    return any(
        o.get("uid") == owner_uid and o.get("controller")
        for o in obj.get("metadata", {}).get("ownerReferences", [])
    )


def stale_children(
    desired: Sequence[Mapping[str, Any]],
    existing: Iterable[Mapping[str, Any]],
    owner_uid: str,
) -> list[ChildRef]:
    """Children that exist but are no longer desired, and are ours to delete.

    Only objects of the kinds the operator manages, labelled as managed by modelship and
    controlled by this very ModelDeployment (by uid) qualify: an object someone else made
    with a similar name, or one left by an earlier ModelDeployment of the same name, is
    never deleted.
    """
    wanted = {ref(obj) for obj in desired}
    kinds = {(k.api_version, k.kind) for k in CHILD_KINDS}
    stale = set()
    for obj in existing:
        key = ref(obj)
        labels = obj.get("metadata", {}).get("labels") or {}
        if (
            (key.api_version, key.kind) in kinds
            and key not in wanted
            and labels.get(LABEL_MANAGED_BY) == MANAGED_BY
            and _controlled_by(obj, owner_uid)
        ):
            stale.add(key)
    return sorted(stale)
