"""The router's per-request Python cost, in process: no sockets, no kernel, no noise.

A development tool next to bench/run_router.py (not run by `make bench`): a real Proxy
with a real routing snapshot (90/10 split) and a pooled upstream connection, driven
through the same protocol callbacks uvloop calls, with transports that only collect what
is written. One "request" is a client request as wrk sends it and the model server's
answer to it. It reports the best of several batches (microseconds per request) for the
request leg (client bytes in -> upstream request written) and the response leg
(upstream bytes in -> client answer written, bookkeeping included), warm and with the CPU
caches flushed before each leg (closer to a real request on a core shared with the model
server, where the other processes evict the router's code and data).

Usage: .venv/bin/python bench/router_hotpath.py [--requests 20000] [--cold]
(pin it, e.g. `taskset -c 1 ...`, and compare two versions in the same minute.)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from typing import Any

import uvloop
from modelship_router.config import RoutingConfig
from modelship_router.endpoints import StaticEndpointSource
from modelship_router.metrics import RouterMetrics
from modelship_router.proxy import Proxy
from modelship_router.settings import RouterSettings
from modelship_router.state import RouterState
from modelship_router.upstream import Limits, UpstreamConnection

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
REQUEST = (
    b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ndate: Fri, 27 Nov 2026 12:28:15 GMT\r\n"
    b"content-type: application/json\r\ncontent-length: 21\r\nx-model-name: iris\r\n"
    b"x-model-version: 1.0.0\r\nx-model-variant: stable\r\n"
    b"x-request-id: 1af23c81dcfccde3-19152\r\n\r\n"
    b'{"predictions":[0,2]}'
)


class CollectingTransport:
    """Just enough of an asyncio transport: keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def measure(requests: int, cold: bool) -> None:
    loop = asyncio.get_running_loop()
    config = RoutingConfig.from_data(
        {
            "deployment": "bench",
            "variants": [
                {"name": "stable", "modelVersion": "1.0.0", "upstreams": ["127.0.0.1:1001"]},
                {
                    "name": "canary",
                    "modelVersion": "2.0.0",
                    "upstreams": ["127.0.0.1:1002"],
                    "weight": 10,
                },
            ],
        }
    )
    limits = Limits()
    state = RouterState(StaticEndpointSource(), limits, loop)
    state.apply(config)
    assert state.snapshot is not None
    proxy = Proxy(RouterSettings(deployment="bench"), state, RouterMetrics(), loop)
    upstream_transport = CollectingTransport()
    for variant in state.snapshot.variants.values():
        for upstream in variant.upstreams:
            conn = UpstreamConnection(upstream)
            conn.transport = upstream_transport  # type: ignore[assignment]
            conn.idle_since = loop.time()
            upstream.idle.append(conn)
    client_transport = CollectingTransport()
    client = proxy.protocol()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    junk = bytes(8 << 20)
    clock = time.perf_counter

    def batch(count: int, flush: bool) -> tuple[float, float]:
        request_leg = response_leg = 0.0
        for _ in range(count):
            if flush:
                hashlib.sha256(junk).digest()  # reads 8 MiB: evicts the caches
            t0 = clock()
            client.data_received(REQUEST)
            t1 = clock()
            upstream = next(iter(limits.in_flight))
            if flush:
                hashlib.sha256(junk).digest()
            t2 = clock()
            upstream.data_received(RESPONSE)
            t3 = clock()
            request_leg += t1 - t0
            response_leg += t3 - t2
        answers = client_transport.written
        if len(answers) != count or not answers[-1].startswith(b"HTTP/1.1 200 OK\r\n"):
            raise SystemExit(f"unexpected answers: {answers[-1:]!r}")
        answers.clear()
        upstream_transport.written.clear()
        return request_leg / count * 1e6, response_leg / count * 1e6

    batch(2000, False)  # warm-up (and a check that answers come back)
    modes = [("warm", False, requests)] + ([("cold", True, max(200, requests // 50))] * cold)
    for name, flush, count in modes:
        best = min((batch(count, flush) for _ in range(9)), key=sum)
        print(
            f"{name}: request leg {best[0]:.2f} us + response leg {best[1]:.2f} us "
            f"= {sum(best):.2f} us per request (best of 9 x {count})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--cold", action="store_true", help="also with caches flushed")
    args = parser.parse_args()
    uvloop.run(measure(args.requests, args.cold))


if __name__ == "__main__":
    main()
