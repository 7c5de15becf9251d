"""The hot path: route a parsed request, send it upstream, relay and count the answer.

Routing is the pure functions of :mod:`modelship_router.routing` against the current
snapshot; the common case (a pooled upstream connection) runs on plain callbacks, with no
task or future. Paths are forwarded unchanged, so ``/v1/models/<m>:predict`` and
``/v2/models/<m>/infer`` both work.

A refused decision (a privileged match rule without a valid token, or a match naming the
shadow) is answered 403 by the router. A request a non-privileged match rule decided (a
tester's) goes upstream with ``x-modelship-pinned: 1``; the client's own value of that
header is never forwarded (the parser drops it).

A request with a sticky key goes upstream with ``x-modelship-unit: <16 hex>`` (its
decision's unit; a client's own is dropped too) to the variant's upstream that rendezvous
hashing picks for the unit (:mod:`modelship_router.replica`), so a user stays on one pod.
Feedback naming its replica still goes to that replica first.

A variant with no usable upstream falls back to stable, except one that may be scaled to
zero (its ``scaleTarget``): its request is held while the activator wakes it
(:mod:`modelship_router.activate`), so the split is kept.
"""

from __future__ import annotations

import itertools
import logging
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelship_router.config import BUCKETS
from modelship_router.contract import ACTIVATED, ACTIVATION_TIMEOUT
from modelship_router.local import LOCAL_PATHS, LocalEndpoints
from modelship_router.metrics import LATENCY_BUCKETS
from modelship_router.replica import REPLICA_HEADER, UNIT_HEADER, find_replica, rendezvous
from modelship_router.request import Request
from modelship_router.retry import Retries, retryable
from modelship_router.routing import REFUSED_STATUS, TokenCheck, decide
from modelship_router.shadow import ShadowMirror
from modelship_router.state import Snapshot, VariantRuntime
from modelship_router.upstream import (
    Response,
    Upstream,
    UpstreamError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from modelship_router.activate import Activator
    from modelship_router.connection import ClientConnection

log = logging.getLogger(__name__)

_NO_HEADERS: dict[str, str] = {}
#: Added to the upstream request when a non-privileged match rule chose the variant.
PINNED_LINE = b"x-modelship-pinned: 1\r\n"
#: Start of the line added to the upstream request of a request with a unit.
UNIT_PREFIX = UNIT_HEADER.encode() + b": "


class Dispatcher(Retries, LocalEndpoints, ShadowMirror):
    """Dispatch and completion (a part of :class:`modelship_router.proxy.Proxy`)."""

    _random: Callable[[], float] | None
    _id_base: int
    _ids: itertools.count[int]
    #: The access token privileged match rules need (None: none is configured).
    access: TokenCheck | None
    #: Wakes variants scaled to zero and holds their requests (None: they answer 503).
    activator: Activator | None

    def dispatch(self, conn: ClientConnection, req: Request) -> None:
        """Route ``req`` and send it upstream; ``conn.finished(req)`` follows its answer."""
        req.conn = conn
        try:
            snapshot = self.state.snapshot
            if (
                req.error is not None
                or snapshot is None
                or (req.method in (b"GET", b"HEAD") and req.url.partition(b"?")[0] in LOCAL_PATHS)
            ):
                self._answer(conn, req)
                return
            if req.request_id is None:
                req.request_id = b"%032x" % (self._id_base + next(self._ids))
            now = self.loop.time()
            rand = self._random
            draw = int(rand() * BUCKETS) if rand is not None else self.draw(BUCKETS)
            by_bucket = snapshot.by_bucket
            if by_bucket is not None:
                chosen = variant = by_bucket[draw]
            else:
                decision = decide(snapshot.table, req.wanted or _NO_HEADERS, draw, self.access)
                if decision.refusal is not None:
                    self.write_error(conn, req, REFUSED_STATUS, decision.refusal, None)
                    conn.finished(req)
                    return
                if decision.pinned:
                    req.lines.append(PINNED_LINE)
                unit = decision.unit
                if unit is not None:
                    req.unit = unit
                    req.lines += (UNIT_PREFIX, unit.encode(), b"\r\n")
                chosen = variant = snapshot.variants[decision.variant]
            ups = variant.upstreams
            wanted = req.wanted
            token = wanted.get(REPLICA_HEADER) if wanted is not None else None
            pinned = find_replica(ups, token) if token is not None else None
            if pinned is not None and pinned.down_until <= now:
                upstream: Upstream | None = pinned  # feedback back to the predicting pod
            elif len(ups) == 1 and ups[0].down_until <= now:
                upstream = ups[0]  # one upstream: no round robin to advance
            elif req.unit is not None:
                upstream = rendezvous(ups, req.unit, now)  # the user's pod of the variant
            else:
                upstream = variant.pick(now)
            if upstream is None:
                if variant.scale_target is not None and self.activator is not None:
                    # Scaled to zero: wake it and hold the request (never another variant).
                    self.loop.create_task(self._activate(conn, req, variant))
                    return
                variant, upstream = self._fall_back(snapshot, variant, now, req.unit)
                if upstream is None:
                    message = f"no ready upstream for variant {variant.name}"
                    self.write_error(conn, req, 503, message, variant)
                    self.metrics.count_request(snapshot.deployment, variant.name, 503)
                    conn.finished(req)
                    return
            self._send(conn, req, snapshot, chosen, variant, upstream, now)
        except Exception:
            self.crashed(req)

    def _send(
        self,
        conn: ClientConnection,
        req: Request,
        snapshot: Snapshot,
        chosen: VariantRuntime,
        variant: VariantRuntime,
        upstream: Upstream,
        now: float,
    ) -> None:
        """Send the routed ``req`` to ``upstream`` (of ``variant``, for ``chosen``)."""
        req.snapshot = snapshot
        req.chosen = chosen
        req.variant = variant
        req.upstream = upstream
        req.started = now
        req.data = req.serialise(conn.peer, upstream.address)
        pooled = upstream.take_idle(now) if upstream.idle else None
        if pooled is not None:
            # The common case: plain callbacks, no task or future.
            pooled.send(req.data, req.head_only, now + self.timeout, req)
        else:
            self.loop.create_task(self._slow_path(req, None))

    async def _activate(
        self, conn: ClientConnection, req: Request, variant: VariantRuntime
    ) -> None:
        """Hold ``req`` while ``variant`` (scaled to zero) gets its first pod, then send it
        there; 503 with the reason when none is ready in time."""
        activator = self.activator
        assert activator is not None and variant.scale_target is not None
        started = self.loop.time()
        try:
            found = await activator.hold(variant.name, variant.scale_target, req.unit)
            waited = self.loop.time() - started
            snapshot = found[0] if found is not None else self.state.snapshot
            deployment = snapshot.deployment if snapshot is not None else self.deployment
            outcome = ACTIVATED if found is not None else ACTIVATION_TIMEOUT
            self.metrics.count_activation(deployment, variant.name, outcome, waited)
            if found is None:
                message = (
                    f"variant {variant.name} is scaled to zero and no pod of it was ready "
                    f"within {waited:.0f} s of this request"
                )
                self.write_error(conn, req, 503, message, variant)
                self.metrics.count_request(deployment, variant.name, 503)
                conn.finished(req)
                return
            snapshot, runtime, upstream = found
            log.info("variant %s woke %.2f s after a request came for it", variant.name, waited)
            self._send(conn, req, snapshot, runtime, runtime, upstream, self.loop.time())
        except Exception:
            self.crashed(req)

    def _answer(self, conn: ClientConnection, req: Request) -> None:
        """Requests the router answers itself: refused ones, its own paths, no config yet."""
        if req.error is not None:
            self.write_error(conn, req, req.error[0], req.error[1], None)
        elif req.method in (b"GET", b"HEAD") and req.url.partition(b"?")[0] in LOCAL_PATHS:
            self.local(conn, req)
        else:
            if req.request_id is None:
                req.request_id = b"%032x" % (self._id_base + next(self._ids))
            self.write_error(conn, req, 503, "no routing configuration applied yet", None)
        conn.finished(req)

    def complete(self, req: Request, response: Response) -> None:
        """The upstream answered: relay the response, count it, mirror, finish."""
        # Set by dispatch before the request went upstream (no cast(): a call per request).
        snapshot: Snapshot = req.snapshot  # type: ignore[assignment]
        variant: VariantRuntime = req.variant  # type: ignore[assignment]
        conn: ClientConnection = req.conn  # type: ignore[assignment]
        head = response.head
        if head.as_is and req.keep_alive and not req.head_only and not self.stopping:
            # The common case: the upstream's head, the attribution header, the body.
            transport = conn.transport
            if transport is not None and not transport.is_closing():
                replica = req.upstream.replica_line  # type: ignore[union-attr]
                transport.write(
                    b"%s%s%s\r\n%s" % (head.head, variant.header_line, replica, response.body)
                )
        else:
            self.write_response(conn, req, response, variant)
        # Bookkeeping after the write: the client is not kept waiting for it.
        elapsed = self.loop.time() - req.started
        stats = variant.stats
        if stats is None:
            stats = variant.stats = self.metrics.variant_stats(snapshot.deployment, variant.name)
        histogram = stats.histogram
        histogram.counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        histogram.total += elapsed
        codes = stats.codes
        status = response.status
        codes[status] = codes.get(status, 0) + 1
        chosen = req.chosen
        if chosen is not None and chosen.falling_back and variant is chosen:
            chosen.falling_back = False
            log.info("variant %s is served by its own upstreams again", chosen.name)
        if snapshot.table.mirror_variant is not None:
            self._mirror(snapshot, req, variant.name, conn.peer, response)
        req.data = b""
        conn.finished(req)

    def recover(self, req: Request, error: UpstreamError) -> None:
        """The pooled exchange failed: retry (in a task) or answer the error."""
        if retryable(req, error):
            self.loop.create_task(self._slow_path(req, error))
        else:
            self._fail(req, error)

    def crashed(self, req: Request) -> None:
        """A bug surfaced while handling ``req``: answer 500 and close the connection."""
        log.exception("unexpected error while proxying")
        req.keep_alive = False
        conn = req.conn
        if conn is not None:
            self.write_error(conn, req, 500, "internal router error", None)
            conn.finished(req)

    def _fail(self, req: Request, error: UpstreamError) -> None:
        snapshot, variant, conn = req.snapshot, req.variant, req.conn
        assert snapshot is not None and variant is not None and conn is not None
        if isinstance(error, UpstreamTimeout):
            status, message = 504, "upstream timed out"
        else:
            status, message = 502, str(error)
        log.warning("request %s to variant %s failed: %s", req.request_id, variant.name, message)
        self.metrics.observe_upstream(
            snapshot.deployment, variant.name, self.loop.time() - req.started
        )
        self.write_error(conn, req, status, message, variant)
        self.metrics.count_request(snapshot.deployment, variant.name, status)
        if snapshot.table.mirror_variant is not None:
            self._mirror(snapshot, req, variant.name, conn.peer, None)
        conn.finished(req)

    async def _slow_path(self, req: Request, error: UpstreamError | None) -> None:
        """New connections, stale pooled connections and retries, as a coroutine."""
        try:
            response = await self._exchange(req, error)
        except UpstreamError as exc:
            self._fail(req, exc)
        except Exception:
            self.crashed(req)
        else:
            try:
                self.complete(req, response)
            except Exception:
                self.crashed(req)
