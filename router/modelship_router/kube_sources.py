"""Kubernetes mode: configuration from a ConfigMap, upstreams from EndpointSlices.

The operator writes the routing document (JSON) under key ``routing.json`` of the
ConfigMap ``<deployment>-router``; the router watches that one object. Each variant's
``service`` is resolved by watching the EndpointSlices labelled
``kubernetes.io/service-name=<service>`` in the same namespace, so the router balances
over ready pod IPs directly (no kube-proxy, no cluster DNS). RBAC needed: get/list/watch
on configmaps and on discovery.k8s.io endpointslices, in the namespace (and, for variants
that may be scaled to zero, get/patch on their Deployments' ``scale``:
:mod:`modelship_router.activate`).

Both are :class:`modelship_kube.informer.ListWatch` loops over one
:class:`modelship_kube.request.Client`: list, watch from the list's version, list again
on 410, back off (jittered, 0.2 s doubling to 5 s) on any other failure. The client
re-reads the ServiceAccount token as it rotates. This is off the hot path: the proxy
never touches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from modelship_kube.credentials import from_kubeconfig, in_cluster
from modelship_kube.informer import ListWatch
from modelship_kube.paths import collection_path
from modelship_kube.request import Client
from pydantic import ValidationError

from modelship_router.activate import KubernetesWaker
from modelship_router.config import (
    CONFIGMAP_KEY,
    RoutingConfig,
    Variant,
    configmap_name,
    parse_address,
)
from modelship_router.endpoints import Address, EndpointSource
from modelship_router.settings import RouterSettings
from modelship_router.slices import SERVICE_NAME_LABEL, service_addresses, service_of
from modelship_router.sources import Apply, ConfigError, ConfigSource, Reject
from modelship_router.sources import describe_validation_error as describe

log = logging.getLogger(__name__)


def config_from_configmap(obj: dict[str, Any]) -> RoutingConfig:
    """The routing configuration stored in a ConfigMap object (raises ConfigError)."""
    meta = obj.get("metadata", {})
    where = f"ConfigMap {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    text = (obj.get("data") or {}).get(CONFIGMAP_KEY)
    if text is None:
        raise ConfigError(f"{where} has no key {CONFIGMAP_KEY!r}")
    try:
        return RoutingConfig.from_json(text)
    except ValidationError as exc:
        raise ConfigError(f"{where} key {CONFIGMAP_KEY}: {describe(exc)}") from exc


class ConfigMapSource(ConfigSource):
    """Watches one ConfigMap and applies its ``routing.json`` on every change."""

    def __init__(self, api: Client, namespace: str, name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self._version: str | None = None

    async def run(self, apply: Apply, reject: Reject) -> None:
        def handle(obj: dict[str, Any]) -> None:
            version = obj.get("metadata", {}).get("resourceVersion")
            if version is not None and version == self._version:
                return
            self._version = version
            try:
                config = config_from_configmap(obj)
            except ConfigError as exc:
                reject(str(exc))
                return
            apply(config)

        def on_list(items: list[dict[str, Any]]) -> None:
            if items:
                handle(items[0])
            elif self._version is None:
                log.warning(
                    "ConfigMap %s/%s does not exist yet: not ready until it does",
                    self.namespace,
                    self.name,
                )

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            if kind == "DELETED":
                log.warning(
                    "ConfigMap %s/%s was deleted: keeping the last configuration",
                    self.namespace,
                    self.name,
                )
                self._version = None
            else:
                handle(obj)

        await ListWatch(
            self.api,
            collection_path("v1", "configmaps", self.namespace),
            {"fieldSelector": f"metadata.name={self.name}"},
            what=f"ConfigMap {self.namespace}/{self.name}",
        ).run(on_list, on_event)


class KubernetesEndpointSource(EndpointSource):
    """Ready addresses of each variant's Service, from a watch of its EndpointSlices.

    Variants with static ``upstreams`` use those addresses as they are.
    """

    def __init__(self, api: Client, namespace: str) -> None:
        super().__init__()
        self.api = api
        self.namespace = namespace
        self._services: frozenset[str] = frozenset()
        self._slices: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, config: RoutingConfig) -> None:
        services = frozenset(v.service for v in config.variants if v.service is not None)
        if services == self._services:
            return
        self._services = services
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._slices = {k: v for k, v in self._slices.items() if service_of(v) in services}
        if services:
            self._task = asyncio.get_running_loop().create_task(self._watch(services))

    async def _watch(self, services: frozenset[str]) -> None:
        selector = f"{SERVICE_NAME_LABEL} in ({','.join(sorted(services))})"

        def on_list(items: list[dict[str, Any]]) -> None:
            self._slices = {item["metadata"]["name"]: item for item in items}
            self._notify()

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            name = obj["metadata"]["name"]
            if kind == "DELETED":
                self._slices.pop(name, None)
            else:
                self._slices[name] = obj
            self._notify()

        await ListWatch(
            self.api,
            collection_path("discovery.k8s.io/v1", "endpointslices", self.namespace),
            {"labelSelector": selector},
            what=f"EndpointSlices of {', '.join(sorted(services))} in {self.namespace}",
        ).run(on_list, on_event)

    def addresses(self, variant: Variant) -> list[Address]:
        if variant.service is None:
            return [parse_address(a) for a in variant.upstreams]
        return service_addresses(self._slices.values(), variant.service, variant.port)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.api.close()


def kubernetes_sources(
    settings: RouterSettings,
) -> tuple[ConfigMapSource, KubernetesEndpointSource, KubernetesWaker]:
    """The config and endpoint sources for Kubernetes mode (in-cluster or kubeconfig), and
    the waker of variants scaled to zero, over one client."""
    assert settings.deployment is not None
    namespace = settings.resolved_namespace()
    # A kubeconfig only when one is given: in a pod, the ServiceAccount, never a fallback.
    credentials = from_kubeconfig(settings.kubeconfig) if settings.kubeconfig else in_cluster()
    api = Client(credentials)
    name = settings.configmap or configmap_name(settings.deployment)
    log.info("Kubernetes mode: watching ConfigMap %s/%s and EndpointSlices", namespace, name)
    return (
        ConfigMapSource(api, namespace, name),
        KubernetesEndpointSource(api, namespace),
        KubernetesWaker(api, namespace),
    )
