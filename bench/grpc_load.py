"""A gRPC load generator for bench/run_serving_grpc.py: unary ModelInfer calls, closed loop.

``concurrency`` callers on one grpc.aio channel send the same serialized ModelInferRequest
for ``duration`` seconds (after a one-second warm-up) and take the answer as bytes: neither
side of the benchmark pays for the client's protobuf work. Prints one JSON line: requests,
errors, seconds, p50 and p99 latency (seconds).

Usage: python bench/grpc_load.py TARGET REQUEST_FILE CONCURRENCY DURATION
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import grpc
from grpc import aio

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _same(data: bytes) -> bytes:
    return data


async def main(target: str, body: bytes, concurrency: int, duration: float) -> None:
    async with aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD, request_serializer=_same, response_deserializer=_same)
        latencies: list[float] = []
        errors = 0
        measuring = False
        stop_at = time.perf_counter() + 1.0 + duration

        async def caller() -> None:
            nonlocal errors
            while (now := time.perf_counter()) < stop_at:
                try:
                    await call(body, timeout=10)
                except grpc.RpcError:
                    errors += 1
                    continue
                if measuring:
                    latencies.append(time.perf_counter() - now)

        tasks = [asyncio.create_task(caller()) for _ in range(concurrency)]
        await asyncio.sleep(1.0)
        measuring = True
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    print(
        json.dumps(
            {
                "requests": n,
                "errors": errors,
                "seconds": seconds,
                "p50": latencies[n // 2] if n else 0.0,
                "p99": latencies[min(n - 1, int(n * 0.99))] if n else 0.0,
            }
        )
    )


if __name__ == "__main__":
    target, path, c, d = sys.argv[1:5]
    asyncio.run(main(target, Path(path).read_bytes(), int(c), float(d)))
