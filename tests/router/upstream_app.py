"""A small real upstream for router tests: echoes which upstream answered and what it got.

Run with uvicorn (``--app-dir tests/router upstream_app:app``). Behaviour, from the
environment: ``UPSTREAM_NAME`` (echoed), ``UPSTREAM_DELAY`` (seconds before answering),
``UPSTREAM_STATUS`` (status code), ``UPSTREAM_MODEL_VERSION`` (sent as x-model-version),
``UPSTREAM_DIE_MID_ANSWER`` (the process SIGKILLs itself after sending half an answer,
as a pod OOM-killed while answering would).
Per request: headers ``x-test-delay`` and ``x-test-status`` override the same.
``GET /_stats`` returns how many requests (and mirrored copies) arrived;
``GET /_stream?parts=N&size=M`` answers N chunks of M bytes, chunked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

NAME = os.environ.get("UPSTREAM_NAME", "upstream")
DELAY = float(os.environ.get("UPSTREAM_DELAY", "0"))
STATUS = int(os.environ.get("UPSTREAM_STATUS", "200"))
VERSION = os.environ.get("UPSTREAM_MODEL_VERSION")
DIE_MID_ANSWER = os.environ.get("UPSTREAM_DIE_MID_ANSWER") == "1"

stats = {"requests": 0, "mirrored": 0}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    if scope["path"] == "/_stats":
        await _send(send, 200, json.dumps(stats).encode(), [])
        return
    if scope["path"] == "/_stream":
        # A chunked response (no content-length): parts x size bytes of "x".
        query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
        parts, size = int(query.get("parts", "3")), int(query.get("size", "10"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(parts):
            chunk = b"x" * size
            await send({"type": "http.response.body", "body": chunk, "more_body": i < parts - 1})
        return
    stats["requests"] += 1
    if headers.get("x-modelship-mirror") == "1":
        stats["mirrored"] += 1
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    delay = float(headers.get("x-test-delay", DELAY))
    if delay:
        await asyncio.sleep(delay)
    status = int(headers.get("x-test-status", STATUS))
    payload = {
        "upstream": NAME,
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode(),
        "headers": headers,
        "body": body.decode("utf-8", "replace"),
    }
    extra = [(b"x-model-version", VERSION.encode())] if VERSION else []
    if DIE_MID_ANSWER:
        head = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": b'{"upstream": "', "more_body": True})
        await asyncio.sleep(0.2)  # let the partial answer reach the router
        os.kill(os.getpid(), signal.SIGKILL)
    await _send(send, status, json.dumps(payload).encode(), extra)


async def _send(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
