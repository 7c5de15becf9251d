"""Write only what differs, against a real kube-apiserver: the reconciler with its watch cache.

A second reconcile of an unchanged ModelDeployment makes no write at all (no apply, no
status patch, no Event; the resource's resourceVersion does not move), a hand edit of a
child reaches the owner through the watch and is put right, a deleted child is recreated,
and the status says observedGeneration only with the children in place.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from apiserver import ApiServer, install_crd, start_apiserver
from modelship_operator.cache import ChildCache
from modelship_operator.kube import Kube
from modelship_operator.metrics import OperatorMetrics
from modelship_operator.reconciler import Reconciler
from modelship_operator.settings import OperatorSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    for server in start_apiserver(tmp_path_factory.mktemp("apiserver")):
        install_crd(server, "ml")
        yield server


class CountingKube(Kube):
    """The real client, counting the writes a reconcile makes."""

    writes: list[str]

    async def apply(
        self, obj: Mapping[str, Any], field_manager: str, force: bool = True
    ) -> dict[str, Any]:
        self.writes.append(f"apply {obj['kind']}/{obj['metadata']['name']}")
        return await super().apply(obj, field_manager, force)

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        self.writes.append("status")
        return await super().patch_status(namespace, name, patch, resource_version)

    async def post_event(self, *args: Any, **kwargs: Any) -> None:
        self.writes.append("event")
        await super().post_event(*args, **kwargs)


def applies(writes: list[str]) -> list[str]:
    return [w for w in writes if w.startswith("apply")]


def stored(api: ApiServer, *args: str) -> dict[str, Any]:
    """An object as the API server holds it (``kubectl -n ml get ARGS -o json``)."""
    return dict(json.loads(api.kubectl("-n", "ml", "get", *args, "-o", "json").stdout))


@dataclass
class Wired:
    """The reconciler with its watch cache, as the operator runs them."""

    kube: CountingKube
    reconciler: Reconciler
    cache: ChildCache
    pokes: list[tuple[str, str]] = field(default_factory=list)


@asynccontextmanager
async def wired(api: ApiServer) -> AsyncIterator[Wired]:
    """A reconciler and a synced child cache against ``api``, closed at the end."""
    base = Kube.connect(api.kubeconfig)
    kube = CountingKube(base.client)
    kube.writes = []
    reconciler = Reconciler(kube, OperatorSettings(), OperatorMetrics(), "test")
    pokes: list[tuple[str, str]] = []
    cache = ChildCache(kube.client, ["ml"], lambda ns, n: pokes.append((ns, n)), reconciler.is_own)
    reconciler.cache = cache
    cache.start()
    try:
        await asyncio.wait_for(cache.wait_synced(), 30)
        yield Wired(kube, reconciler, cache, pokes)
    finally:
        await cache.close()
        await reconciler.close()
        await kube.close()


async def until(what: str, check: Callable[[], bool], limit: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, f"{what}: not within {limit:.0f}s"
        await asyncio.sleep(0.1)


def test_a_reconcile_with_nothing_to_change_writes_nothing(api: ApiServer) -> None:
    body = {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": "quiet", "namespace": "ml"},
        "spec": {
            "model": {"version": "1.0.0", "uri": "file:///models/m.skops", "sha256": "a" * 64}
        },
    }
    api.kubectl("create", "-f", "-", input=json.dumps(body))

    async def scenario() -> None:
        async with wired(api) as w:
            kube, reconciler, cache, pokes = w.kube, w.reconciler, w.cache, w.pokes
            first = await reconciler.reconcile("ml", "quiet")
            assert first.result == "success"
            applied = applies(kube.writes)
            assert applied and "status" in kube.writes
            md = await asyncio.to_thread(stored, api, "mdep", "quiet")
            assert md["status"]["observedGeneration"] == 1
            names = {write.split("/", 1)[1] for write in applied}
            await until(
                "the cache sees every child",
                lambda: {c["metadata"]["name"] for c in cache.children("ml", "quiet")} >= names,
            )

            # Now the children are observed, status may say so once (Ready's reason); no
            # child is applied again.
            kube.writes.clear()
            second = await reconciler.reconcile("ml", "quiet")
            assert second.result == "success"
            assert applies(kube.writes) == [], kube.writes
            md = await asyncio.to_thread(stored, api, "mdep", "quiet")
            kube.writes.clear()
            await reconciler.reconcile("ml", "quiet")
            assert kube.writes == []
            again = await asyncio.to_thread(stored, api, "mdep", "quiet")
            assert again["metadata"]["resourceVersion"] == md["metadata"]["resourceVersion"]

            # A hand edit of a child: the watch tells the owner, the reconcile puts it right
            # (and only it).
            pokes.clear()
            await asyncio.to_thread(
                api.kubectl, "-n", "ml", "scale", "deployment", "quiet-stable", "--replicas=3"
            )
            await until("the edit pokes the owner", lambda: ("ml", "quiet") in pokes)
            await reconciler.reconcile("ml", "quiet")
            assert applies(kube.writes) == ["apply Deployment/quiet-stable"]
            deployment = await asyncio.to_thread(stored, api, "deployment", "quiet-stable")
            assert deployment["spec"]["replicas"] == 1

            # A deleted child is recreated.
            kube.writes.clear()
            pokes.clear()
            await asyncio.to_thread(api.kubectl, "-n", "ml", "delete", "service", "quiet-stable")
            await until("the deletion pokes the owner", lambda: ("ml", "quiet") in pokes)
            await reconciler.reconcile("ml", "quiet")
            assert applies(kube.writes) == ["apply Service/quiet-stable"]
            await asyncio.to_thread(stored, api, "service", "quiet-stable")

    asyncio.run(scenario())


def test_turning_autoscaling_on_hands_replicas_over_without_a_reset(api: ApiServer) -> None:
    # No controller-manager here: `kubectl scale` writes the scale subresource, as the
    # HorizontalPodAutoscaler does.
    body = {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": "grow", "namespace": "ml"},
        "spec": {
            "model": {"version": "1.0.0", "uri": "file:///models/m.skops", "sha256": "a" * 64},
            "replicas": 3,
        },
    }
    api.kubectl("create", "-f", "-", input=json.dumps(body))

    def replicas() -> int:
        return int(stored(api, "deployment", "grow-stable")["spec"]["replicas"])

    async def scenario() -> None:
        async with wired(api) as w:
            reconciler, cache = w.reconciler, w.cache
            assert (await reconciler.reconcile("ml", "grow")).result == "success"
            assert await asyncio.to_thread(replicas) == 3
            await until("the cache sees the Deployment", lambda: bool(cache.children("ml", "grow")))

            patch = {"spec": {"autoscaling": {"minReplicas": 1, "maxReplicas": 5}}}
            await asyncio.to_thread(
                api.kubectl, "-n", "ml", "patch", "mdep", "grow", "--type=merge",
                "-p", json.dumps(patch),
            )  # fmt: skip
            outcome = await reconciler.reconcile("ml", "grow")
            assert outcome.result == "success", stored(api, "mdep", "grow")["status"]
            # The three pods stay (no drop to the default of one before the autoscaler acts).
            assert await asyncio.to_thread(replicas) == 3
            hpa = await asyncio.to_thread(stored, api, "hpa", "grow-stable")
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
            assert hpa["spec"]["scaleTargetRef"]["name"] == "grow-stable"

            # The autoscaler scales; the operator never puts its own count back.
            await asyncio.to_thread(
                api.kubectl, "-n", "ml", "scale", "deployment", "grow-stable", "--replicas=4"
            )
            await until(
                "the cache sees the new scale",
                lambda: any(
                    c["kind"] == "Deployment" and c["spec"].get("replicas") == 4
                    for c in cache.children("ml", "grow")
                ),
            )
            for _ in range(2):
                assert (await reconciler.reconcile("ml", "grow")).result == "success"
                assert await asyncio.to_thread(replicas) == 4
            owners = {
                e["manager"]
                for e in stored(api, "deployment", "grow-stable", "--show-managed-fields")[
                    "metadata"
                ]["managedFields"]
                if "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})
            }
            assert "modelship-operator" not in owners, owners

    asyncio.run(scenario())
