"""The work queue's bound on concurrent reconciles, and liveness that follows their progress."""

from __future__ import annotations

import asyncio

from modelship_operator.metrics import HealthState, OperatorMetrics
from modelship_operator.workqueue import Outcome, Worker, WorkQueue


def test_at_most_the_configured_number_of_reconciles_run_at_once() -> None:
    async def scenario() -> tuple[int, set[str]]:
        running = 0
        peak = 0
        done: set[str] = set()

        async def work(namespace: str, name: str, _worker: Worker) -> Outcome:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1
            done.add(name)
            return Outcome("success", 3600)

        queue = WorkQueue(work, OperatorMetrics(), concurrency=4)
        for i in range(40):
            queue.poke("ml", f"md-{i}", urgent=True)
        for _ in range(200):
            if len(done) == 40:
                break
            await asyncio.sleep(0.05)
        assert queue.busy == 0
        await queue.close()
        return peak, done

    peak, done = asyncio.run(scenario())
    assert len(done) == 40
    assert peak == 4


class Queue:
    def __init__(self) -> None:
        self.busy = 0
        self.last_progress = 0.0


def test_liveness_fails_only_when_reconciles_wait_and_none_finishes() -> None:
    now = [0.0]
    health = HealthState(stale_after=30, clock=lambda: now[0])
    queue = Queue()
    health.queue = queue
    health.leader = True
    now[0] = 10_000.0
    health.beat()
    assert health.alive() == (True, "ok")  # idle for hours: nothing is waiting
    queue.busy, queue.last_progress = 3, now[0] - 120
    assert health.alive()[0]  # slow, but progressing
    queue.last_progress = now[0] - 400
    alive, detail = health.alive()
    assert not alive and "3 reconciles waiting" in detail
    health.leader = False  # a standby reconciles nothing
    assert health.alive()[0]
