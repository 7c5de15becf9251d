"""The router's Kubernetes mode over real HTTP, against the API stand-in (kube_standin).

The ConfigMap source applies every new version of ``routing.json`` once, rejects a broken
one and survives a 410 (listed again, nothing re-applied); the EndpointSlice source
follows its Services' slices. The local-cluster version of this (real apiserver, real
EndpointSlice controller) is test_discovery_cluster.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kube_standin import ApiStandIn, Reply, Stream, expired
from modelship_kube.credentials import Credentials
from modelship_kube.request import Client
from modelship_router.config import RoutingConfig
from modelship_router.kube_sources import ConfigMapSource, KubernetesEndpointSource

CMS = "/api/v1/namespaces/ml/configmaps"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/ml/endpointslices"


def routing(generation: int) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "deployment": "churn",
            "generation": generation,
            "variants": [{"name": "stable", "modelVersion": "1", "service": "churn-stable"}],
        }
    )


def configmap(version: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "churn-router", "namespace": "ml", "resourceVersion": version},
        "data": {"routing.json": text},
    }


def cm_list(version: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ConfigMapList", "apiVersion": "v1",
            "metadata": {"resourceVersion": version}, "items": list(items)}  # fmt: skip


def endpoint_slice(version: str, *ips: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "churn-stable-x1",
            "namespace": "ml",
            "resourceVersion": version,
            "labels": {"kubernetes.io/service-name": "churn-stable"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    }


def test_the_configmap_source_applies_each_version_once_across_a_relist() -> None:
    hold = threading.Event()
    first, second = configmap("5", routing(1).to_json()), configmap("6", routing(2).to_json())
    with ApiStandIn() as server:
        server.scripted.on(CMS, Reply(200, cm_list("5", first)), Reply(200, cm_list("6", second)))
        server.scripted.on(
            CMS,
            Stream([{"type": "MODIFIED", "object": second}, expired()]),
            Stream([{"type": "MODIFIED", "object": configmap("7", "{broken")}], hold=hold),
            watch=True,
        )
        applied: list[int] = []
        rejected: list[str] = []

        async def main() -> None:
            client = Client(Credentials(server.url))
            source = ConfigMapSource(client, "ml", "churn-router")
            done = asyncio.Event()

            def reject(message: str) -> None:
                rejected.append(message)
                done.set()

            task = asyncio.create_task(source.run(lambda c: applied.append(c.generation), reject))
            await asyncio.wait_for(done.wait(), 10)
            task.cancel()
            await client.close()

        try:
            asyncio.run(main())
        finally:
            hold.set()
    assert applied == [1, 2]  # the re-list found version 6 again: not applied twice
    assert len(rejected) == 1 and "ConfigMap ml/churn-router key routing.json" in rejected[0]
    assert {r.query["fieldSelector"] for r in server.requests} == {"metadata.name=churn-router"}
    assert len(server.matching(CMS, watch=False)) == 2


def test_the_endpoint_source_follows_the_services_slices() -> None:
    hold = threading.Event()
    with ApiStandIn() as server:
        listed = {"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                  "metadata": {"resourceVersion": "3"},
                  "items": [endpoint_slice("3", "10.0.0.1")]}  # fmt: skip
        server.scripted.on(SLICES, Reply(200, listed))
        changed = {"type": "MODIFIED", "object": endpoint_slice("4", "10.0.0.1", "10.0.0.2")}
        server.scripted.on(SLICES, Stream([0.2, changed], hold=hold), watch=True)
        seen: list[list[tuple[str, int]]] = []

        async def main() -> None:
            source = KubernetesEndpointSource(Client(Credentials(server.url)), "ml")
            config = routing(1)
            updated = asyncio.Event()

            def notified() -> None:
                seen.append(list(source.addresses(config.variants[0])))
                if len(seen) == 2:
                    updated.set()

            source.subscribe(notified)
            source.watch(config)
            await asyncio.wait_for(updated.wait(), 10)
            await source.close()

        try:
            asyncio.run(main())
        finally:
            hold.set()
    assert seen == [[("10.0.0.1", 8080)], [("10.0.0.1", 8080), ("10.0.0.2", 8080)]]
    selectors = {r.query["labelSelector"] for r in server.requests}
    assert selectors == {"kubernetes.io/service-name in (churn-stable)"}
