"""The test bed's monitoring as users run it: the Prometheus Operator (built from its Go
module into the test bed's images) in namespace ``monitoring``, managing one Prometheus
that every PodMonitor, ServiceMonitor and PrometheusRule of every namespace configures,
as kube-prometheus-stack does; reachable as ``prometheus.monitoring.svc:9090``, the
modelship operator's default Prometheus URL.

Pure: :func:`manifests` renders the objects. Applying them is the node's job, in order:

1. the CRDs of :func:`modelship_cluster.binaries.prometheus_operator_crds` with
   ``kubectl apply --server-side`` (the Prometheus CRD is too big for client-side apply's
   annotation) and ``kubectl wait --for=condition=Established crd --all``;
2. :func:`manifests` (``kubectl apply --server-side -f -`` of the YAML of
   :func:`manifests_yaml`);
3. wait for ``deployment/prometheus-operator`` to be available, then for the Prometheus
   (:data:`WAIT_FOR`): the operator creates the StatefulSet ``prometheus-modelship`` and
   its pod ``prometheus-modelship-0``.

Least privilege: the Prometheus Operator manages Prometheus servers in ``monitoring``
only (``--prometheus-instance-namespaces``), so its write access to StatefulSets,
Secrets, ConfigMaps and Services is a Role there; cluster-wide it only reads the monitor
objects and namespaces (and may record Events). Prometheus reads pods, services and
endpoint slices to discover targets. Everything runs non-root with no capability and a
read-only root filesystem, and the namespace enforces the restricted Pod Security
profile.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from modelship_cluster import binaries

NAMESPACE: Final = "monitoring"
#: The Prometheus custom resource's name (its pods are prometheus-<name>-<n>).
PROMETHEUS: Final = "modelship"
SERVICE: Final = "prometheus"
PORT: Final = 9090
OPERATOR: Final = "prometheus-operator"
PROMETHEUS_SA: Final = "prometheus"
SCRAPE_INTERVAL: Final = "2s"

_TESTBED = "localhost/modelship-testbed"
PROMETHEUS_IMAGE: Final = f"{_TESTBED}/prometheus:{binaries.PROMETHEUS_VERSION}"
OPERATOR_IMAGE: Final = f"{_TESTBED}/prometheus-operator:{binaries.PROMETHEUS_OPERATOR_VERSION}"
RELOADER_IMAGE: Final = (
    f"{_TESTBED}/prometheus-config-reloader:{binaries.PROMETHEUS_OPERATOR_VERSION}"
)

#: `kubectl wait` arguments, in order, once the objects are applied.
WAIT_FOR: Final = (
    ("-n", NAMESPACE, "deployment/" + OPERATOR, "--for=condition=Available"),
    ("-n", NAMESPACE, "prometheus/" + PROMETHEUS, "--for=condition=Available"),
)

URL: Final = f"http://{SERVICE}.{NAMESPACE}.svc:{PORT}"

OPERATOR_LABELS: Final = {
    "app.kubernetes.io/name": OPERATOR,
    "app.kubernetes.io/component": "controller",
    "app.kubernetes.io/part-of": "modelship-testbed",
}
#: Labels the Prometheus Operator puts on the pods of Prometheus PROMETHEUS.
PROMETHEUS_POD_LABELS: Final = {
    "app.kubernetes.io/name": "prometheus",
    "operator.prometheus.io/name": PROMETHEUS,
}

_NON_ROOT: Final = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_CONTAINER_SECURITY: Final = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
_MONITORING = "monitoring.coreos.com"
_READ = ["get", "list", "watch"]
_MONITORS = ["servicemonitors", "podmonitors", "probes", "prometheusrules", "scrapeconfigs"]


def _meta(name: str, labels: dict[str, str], namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return meta


def _binding(kind: str, name: str, account: str, labels: dict[str, str]) -> dict[str, Any]:
    """A (Cluster)RoleBinding of the (Cluster)Role NAME to service account ACCOUNT."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": f"{kind}Binding",
        "metadata": _meta(name, labels, namespaced=kind == "Role"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
    }


def operator_rules() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(cluster-wide rules, rules in ``monitoring``) of the Prometheus Operator."""
    cluster = [
        {
            "apiGroups": [_MONITORING],
            "resources": _MONITORS,
            "verbs": _READ,
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
        # Events on rejected monitors, in their own namespaces.
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    local = [
        {
            "apiGroups": [_MONITORING],
            "resources": ["prometheuses"],
            "verbs": _READ,
        },
        {
            "apiGroups": [_MONITORING],
            "resources": ["prometheuses/status", "prometheuses/finalizers"],
            "verbs": ["get", "update", "patch"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["statefulsets"],
            "verbs": [*_READ, "create", "update", "patch", "delete"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps", "secrets"],
            "verbs": [*_READ, "create", "update", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "delete"]},
        {
            "apiGroups": [""],
            "resources": ["services", "services/finalizers"],
            "verbs": ["get", "create", "update", "delete"],
        },
    ]
    return cluster, local


def prometheus_rules() -> list[dict[str, Any]]:
    """What the Prometheus server needs: discover and scrape pods and services anywhere."""
    return [
        {"apiGroups": [""], "resources": ["pods", "services", "endpoints"], "verbs": _READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
    ]


def prometheus_resource(
    image: str = PROMETHEUS_IMAGE, interval: str = SCRAPE_INTERVAL
) -> dict[str, Any]:
    """The Prometheus custom resource: selects every PodMonitor, ServiceMonitor and
    PrometheusRule in every namespace (empty selectors match all), scrapes every INTERVAL."""
    everything: dict[str, Any] = {}
    return {
        "apiVersion": f"{_MONITORING}/v1",
        "kind": "Prometheus",
        "metadata": _meta(PROMETHEUS, {"app.kubernetes.io/part-of": "modelship-testbed"}),
        "spec": {
            "version": f"v{binaries.PROMETHEUS_VERSION}",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "replicas": 1,
            "serviceAccountName": PROMETHEUS_SA,
            "scrapeInterval": interval,
            "scrapeTimeout": interval,
            "evaluationInterval": interval,
            "podMonitorSelector": everything,
            "podMonitorNamespaceSelector": everything,
            "serviceMonitorSelector": everything,
            "serviceMonitorNamespaceSelector": everything,
            "ruleSelector": everything,
            "ruleNamespaceSelector": everything,
            # EndpointSlices, not the deprecated Endpoints API, for ServiceMonitors.
            "serviceDiscoveryRole": "EndpointSlice",
            "retention": "1d",
            "securityContext": {**_NON_ROOT, "fsGroup": 65534},
            "resources": {
                "requests": {"cpu": "50m", "memory": "128Mi"},
                "limits": {"memory": "1Gi"},
            },
        },
    }


def manifests(
    prometheus_image: str = PROMETHEUS_IMAGE,
    operator_image: str = OPERATOR_IMAGE,
    reloader_image: str = RELOADER_IMAGE,
    interval: str = SCRAPE_INTERVAL,
    cluster_ip: str | None = None,
) -> list[dict[str, Any]]:
    """Namespace, RBAC, the Prometheus Operator's Deployment, the Prometheus resource and
    the ``prometheus`` Service (at CLUSTER_IP if given), in apply order (the CRDs come
    first, separately)."""
    service_spec: dict[str, Any] = {
        "selector": PROMETHEUS_POD_LABELS,
        "ports": [{"name": "web", "port": PORT, "targetPort": "web"}],
    }
    if cluster_ip:
        service_spec["clusterIP"] = cluster_ip
    labels = OPERATOR_LABELS
    prometheus_labels = {"app.kubernetes.io/name": "prometheus"}
    cluster_rules, local_rules = operator_rules()
    container = {
        "name": OPERATOR,
        "image": operator_image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            f"--prometheus-config-reloader={reloader_image}",
            f"--prometheus-instance-namespaces={NAMESPACE}",
            "--log-level=info",
        ],
        "env": [{"name": "GOGC", "value": "30"}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _CONTAINER_SECURITY,
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(OPERATOR, labels)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(OPERATOR, labels, namespaced=False),
            "rules": cluster_rules,
        },
        _binding("ClusterRole", OPERATOR, OPERATOR, labels),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(OPERATOR, labels),
            "rules": local_rules,
        },
        _binding("Role", OPERATOR, OPERATOR, labels),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(PROMETHEUS_SA, prometheus_labels),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta("modelship-testbed-prometheus", prometheus_labels, namespaced=False),
            "rules": prometheus_rules(),
        },
        _binding("ClusterRole", "modelship-testbed-prometheus", PROMETHEUS_SA, prometheus_labels),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(OPERATOR, labels),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": OPERATOR,
                        "automountServiceAccountToken": True,
                        "securityContext": _NON_ROOT,
                        "containers": [container],
                    },
                },
            },
        },
        prometheus_resource(prometheus_image, interval),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(SERVICE, prometheus_labels),
            "spec": service_spec,
        },
    ]


def manifests_yaml(**kwargs: str) -> str:
    """:func:`manifests` as one multi-document YAML stream (for ``kubectl apply -f -``)."""
    return yaml.safe_dump_all(manifests(**kwargs), sort_keys=False)


def image_refs() -> tuple[str, str, str]:
    """The images the node must import for this: Prometheus, the operator, the reloader."""
    return PROMETHEUS_IMAGE, OPERATOR_IMAGE, RELOADER_IMAGE
