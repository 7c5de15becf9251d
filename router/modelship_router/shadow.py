"""Shadow mirroring: a drawn share of requests copied to the shadow variant, whose
predictions are compared with what the client got (the agreement counters)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from modelship_router.agreement import compare, is_prediction
from modelship_router.config import BUCKETS
from modelship_router.metrics import (
    MIRROR_DROPPED,
    MIRROR_ERROR,
    MIRROR_HTTP_4XX,
    MIRROR_HTTP_5XX,
    MIRROR_OK,
    MIRROR_TIMEOUT,
    RouterMetrics,
)
from modelship_router.request import Request
from modelship_router.retry import attempt
from modelship_router.routing import mirror_target
from modelship_router.settings import RouterSettings
from modelship_router.state import RouterState, Snapshot
from modelship_router.upstream import (
    ConnectFailed,
    Response,
    Upstream,
    UpstreamError,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)


class ShadowMirror:
    """Shadow copies (a part of :class:`modelship_router.proxy.Proxy`)."""

    settings: RouterSettings
    state: RouterState
    metrics: RouterMetrics
    loop: asyncio.AbstractEventLoop
    draw: Callable[[int], int]
    _mirrors: set[asyncio.Task[None]]

    def _mirror(
        self,
        snapshot: Snapshot,
        req: Request,
        served: str,
        peer: bytes,
        primary: Response | None,
    ) -> None:
        """Send a copy of ``req`` to the shadow variant, if this request is drawn. For a
        prediction (POST to ``...:predict`` or ``.../infer``), the shadow's answer is compared
        with ``primary`` (what the client got; None: the client got an error) in the copy's
        own task."""
        target = mirror_target(snapshot.table, served, self.draw(BUCKETS))
        if target is None:
            return
        deployment = snapshot.deployment
        variant = self.state.mirror_snapshot.get(target)
        upstream = variant.pick_for(req.unit, self.loop.time()) if variant is not None else None
        if upstream is None and variant is not None:
            upstream = variant.pick_any()
        if upstream is None or len(self._mirrors) >= self.settings.mirror_max_in_flight:
            self.metrics.count_mirror(deployment, target, MIRROR_DROPPED)
            return
        data = req.serialise(peer, upstream.address, mirror=True)
        compared = req.method == b"POST" and is_prediction(req.url)
        task = self.loop.create_task(
            self._send_mirror(deployment, target, upstream, data, compared, primary)
        )
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _send_mirror(
        self,
        deployment: str,
        variant: str,
        upstream: Upstream,
        data: bytes,
        compared: bool = False,
        primary: Response | None = None,
    ) -> None:
        resp: Response | None = None
        try:
            resp = await attempt(upstream, data, False, self.settings.mirror_timeout)
        except UpstreamTimeout:
            outcome = MIRROR_TIMEOUT
        except UpstreamError as exc:
            log.debug("mirror copy to %s failed: %s", upstream.address, exc)
            if isinstance(exc, ConnectFailed):
                upstream.eject()
            outcome = MIRROR_ERROR
        else:
            if resp.status >= 500:
                outcome = MIRROR_HTTP_5XX
            elif resp.status >= 400:
                outcome = MIRROR_HTTP_4XX
            else:
                outcome = MIRROR_OK
        self.metrics.count_mirror(deployment, variant, outcome)
        if compared:
            result = compare(
                primary.status if primary is not None else None,
                primary.body if primary is not None else b"",
                resp.status if resp is not None else None,
                resp.body if resp is not None else b"",
            )
            if result.incomparable is not None:
                self.metrics.count_shadow_incomparable(deployment, variant, result.incomparable)
            else:
                self.metrics.count_shadow_rows(deployment, variant, result.agree, result.disagree)

    async def drain_mirrors(self) -> None:
        for task in list(self._mirrors):
            task.cancel()
        if self._mirrors:
            await asyncio.gather(*self._mirrors, return_exceptions=True)
