"""Leader election against the local cluster's API server: candidates racing for one Lease.

The candidates are the operator's own LeaderElector on the real coordination.k8s.io API,
with a short lease duration to keep it quick (admin credentials here; the operator pods in
test_operator_e2e.py exercise the Lease RBAC).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from modelship_operator.kube import Kube
from modelship_operator.leader import LeaderElector, LostLeadership

pytestmark = pytest.mark.cluster

DURATION = 2.0
LEASE = "leader-test"

Scenario = Callable[[Kube, Callable[[str], LeaderElector]], Awaitable[None]]


def play(local_cluster: Any, namespace: str, scenario: Scenario) -> None:
    async def main() -> None:
        kube = Kube.connect(local_cluster.kubeconfig)
        try:

            def candidate(identity: str) -> LeaderElector:
                return LeaderElector(kube, namespace, LEASE, identity, duration=DURATION)

            await asyncio.wait_for(scenario(kube, candidate), 60)
        finally:
            await kube.close()

    asyncio.run(main())


async def holder(kube: Kube, namespace: str) -> str:
    lease = await kube.get_lease(namespace, LEASE)
    assert lease is not None
    return str(lease["spec"].get("holderIdentity") or "")


def test_the_standby_waits_while_the_leader_renews_and_takes_over_on_release(
    local_cluster: Any, namespace: str
) -> None:
    async def scenario(kube: Kube, candidate: Callable[[str], LeaderElector]) -> None:
        a, b = candidate("a"), candidate("b")
        await a.acquire()
        assert a.is_leader and await holder(kube, namespace) == "a"
        holding = asyncio.create_task(a.hold())
        waiting = asyncio.create_task(b.acquire())
        await asyncio.sleep(DURATION * 3)  # three lease durations: a keeps renewing
        assert not waiting.done() and not b.is_leader
        holding.cancel()
        await a.release()
        assert not a.is_leader
        await asyncio.wait_for(waiting, DURATION * 3)
        assert b.is_leader and await holder(kube, namespace) == "b"
        lease = await kube.get_lease(namespace, LEASE)
        assert lease is not None and lease["spec"]["leaseTransitions"] == 2

    play(local_cluster, namespace, scenario)


def test_a_silent_leader_is_replaced_only_after_the_lease_expires(
    local_cluster: Any, namespace: str
) -> None:
    async def scenario(kube: Kube, candidate: Callable[[str], LeaderElector]) -> None:
        a, b = candidate("a"), candidate("b")
        await a.acquire()  # and then never renews, as if its node vanished
        started = time.monotonic()
        await b.acquire()
        assert time.monotonic() - started >= DURATION  # never before the lease ran out
        assert await holder(kube, namespace) == "b"

    play(local_cluster, namespace, scenario)


def test_a_leader_whose_lease_was_taken_stops(local_cluster: Any, namespace: str) -> None:
    async def scenario(kube: Kube, candidate: Callable[[str], LeaderElector]) -> None:
        a, b = candidate("a"), candidate("b")
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        await a.release()  # as if a had stalled past its lease (it still runs hold())
        await b.acquire()
        with pytest.raises(LostLeadership, match="taken over by b"):
            await asyncio.wait_for(holding, DURATION * 3)
        assert not a.is_leader and b.is_leader

    play(local_cluster, namespace, scenario)


def test_racing_candidates_never_both_win(local_cluster: Any, namespace: str) -> None:
    async def scenario(kube: Kube, candidate: Callable[[str], LeaderElector]) -> None:
        for _ in range(5):
            a, b, c = candidate("a"), candidate("b"), candidate("c")
            results = await asyncio.gather(*(x.try_acquire_or_renew() for x in (a, b, c)))
            assert sum(results) == 1, results
            winner = (a, b, c)[results.index(True)]
            winner.is_leader = True
            await winner.release()

    play(local_cluster, namespace, scenario)


def test_a_restarted_leader_takes_its_own_lease_back_at_once(
    local_cluster: Any, namespace: str
) -> None:
    async def scenario(kube: Kube, candidate: Callable[[str], LeaderElector]) -> None:
        await candidate("pod-1").acquire()
        restarted = candidate("pod-1")  # same pod name, new process: no state
        assert await restarted.try_acquire_or_renew()
        assert not await candidate("pod-2").try_acquire_or_renew()

    play(local_cluster, namespace, scenario)
