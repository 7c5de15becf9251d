"""Retries and fallback: what happens when the chosen upstream cannot answer.

After a connection failure (nothing was sent, or nothing came back) the request is retried
once on another upstream of the variant, or of the fallback (stable) variant; a variant
with no usable upstream falls back to stable. So is a request whose answer was cut off
mid-way (the upstream died while answering) when sending it twice is harmless: reads and
predictions (:func:`repeatable`), not feedback, whose labels must be counted once.
"""

from __future__ import annotations

import asyncio
import logging

from modelship_router.metrics import RouterMetrics
from modelship_router.request import Request
from modelship_router.state import Snapshot, VariantRuntime
from modelship_router.upstream import (
    ConnectFailed,
    CutOff,
    NoResponse,
    Response,
    Upstream,
    UpstreamError,
)

log = logging.getLogger(__name__)

#: Methods without side effects on a model server.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
#: POST paths that only compute an answer (KServe V1 predict, Open Inference Protocol infer).
INFERENCE_SUFFIXES = (b":predict", b"/infer")


def repeatable(method: bytes, url: bytes) -> bool:
    """Whether a request may be sent again after its first answer was cut off: a read or an
    inference request, not a feedback post (or any other write)."""
    if method in SAFE_METHODS:
        return True
    return method == b"POST" and url.partition(b"?")[0].endswith(INFERENCE_SUFFIXES)


def retryable(req: Request, error: UpstreamError) -> bool:
    """Whether ``error`` on ``req``'s first attempt is worth one more attempt elsewhere."""
    if isinstance(error, ConnectFailed | NoResponse):
        return True
    return isinstance(error, CutOff) and repeatable(req.method, req.url)


async def attempt(
    upstream: Upstream,
    data: bytes,
    head_only: bool,
    timeout: float,  # noqa: ASYNC109 - per-read deadline, not a whole-call timeout
) -> Response:
    """One exchange; a pooled connection the upstream had closed is replaced once."""
    conn = await upstream.connect()
    try:
        return await conn.request(data, head_only, timeout)
    except NoResponse:
        if not conn.reused:
            raise
    conn = await upstream.open()
    return await conn.request(data, head_only, timeout)


class Retries:
    """Retry and fallback (a part of :class:`modelship_router.proxy.Proxy`)."""

    metrics: RouterMetrics
    loop: asyncio.AbstractEventLoop
    timeout: float

    def _fall_back(
        self, snapshot: Snapshot, variant: VariantRuntime, now: float, unit: str | None = None
    ) -> tuple[VariantRuntime, Upstream | None]:
        """The chosen variant has no usable upstream: use stable (the unit's pod of it, for
        a request with a unit), or anything at all."""
        fallback = snapshot.fallback
        if variant is not fallback:
            upstream = fallback.pick_for(unit, now)
            if upstream is not None:
                self._note_fallback(snapshot, variant)
                return fallback, upstream
        # Every upstream is ejected after recent failures: try one anyway rather than 503.
        upstream = variant.pick_any()
        if upstream is not None:
            return variant, upstream
        upstream = fallback.pick_any()
        if upstream is not None and variant is not fallback:
            self._note_fallback(snapshot, variant)
        return (fallback, upstream) if upstream is not None else (variant, None)

    def _note_fallback(self, snapshot: Snapshot, variant: VariantRuntime) -> None:
        """Count a fallback; log only when the variant starts falling back."""
        self.metrics.count_fallback(snapshot.deployment, variant.name)
        if not variant.falling_back:
            variant.falling_back = True
            log.warning(
                "variant %s has no ready upstream: falling back to %s",
                variant.name,
                snapshot.fallback.name,
            )

    async def _exchange(self, req: Request, error: UpstreamError | None) -> Response:
        """Get a response for ``req``; after a connection failure, retry once elsewhere.

        ``error`` is how a pooled attempt already failed, if it did. A pooled connection
        that the upstream had closed is replaced by a fresh one to the same upstream first
        (that is staleness, not a failure of the upstream).
        """
        snapshot, variant, upstream = req.snapshot, req.variant, req.upstream
        assert snapshot is not None and variant is not None and upstream is not None
        try:
            if error is None:
                return await attempt(upstream, req.data, req.head_only, self.timeout)
            if isinstance(error, NoResponse) and error.reused:
                conn = await upstream.open()
                return await conn.request(req.data, req.head_only, self.timeout)
            raise error
        except (ConnectFailed, NoResponse, CutOff) as exc:
            if not retryable(req, exc):
                raise
            upstream.eject()
            now = self.loop.time()
            retry = variant.pick_for(req.unit, now, exclude=upstream)
            if retry is None and variant is not snapshot.fallback:
                retry = snapshot.fallback.pick_for(req.unit, now, exclude=upstream)
                if retry is not None:
                    self._note_fallback(snapshot, variant)
                    variant = req.variant = snapshot.fallback
            if retry is None:
                raise
            log.info("retrying on %s after: %s", retry.address, exc)
            self.metrics.count_retry(snapshot.deployment, variant.name)
            return await attempt(retry, req.data, req.head_only, self.timeout)
