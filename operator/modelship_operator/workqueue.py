"""The per-resource work queue: one worker task per ModelDeployment, one reconcile at a time
per resource and at most ``concurrency`` at a time in all.

kopf's watch handlers (:mod:`modelship_operator.kopf_wiring`) only *poke* the queue; each
resource's worker runs the reconcile it was given (:meth:`Reconciler.reconcile
<modelship_operator.reconciler.Reconciler.reconcile>`), then waits for the delay the
reconcile asked for, or for the next poke.

Why a worker per resource rather than kopf's create/update/resume handlers and a timer:
the resource stays untouched by kopf (no finalizer, so deleting it never waits for the
operator; no progress annotations, so GitOps tools see no drift); reconciles of one
resource never overlap (kopf runs timers beside change handlers); and the next run can be
as soon as the reconcile asks. Transient API errors (no answer, 409, 429, 5xx) and bugs are
retried with exponential back-off (1 s doubling to 60 s); API refusals back off the same
way while showing in status. Nothing a user does can crash the operator or make it spin.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from modelship_kube.errors import ApiError

from modelship_operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)

#: Pause after a poke before reconciling, so a burst of watch events makes one reconcile.
DEBOUNCE_SECONDS: Final = 0.2
MAX_BACKOFF_SECONDS: Final = 60.0
#: Consecutive status conflicts after which the worker backs off like after an error.
MAX_CONFLICTS: Final = 3
Key = tuple[str, str]


def backoff_delay(failures: int, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """Seconds to wait after ``failures`` consecutive failures: 1, 2, 4, ... up to ``cap``."""
    if failures <= 0:
        return 0.0
    return float(min(cap, 2 ** min(failures - 1, 16)))


def error_reason(exc: ApiError) -> str:
    """A short label for an API failure: the API's reason, else the HTTP status."""
    if exc.status == 0:
        return "Unavailable"
    return exc.reason or f"HTTP{exc.status}"


@dataclass
class Outcome:
    """What one reconcile did, for the worker and the metrics."""

    result: str  # success | invalid | refused | conflict | deleting | gone
    delay: float = 0.0


@dataclass
class Worker:
    """One resource's place in the queue."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: bool = False
    failures: int = 0
    conflicts: int = 0
    #: resourceVersions of this operator's recent status writes (their watch events are no
    #: news).
    own_versions: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


#: One reconcile of ``(namespace, name)``; raises ApiError on transient failures.
Work = Callable[[str, str, Worker], Awaitable[Outcome]]


class WorkQueue:
    """Runs ``work``, one worker per ModelDeployment."""

    def __init__(
        self,
        work: Work,
        metrics: OperatorMetrics,
        concurrency: int = 16,
        on_forget: Callable[[str, str], None] | None = None,
    ) -> None:
        self.work = work
        self.metrics = metrics
        #: Called when a resource is gone (to drop what else was remembered of it).
        self.on_forget = on_forget
        self.concurrency = concurrency
        #: At most ``concurrency`` reconciles at once; the others wait their turn in order.
        self._slots = asyncio.Semaphore(concurrency)
        #: Reconciles waiting for a slot or running.
        self.busy = 0
        #: Monotonic time a reconcile last finished, or work arrived at an idle queue
        #: (health: are reconciles progressing?).
        self.last_progress = time.monotonic()
        self._workers: dict[Key, Worker] = {}
        self._closed = False

    def poke(
        self, namespace: str, name: str, *, resource_version: str | None = None, urgent: bool
    ) -> None:
        """Something about ``namespace/name`` changed: reconcile it soon.

        ``urgent`` (the resource itself changed) also cuts an error back-off short; a
        change of a child does not. A watch event of the operator's own status write is
        ignored.
        """
        if self._closed:
            return
        key = (namespace, name)
        worker = self._workers.get(key)
        if worker is None:
            worker = Worker()
            self._workers[key] = worker
            worker.task = asyncio.create_task(self._run(key, worker), name=f"reconcile {key}")
            self.metrics.managed.set(len(self._workers))
            return
        if resource_version is not None and resource_version in worker.own_versions:
            return
        worker.urgent = worker.urgent or urgent
        worker.wake.set()

    def forget(self, namespace: str, name: str) -> None:
        """The resource is gone: stop its worker and drop its metrics."""
        worker = self._workers.pop((namespace, name), None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()
        self.metrics.forget(namespace, name)
        self.metrics.managed.set(len(self._workers))
        if self.on_forget is not None:
            self.on_forget(namespace, name)

    async def close(self) -> None:
        """Stop every reconcile now and accept no more (leadership is ending)."""
        self._closed = True
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        self._workers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: Key, worker: Worker) -> None:
        await asyncio.sleep(DEBOUNCE_SECONDS)
        while True:
            worker.wake.clear()
            worker.urgent = False
            delay = await self._attempt(key, worker)
            if delay is None:  # gone
                if self._workers.get(key) is worker:
                    self.forget(*key)
                return
            await self._wait(worker, delay)

    async def _attempt(self, key: Key, worker: Worker) -> float | None:
        """One reconcile, with the bookkeeping; the delay before the next (None: gone)."""
        namespace, name = key
        if self.busy == 0:
            self.last_progress = time.monotonic()
        self.busy += 1
        try:
            async with self._slots:
                with self.metrics.duration.time():
                    outcome = await self.work(namespace, name, worker)
        except asyncio.CancelledError:
            raise
        except ApiError as exc:
            worker.failures += 1
            self.metrics.reconciles.labels(namespace, name, "error").inc()
            self.metrics.errors.labels(namespace, name, error_reason(exc)).inc()
            delay = backoff_delay(worker.failures)
            log.warning("reconcile %s/%s: %s (retrying in %.0fs)", namespace, name, exc, delay)
            return delay * random.uniform(1.0, 1.1)
        except Exception:  # a bug must not stop other resources, nor spin on this one
            worker.failures += 1
            self.metrics.reconciles.labels(namespace, name, "error").inc()
            self.metrics.errors.labels(namespace, name, "InternalError").inc()
            delay = backoff_delay(worker.failures)
            log.exception("reconcile %s/%s failed (retrying in %.0fs)", namespace, name, delay)
            return delay
        finally:
            self.busy -= 1
            self.last_progress = time.monotonic()
        if outcome.result == "gone":
            return None
        self.metrics.reconciles.labels(namespace, name, outcome.result).inc()
        if outcome.result == "conflict":
            worker.conflicts += 1
            if worker.conflicts <= MAX_CONFLICTS:
                return 0.0  # the resource changed meanwhile: plan again from the new one
            return backoff_delay(worker.conflicts - MAX_CONFLICTS)
        worker.conflicts = 0
        if outcome.result == "refused":  # shown in status; retried with back-off
            worker.failures += 1
            return backoff_delay(worker.failures)
        worker.failures = 0
        return outcome.delay

    async def _wait(self, worker: Worker, delay: float) -> None:
        """Sleep ``delay`` unless poked; while failing, only an urgent poke cuts it short."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(worker.wake.wait(), remaining)
            except TimeoutError:
                break
            if worker.failures == 0 or worker.urgent:
                await asyncio.sleep(DEBOUNCE_SECONDS)
                break
            worker.wake.clear()
