"""Leader election over a ``coordination.k8s.io/v1`` Lease: with two replicas, one acts.

The algorithm is client-go's: a candidate takes the Lease when it is free, already its own,
or when its record has not changed for ``leaseDurationSeconds`` as measured on the
candidate's own monotonic clock (so clocks of different nodes never need to agree). Every
write carries the resourceVersion it read, so two candidates racing for an expired Lease
cannot both win. The holder renews every third of the duration and gives up — the process
exits and is restarted — when it could not renew for two thirds of it, before anyone else
may take over; on a clean shutdown it releases the Lease so the standby takes over at once.

The identity is the pod's name: a container restarted in the same pod (a crash, a SIGKILL)
takes its Lease back at once instead of waiting for it to expire, which is safe because a
pod never runs two instances of the same container.

Only ``get``, ``create`` and ``update`` on the one Lease are needed (see ``rbac.py``).
:func:`may_acquire` and :func:`next_spec` are the pure decisions; :class:`LeaderElector`
does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from modelship_kube.errors import ApiError

from modelship_operator.kube import Kube
from modelship_operator.rbac import DEFAULT_NAMESPACE

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LostLeadership(Exception):
    """The Lease could not be renewed in time: stop acting now."""


def own_identity() -> str:
    """The pod's name (``POD_NAME`` from the downward API, else the hostname)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def own_namespace() -> str:
    """The namespace the operator runs in (for its Lease)."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE


def micro_time(now: datetime) -> str:
    """A Kubernetes MicroTime."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Observation:
    """A Lease record as last seen, and when (monotonic) it was first seen like that."""

    resource_version: str
    holder: str
    duration: float
    seen_at: float


def observe(
    previous: Observation | None, lease: Mapping[str, Any], now: float, default_duration: float
) -> Observation:
    """Track when the record last changed, on the local clock."""
    spec = lease.get("spec") or {}
    version = str(lease["metadata"].get("resourceVersion", ""))
    holder = str(spec.get("holderIdentity") or "")
    duration = float(spec.get("leaseDurationSeconds") or default_duration)
    if previous is not None and previous.resource_version == version:
        return previous
    return Observation(version, holder, duration, now)


def may_acquire(observation: Observation, identity: str, now: float) -> bool:
    """Free, ours, or unchanged for longer than its duration."""
    return (
        not observation.holder
        or observation.holder == identity
        or now - observation.seen_at >= observation.duration
    )


def next_spec(
    spec: Mapping[str, Any] | None, identity: str, duration: float, now: datetime
) -> dict[str, Any]:
    """The Lease spec after ``identity`` takes or renews it."""
    spec = spec or {}
    stamp = micro_time(now)
    ours = spec.get("holderIdentity") == identity
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(duration)),
        "acquireTime": spec.get("acquireTime", stamp) if ours else stamp,
        "renewTime": stamp,
        "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1),
    }


class LeaderElector:
    """Acquire, hold and release one Lease."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_every = duration / 3
        self.renew_deadline = duration * 2 / 3
        self.retry_every = max(0.5, duration / 5)
        self._clock = clock
        self._on_change = on_change
        self._observation: Observation | None = None
        self.is_leader = False
        #: Monotonic time of the last successful exchange with the API (liveness).
        self.last_contact = clock()

    def _set_leader(self, value: bool) -> None:
        if value != self.is_leader:
            self.is_leader = value
            if self._on_change is not None:
                self._on_change(value)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        now_wall = datetime.now(UTC)
        lease = await self.kube.get_lease(self.namespace, self.name)
        self.last_contact = self._clock()
        if lease is None:
            try:
                spec = next_spec(None, self.identity, self.duration, now_wall)
                await self.kube.create_lease(self.namespace, self.name, spec)
            except ApiError as exc:
                if exc.status == 409:  # someone else created it first
                    return False
                raise
            return True
        self._observation = observe(self._observation, lease, self._clock(), self.duration)
        if not may_acquire(self._observation, self.identity, self._clock()):
            return False
        try:
            spec = next_spec(lease.get("spec"), self.identity, self.duration, now_wall)
            await self.kube.update_lease(lease, spec)
        except ApiError as exc:
            if exc.conflict:  # written by someone else since we read it
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        announced = False
        while True:
            try:
                if await self.try_acquire_or_renew():
                    log.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
                    self._set_leader(True)
                    return
                if not announced and self._observation is not None:
                    log.info(
                        "standing by: lease %s/%s is held by %s",
                        self.namespace,
                        self.name,
                        self._observation.holder,
                    )
                    announced = True
            except ApiError as exc:
                log.warning("leader election: %s (retrying)", exc)
            await asyncio.sleep(self.retry_every)

    async def hold(self) -> None:
        """Renew until renewal fails for ``renew_deadline``; then raise LostLeadership.

        The deadline holds whatever the API does: an attempt that has not answered by then
        (a saturated connection pool, an API server that accepts and never answers) is cut
        off, so a leader that cannot prove its claim stops before anyone may take over."""
        last_renewed = self._clock()
        while True:
            await asyncio.sleep(self.renew_every)
            while True:
                remaining = self.renew_deadline - (self._clock() - last_renewed)
                try:
                    if await asyncio.wait_for(self.try_acquire_or_renew(), max(remaining, 0.1)):
                        last_renewed = self._clock()
                        break
                    self._set_leader(False)
                    holder = self._observation.holder if self._observation else "?"
                    raise LostLeadership(f"lease {self.name} was taken over by {holder}")
                except ApiError as exc:
                    log.warning("renewing lease %s: %s", self.name, exc)
                except TimeoutError:
                    log.warning("renewing lease %s: no answer in time", self.name)
                if self._clock() - last_renewed >= self.renew_deadline:
                    self._set_leader(False)
                    raise LostLeadership(
                        f"could not renew lease {self.name} for {self.renew_deadline:.0f}s"
                    )
                await asyncio.sleep(min(self.retry_every, self.renew_every))

    async def release(self) -> None:
        """Give the Lease up (clean shutdown): the standby may take it immediately."""
        if not self.is_leader:
            return
        self._set_leader(False)
        try:
            lease = await self.kube.get_lease(self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease.get("spec") or {})
            spec.update(
                {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "renewTime": micro_time(datetime.now(UTC)),
                }
            )
            await self.kube.update_lease(lease, spec)
            log.info("released lease %s/%s", self.namespace, self.name)
        except ApiError as exc:
            log.warning("releasing lease %s: %s", self.name, exc)
