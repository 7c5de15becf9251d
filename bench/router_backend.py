"""Fallback benchmark backend: a minimal JSON predict endpoint on uvicorn (raw ASGI).

Used by bench/run_router.py only when the real model server (modelship-serve) cannot be
started. Answers any POST with {"predictions": [0]} and any GET with {"status": "ok"}.
Run: uvicorn --app-dir bench router_backend:app
"""

from __future__ import annotations

from typing import Any

PREDICTION = b'{"predictions":[0]}'
HEADERS = [(b"content-type", b"application/json"), (b"x-model-version", b"bench")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = PREDICTION if scope["method"] == "POST" else b'{"status":"ok"}'
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": body})
