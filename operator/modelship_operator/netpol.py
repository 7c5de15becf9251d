"""The NetworkPolicies of a ModelDeployment (pure): who may open connections to its pods.

Serving pods admit their own router's pods on the model server's HTTP and gRPC ports, and
the scrapers (Prometheus) on the HTTP port, where /metrics is served; nothing else in the
cluster reaches them, so a pod elsewhere cannot bypass the router's weights, its access
token or its shadow rules. Router pods admit any client on their port: in a namespace whose
default policy denies ingress the model stays reachable, and every other port is closed.

Only ingress is restricted: serving pods download models from wherever spec.model names
(S3, MLflow, http), and the router reads the Kubernetes API. Connections from the node
itself (kubelet probes, `kubectl port-forward`) are not subject to NetworkPolicy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def scraper_peer(namespace: str | None, pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """The NetworkPolicy peer of the scrapers: PODS_LABELS in NAMESPACE (any namespace
    when None; every pod of NAMESPACE when POD_LABELS is empty)."""
    namespaces: dict[str, Any] = (
        {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}} if namespace is not None else {}
    )
    return {"namespaceSelector": namespaces, "podSelector": {"matchLabels": dict(pod_labels)}}


def _ports(*numbers: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": n} for n in numbers]


def _policy(
    metadata: Mapping[str, Any], pods: Mapping[str, str], ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    """An ingress-only NetworkPolicy selecting PODS (labels) with INGRESS rules."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": dict(metadata),
        "spec": {
            "podSelector": {"matchLabels": dict(pods)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def serving_policy(
    metadata: Mapping[str, Any],
    serving_pods: Mapping[str, str],
    router_pods: Mapping[str, str],
    scrapers: Mapping[str, Any],
    http_port: int,
    grpc_port: int,
) -> dict[str, Any]:
    """Serving pods (SERVING_PODS labels) admit the router pods on both ports and the
    scrapers on HTTP_PORT; everything else is refused."""
    router = {"podSelector": {"matchLabels": dict(router_pods)}}
    return _policy(
        metadata,
        serving_pods,
        [
            {"from": [router], "ports": _ports(http_port, grpc_port)},
            {"from": [dict(scrapers)], "ports": _ports(http_port)},
        ],
    )


def router_policy(
    metadata: Mapping[str, Any], router_pods: Mapping[str, str], port: int
) -> dict[str, Any]:
    """Router pods admit any client on PORT (and nothing on any other port)."""
    return _policy(metadata, router_pods, [{"ports": _ports(port)}])
