"""The test bed's resource metrics API: metrics-server (built from its Go module into the
test bed's ``metrics-server`` image) in ``kube-system``, serving ``metrics.k8s.io/v1beta1``
through the apiserver's aggregation layer, so HorizontalPodAutoscalers on CPU and
``kubectl top`` work on the real node.

Pure: :func:`manifests` renders the objects. Applying them is the node's job, in order:

1. the apiserver runs with the aggregation layer's flags (the front-proxy CA and client
   certificate of :func:`modelship_cluster.pki.create_front_proxy`, see
   :func:`modelship_cluster.controlplane.apiserver_args`);
2. :func:`manifests` (``kubectl apply --server-side -f -`` of :func:`manifests_yaml`);
3. ``kubectl wait`` with each of :data:`WAIT_FOR`: the Deployment available, then the
   APIService (the apiserver reaches the pod and finds ``/apis/metrics.k8s.io/v1beta1``).

Both hops are verified TLS:

* metrics-server -> kubelet: the kubelet's serving certificate is checked against the
  cluster CA (``--kubelet-certificate-authority``, from the ``kube-root-ca.crt`` ConfigMap
  the controller manager publishes in every namespace); the kubelet's certificate carries
  the node's InternalIP as an IP SAN, the address metrics-server dials. Never
  ``--kubelet-insecure-tls``.
* apiserver -> metrics-server: with a :class:`Serving` (a certificate for
  :data:`SERVING_DNS_NAMES` from the cluster CA), metrics-server serves it from a Secret
  and the APIService carries the CA as its ``caBundle``. Without one, metrics-server
  self-signs a certificate into ``/tmp`` at start, which nothing can know beforehand, so
  the APIService says ``insecureSkipTLSVerify: true`` for this hop only (as upstream's
  manifests do); the apiserver still authenticates itself to metrics-server with its
  front-proxy client certificate.

Least privilege: metrics-server reads pods and nodes and gets ``nodes/metrics`` (the
kubelet authorizes its scrapes by SubjectAccessReview); ``system:auth-delegator`` lets it
check the tokens and permissions of callers, and ``extension-apiserver-authentication-
reader`` lets it read the front-proxy CA the apiserver publishes in kube-system. It
writes nothing. ``system:aggregated-metrics-reader`` adds reading metrics.k8s.io to the
view, edit and admin roles (the HPA controller has its own bootstrap permission). The pod
runs non-root with no capability, a read-only root filesystem and the RuntimeDefault
seccomp profile: it passes the restricted Pod Security profile.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

import yaml

from modelship_cluster import binaries

NAMESPACE: Final = "kube-system"
NAME: Final = "metrics-server"
#: The Service's port (the APIService's), and the container's secure port behind it.
PORT: Final = 443
SECURE_PORT: Final = 10250
GROUP: Final = "metrics.k8s.io"
VERSION: Final = "v1beta1"
APISERVICE: Final = f"{VERSION}.{GROUP}"
IMAGE: Final = f"localhost/modelship-testbed/metrics-server:v{binaries.METRICS_SERVER_VERSION}"
METRIC_RESOLUTION: Final = "15s"

#: The ConfigMap (and key) holding the cluster CA that every namespace gets.
ROOT_CA_CONFIGMAP: Final = "kube-root-ca.crt"
KUBELET_CA_DIR: Final = "/etc/kubelet-ca"
KUBELET_CA: Final = f"{KUBELET_CA_DIR}/ca.crt"
#: Where the serving certificate's Secret is mounted, when there is one.
TLS_SECRET: Final = "metrics-server-tls"
TLS_DIR: Final = "/etc/metrics-server/tls"
#: The names a serving certificate needs: the apiserver dials ``<service>.<namespace>.svc``.
SERVING_DNS_NAMES: Final = (
    NAME,
    f"{NAME}.{NAMESPACE}",
    f"{NAME}.{NAMESPACE}.svc",
    f"{NAME}.{NAMESPACE}.svc.cluster.local",
)

READER_ROLE: Final = "system:aggregated-metrics-reader"
ROLE: Final = "system:metrics-server"
AUTH_DELEGATOR_BINDING: Final = f"{NAME}:system:auth-delegator"
AUTH_READER_BINDING: Final = f"{NAME}-auth-reader"

#: `kubectl wait` arguments, in order, once the objects are applied.
WAIT_FOR: Final = (
    ("-n", NAMESPACE, "deployment/" + NAME, "--for=condition=Available"),
    ("apiservice/" + APISERVICE, "--for=condition=Available"),
)

LABELS: Final = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/component": "resource-metrics",
    "app.kubernetes.io/part-of": "modelship-testbed",
}
SELECTOR: Final = {"app.kubernetes.io/name": NAME}

_RBAC = "rbac.authorization.k8s.io"
_READ = ["get", "list", "watch"]
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


@dataclass(frozen=True)
class Serving:
    """metrics-server's serving certificate (PEM) and the CA that signed it, which the
    APIService hands the apiserver as its caBundle."""

    ca: bytes
    cert: bytes
    key: bytes


def _meta(name: str, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return meta


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _binding(kind: str, name: str, role_kind: str, role: str) -> dict[str, Any]:
    """A KIND (RoleBinding or ClusterRoleBinding) NAME of ROLE to metrics-server's account."""
    return {
        "apiVersion": f"{_RBAC}/v1",
        "kind": kind,
        "metadata": _meta(name, namespaced=kind == "RoleBinding"),
        "roleRef": {"apiGroup": _RBAC, "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    }


def rules() -> list[dict[str, Any]]:
    """What metrics-server itself needs: scrape each kubelet, know the pods and nodes."""
    return [
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": _READ},
    ]


def reader_rules() -> list[dict[str, Any]]:
    """Reading the resource metrics API (aggregated into view, edit and admin)."""
    return [{"apiGroups": [GROUP], "resources": ["pods", "nodes"], "verbs": _READ}]


def args(metric_resolution: str = METRIC_RESOLUTION, serving: bool = False) -> list[str]:
    """metrics-server's arguments: kubelets by InternalIP at the port their node status
    names, verified with the cluster CA; with SERVING, the mounted serving certificate."""
    flags = [
        "--cert-dir=/tmp",
        f"--secure-port={SECURE_PORT}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--metric-resolution={metric_resolution}",
        f"--kubelet-certificate-authority={KUBELET_CA}",
    ]
    if serving:
        flags += [f"--tls-cert-file={TLS_DIR}/tls.crt", f"--tls-private-key-file={TLS_DIR}/tls.key"]
    return flags


def deployment(
    image: str = IMAGE, metric_resolution: str = METRIC_RESOLUTION, serving: bool = False
) -> dict[str, Any]:
    """One metrics-server pod (its serving certificate from the Secret if SERVING)."""
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {
            "name": "kubelet-ca",
            "configMap": {
                "name": ROOT_CA_CONFIGMAP,
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            },
        },
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "kubelet-ca", "mountPath": KUBELET_CA_DIR, "readOnly": True},
    ]
    if serving:
        volumes.append({"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": 0o440}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})

    def probe(path: str, period: int, delay: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "https", "scheme": "HTTPS"},
            "initialDelaySeconds": delay,
            "periodSeconds": period,
            "failureThreshold": 3,
        }

    container = {
        "name": NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args(metric_resolution, serving),
        "env": [{"name": "GOGC", "value": "30"}],
        "ports": [{"name": "https", "containerPort": SECURE_PORT, "protocol": "TCP"}],
        # /readyz turns ready once the first scrape of the kubelets is stored.
        "readinessProbe": probe("/readyz", 5, 5),
        "livenessProbe": probe("/livez", 10, 10),
        "resources": {
            "requests": {"cpu": "20m", "memory": "48Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": SELECTOR},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "automountServiceAccountToken": True,
                    "priorityClassName": "system-cluster-critical",
                    # The group (65534) may read the Secret's files (mode 0440).
                    "securityContext": {**_NON_ROOT, "fsGroup": 65534},
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def apiservice(ca_bundle: bytes | None = None) -> dict[str, Any]:
    """The APIService of metrics.k8s.io/v1beta1, served by the metrics-server Service:
    verified with CA_BUNDLE (PEM) when given, else insecureSkipTLSVerify (the self-signed
    certificate metrics-server makes at start cannot be known beforehand)."""
    spec: dict[str, Any] = {
        "group": GROUP,
        "version": VERSION,
        "service": {"name": NAME, "namespace": NAMESPACE, "port": PORT},
        "groupPriorityMinimum": 100,
        "versionPriority": 100,
    }
    if ca_bundle is not None:
        spec["caBundle"] = _b64(ca_bundle)
    else:
        spec["insecureSkipTLSVerify"] = True
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": _meta(APISERVICE, namespaced=False),
        "spec": spec,
    }


def manifests(
    image: str = IMAGE,
    metric_resolution: str = METRIC_RESOLUTION,
    serving: Serving | None = None,
) -> list[dict[str, Any]]:
    """ServiceAccount, RBAC, (the serving certificate's Secret,) Service, Deployment and
    APIService, in apply order. SERVING: see the module's docstring."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {
            "apiVersion": f"{_RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": _meta(ROLE, namespaced=False),
            "rules": rules(),
        },
        {
            "apiVersion": f"{_RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": READER_ROLE,
                "labels": {
                    **LABELS,
                    f"{_RBAC}/aggregate-to-view": "true",
                    f"{_RBAC}/aggregate-to-edit": "true",
                    f"{_RBAC}/aggregate-to-admin": "true",
                },
            },
            "rules": reader_rules(),
        },
        _binding("ClusterRoleBinding", ROLE, "ClusterRole", ROLE),
        _binding(
            "ClusterRoleBinding", AUTH_DELEGATOR_BINDING, "ClusterRole", "system:auth-delegator"
        ),
        _binding(
            "RoleBinding", AUTH_READER_BINDING, "Role", "extension-apiserver-authentication-reader"
        ),
    ]
    if serving is not None:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(TLS_SECRET),
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": _b64(serving.cert), "tls.key": _b64(serving.key)},
            }
        )
    objects += [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(NAME),
            "spec": {
                "selector": SELECTOR,
                "ports": [
                    {
                        "name": "https",
                        "port": PORT,
                        "protocol": "TCP",
                        "targetPort": "https",
                        "appProtocol": "https",
                    }
                ],
            },
        },
        deployment(image, metric_resolution, serving is not None),
        apiservice(serving.ca if serving is not None else None),
    ]
    return objects


def manifests_yaml(
    image: str = IMAGE,
    metric_resolution: str = METRIC_RESOLUTION,
    serving: Serving | None = None,
) -> str:
    """:func:`manifests` as one multi-document YAML stream (for ``kubectl apply -f -``)."""
    return yaml.safe_dump_all(manifests(image, metric_resolution, serving), sort_keys=False)


def image_refs() -> tuple[str]:
    """The image the node must import for this."""
    return (IMAGE,)
