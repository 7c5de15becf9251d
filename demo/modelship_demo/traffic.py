"""Bounded client traffic with ground-truth feedback, as a real application would send it.

Each request predicts one held-out row through the router; the answer names the variant
and the request id, and the true label goes back as feedback to that same variant and pod
(the router sends a request naming `x-modelship-variant` and `x-modelship-replica` to it).
A deployment that protects feedback needs its access token: pass `token`, sent as
`x-modelship-token` with each feedback post. With `force` every prediction names that
variant (`x-modelship-variant`, with the token), as a client that pins itself does.
The generator stops by itself after `duration` seconds or `max_requests` predictions,
whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np

VARIANT_HEADER = "x-modelship-variant"
#: The pod that served; sent back with the feedback so it reaches that pod's predictions.
REPLICA_HEADER = "x-modelship-replica"
#: The deployment's access token, which protected feedback (and variant forcing) needs.
TOKEN_HEADER = "x-modelship-token"


@dataclass
class TrafficStats:
    """What the client saw: answers per (variant, status), failures by reason."""

    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    feedback_sent: int = 0
    #: Feedback the server joined to its prediction (its answer's "matched").
    feedback_joined: int = 0
    #: Feedback the server refused for want of a valid token, or because it is off (401/403).
    feedback_refused: int = 0
    #: Requests (or their feedback) still unanswered 15 s after the generator stopped,
    #: cancelled before its client closed.
    abandoned: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def total(self) -> int:
        return sum(self.answers.values()) + sum(self.errors.values())

    @property
    def non_2xx(self) -> int:
        bad = sum(n for (_, status), n in self.answers.items() if not 200 <= status < 300)
        return bad + sum(self.errors.values())

    def by_variant(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (variant, _), n in self.answers.items():
            counts[variant] += n
        return counts


async def run_traffic(
    base_url: str,
    model: str,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    rate: float,
    duration: float,
    max_requests: int,
    stats: TrafficStats,
    stop: asyncio.Event | None = None,
    seed: int = 1,
    token: str | None = None,
    force: str | None = None,
) -> TrafficStats:
    """Send about `rate` predictions per second (each followed by its feedback, with
    ``token`` as ``x-modelship-token`` when given). ``labels`` are class labels or, for a
    regressor, the true values: each is sent as the JSON number or string it holds.
    ``force`` names the variant every prediction asks for (it needs ``token``)."""
    if force is not None and token is None:
        raise ValueError("forcing a variant needs the access token")
    rng = random.Random(seed)
    deadline = time.monotonic() + duration
    interval = 1.0 / rate
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    timeout = httpx.Timeout(10.0, connect=2.0)
    predict_url = f"{base_url}/v1/models/{model}:predict"
    feedback_url = f"{base_url}/v1/models/{model}:feedback"
    in_flight: set[asyncio.Task[None]] = set()
    forced = {} if force is None or token is None else {VARIANT_HEADER: force, TOKEN_HEADER: token}

    async def one(client: httpx.AsyncClient, row: int) -> None:
        try:
            response = await client.post(
                predict_url, json={"instances": [features[row].tolist()]}, headers=forced
            )
        except httpx.HTTPError as error:
            stats.errors[type(error).__name__] += 1
            return
        variant = response.headers.get(VARIANT_HEADER, "?")
        stats.answers[(variant, response.status_code)] += 1
        request_id = response.headers.get("x-request-id")
        if response.status_code != 200 or not request_id:
            return
        headers = {VARIANT_HEADER: variant}
        replica = response.headers.get(REPLICA_HEADER)
        if replica:
            headers[REPLICA_HEADER] = replica
        if token is not None:
            headers[TOKEN_HEADER] = token
        try:
            answer = await client.post(
                feedback_url,
                json={"feedback": [{"request_id": request_id, "label": labels[row].item()}]},
                headers=headers,
            )
            stats.feedback_sent += 1
            if answer.status_code in (401, 403):
                stats.feedback_refused += 1
            elif answer.status_code == 200 and answer.json().get("matched") == 1:
                stats.feedback_joined += 1
        except (httpx.HTTPError, ValueError):
            pass  # feedback is best effort, as in a real application

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        sent = 0
        next_at = time.monotonic()
        while sent < max_requests and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                break
            task = asyncio.create_task(one(client, rng.randrange(len(features))))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if in_flight:
            await asyncio.wait(in_flight, timeout=15)
        # Still unanswered after that: given up before the client closes (counted, not lost
        # silently as errors of a closed client).
        for task in list(in_flight):
            task.cancel()
        if in_flight:
            stats.abandoned += len(in_flight)
            await asyncio.gather(*in_flight, return_exceptions=True)
    return stats


@contextlib.contextmanager
def background_traffic(
    base_url: str,
    model: str,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    rate: float,
    seconds: float,
    join_timeout: float = 30,
    token: str | None = None,
    force: str | None = None,
) -> Iterator[TrafficStats]:
    """:func:`run_traffic` on its own thread and event loop while the caller watches; stops
    when the block ends, or by itself after ``seconds``. ``token`` and ``force``: see
    :func:`run_traffic`."""
    stats = TrafficStats()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        loop.run_until_complete(
            run_traffic(
                base_url,
                model,
                features,
                labels,
                rate=rate,
                duration=seconds,
                max_requests=int(rate * seconds),
                stats=stats,
                stop=stop,
                token=token,
                force=force,
            )
        )

    thread = threading.Thread(target=run, name="traffic", daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=join_timeout)
        loop.close()
