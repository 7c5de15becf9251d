"""Scale from zero: hold a request for a variant with no pod, wake it, send it once ready.

A variant whose routing entry names a ``scaleTarget`` may be scaled to zero (the operator
does it after ``autoscaling.scaleToZeroAfter`` without requests). A request the router
picks it for while it has no usable upstream is not answered 503 and not sent to another
variant (that would break the split): the :class:`Activator` asks the :class:`Waker` to
scale the Deployment from 0 to 1, and the request waits, up to the routing config's
``activationSeconds``, for a snapshot in which the variant has a usable upstream. It is then
sent there as any other request; after the wait it is answered 503 with the reason. This
is what Knative's activator does, inside the router (no extra hop for requests to pods
that are up).

Wake-ups are de-duplicated per Deployment: one call at a time, and none more often than
:data:`WAKE_EVERY` seconds while requests keep waiting (a failed call is tried again then).

:class:`KubernetesWaker` scales through the Deployment's ``scale`` subresource: it reads it
and patches it only if it runs 0, with the resourceVersion it read as a precondition
(``Client.scale``), so it never lowers a count an autoscaler (or a person) has raised
meanwhile. RBAC: get and patch on ``deployments/scale`` of that Deployment only (the
operator renders it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Final

from modelship_kube.paths import object_path
from modelship_kube.request import Client

from modelship_router.config import DEFAULT_ACTIVATION_SECONDS
from modelship_router.state import RouterState, Snapshot, VariantRuntime
from modelship_router.upstream import Upstream

log = logging.getLogger(__name__)

#: Least seconds between two wake-up calls for one Deployment.
WAKE_EVERY: Final = 2.0


class Waker(ABC):
    """Scales a Deployment from zero to one pod."""

    @abstractmethod
    async def wake(self, deployment: str) -> str:
        """Ask for one pod of ``deployment``; returns what happened, for the log."""


class NoWaker(Waker):
    """Without the Kubernetes API (a file config): nothing to scale, requests only wait."""

    async def wake(self, deployment: str) -> str:
        return "not scaled (the router runs without Kubernetes)"


class KubernetesWaker(Waker):
    """Scales ``deployments/<name>/scale`` from 0 to 1 in one namespace."""

    def __init__(self, api: Client, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    async def wake(self, deployment: str) -> str:
        path = object_path("apps/v1", "deployments", self.namespace, deployment, "scale")
        what = f"the scale of Deployment {self.namespace}/{deployment}"
        if await self.api.scale(path, 0, 1, what=what):
            return "scaled from 0 to 1"
        return "not at 0 replicas (scaled meanwhile): left as it is"


class Activator:
    """Wakes variants scaled to zero and holds their requests until one of their upstreams
    is usable (see the module's docstring)."""

    def __init__(
        self,
        state: RouterState,
        waker: Waker,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.state = state
        self.waker = waker
        self.loop = loop
        self._clock = clock or loop.time
        self._changed = asyncio.Event()
        self._waking: dict[str, asyncio.Task[None]] = {}
        self._woken_at: dict[str, float] = {}
        state.subscribe(self._on_snapshot)

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        # Wake every waiter; each checks its own variant again.
        self._changed.set()
        self._changed = asyncio.Event()

    async def hold(
        self, variant: str, target: str, unit: str | None
    ) -> tuple[Snapshot, VariantRuntime, Upstream] | None:
        """Wake ``target`` and wait for a usable upstream of ``variant`` (the unit's, for a
        request with one): the snapshot, variant and upstream to send to, or None after the
        snapshot's ``activationSeconds``."""
        started = self._clock()
        snapshot = self.state.snapshot
        configured = snapshot.config.activation_seconds if snapshot is not None else None
        timeout = DEFAULT_ACTIVATION_SECONDS if configured is None else configured
        deadline = started + timeout
        while True:
            now = self._clock()
            snapshot = self.state.snapshot
            if snapshot is not None:
                runtime = snapshot.variants.get(variant)
                if runtime is not None:
                    upstream = runtime.pick_for(unit, now)
                    if upstream is not None:
                        return snapshot, runtime, upstream
            remaining = deadline - now
            if remaining <= 0:
                return None
            self._wake(target, now)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                # Ejections expire without a new snapshot: look again at least every second.
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, 1.0))

    def _wake(self, target: str, now: float) -> None:
        running = self._waking.get(target)
        if running is not None and not running.done():
            return
        if now - self._woken_at.get(target, float("-inf")) < WAKE_EVERY:
            return
        self._woken_at[target] = now
        self._waking[target] = self.loop.create_task(self._call(target))

    async def _call(self, target: str) -> None:
        try:
            outcome = await self.waker.wake(target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not wake Deployment %s (tried again in %gs): %s",
                        target, WAKE_EVERY, exc)  # fmt: skip
        else:
            log.info("woke Deployment %s: %s", target, outcome)

    async def close(self) -> None:
        for task in self._waking.values():
            task.cancel()
        for task in self._waking.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._waking.clear()
