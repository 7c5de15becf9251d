"""The ASGI front uvicorn runs: it stamps every response (model headers, request id),
measures it, and answers the served model's inference paths itself before FastAPI sees them.

Why a front of our own: FastAPI's routing, dependency solving and middleware stack cost more per
request than a one-row prediction does. The front matches the few exact inference paths with one
dict lookup and calls the same DataPlane methods the routes in endpoints.py call; everything
else (metadata, probes, metrics, docs, other names) goes to the FastAPI app built there. The
model's loading and readiness live in lifecycle.py, error bodies in responses.py.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request

from .access import is_pinned, unit_of
from .config import Settings
from .dataplane import DataPlane
from .endpoints import REQUEST_ID_SCOPE_KEY, Endpoints, build_api
from .errors import ServingError
from .lifecycle import ModelLifecycle
from .loading import LoadedModel
from .metrics import ServingMetrics
from .responses import HEADER_LENGTH, INTERNAL_ERROR, JSON, Reply, error_body

log = logging.getLogger("modelship.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# (body, request id, Inference-Header-Content-Length, pinned, unit) -> answer
Handler = Callable[[bytes, str, int | None, bool, str | None], Awaitable[bytes | Reply]]
NowHandler = Callable[[bytes, str, bool, str | None], bytes | Reply]
# Bodies the protocol-level fast lane may take are also bounded by this, whatever the rows.
FAST_LANE_MAX_BODY = 1024 * 1024

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass(frozen=True, slots=True)
class FastRoute:
    """An inference endpoint the protocol answers synchronously (see protocol.py)."""

    endpoint: str
    handler: NowHandler
    max_body: int


def lane_max_body(n_features: int, inline_max_rows: int, max_body_bytes: int) -> int:
    """The largest body that cannot hold more than ``inline_max_rows`` rows: every feature value
    takes at least two bytes (a digit and a separator), so a row at least 2 * features."""
    return min(
        2 * max(n_features, 1) * (inline_max_rows + 1) - 1, max_body_bytes, FAST_LANE_MAX_BODY
    )


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The client's x-request-id when it is a sane token (else the server makes one)."""
    for key, value in headers:
        if key == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.fullmatch(text) else None
    return None


def header_length_from(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The binary extension's ``Inference-Header-Content-Length`` (JSON bytes before the
    tensors), when sent."""
    for key, value in headers:
        if key == HEADER_LENGTH:
            try:
                return int(value)
            except ValueError:
                raise ServingError(
                    400, "Inference-Header-Content-Length must be a whole number of bytes"
                ) from None
    return None


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


def endpoint_of(path: str) -> str:
    """Bounded endpoint label for metrics."""
    if path.startswith("/v1/models/"):
        if path.endswith(":predict"):
            return "v1_predict"
        if path.endswith(":feedback"):
            return "v1_feedback"
        return "metadata"
    if path.startswith("/v2/models/"):
        return "v2_infer" if path.endswith("/infer") else "metadata"
    if path.startswith("/v2/health/"):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path in ("/v1/models", "/v2"):
        return "metadata"
    if path in ("/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"):
        return "docs"
    return "other"


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise ServingError(400, "invalid Content-Length header") from None
            if declared > limit:
                raise ServingError(
                    413, f"body of {declared} bytes exceeds the limit of {limit} bytes"
                )
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise ServingError(413, f"body exceeds the limit of {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ServingError(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class ModelServerApp:
    """The ASGI application uvicorn runs (see module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ServingMetrics(settings.model_name, settings.model_version, settings.variant)
        self.lifecycle = ModelLifecycle(settings, self.metrics)
        self.lifecycle.on_install.append(self._open_lanes)
        self._fast: dict[tuple[str, str], tuple[str, Handler]] = {}
        # Keyed by the raw request target, for the protocol-level lane (protocol.py).
        self.fast_routes: dict[bytes, FastRoute] = {}
        self._static = [
            (b"x-model-name", settings.model_name.encode()),
            (b"x-model-version", settings.model_version.encode()),
            (b"x-model-variant", settings.variant.encode()),
        ]
        self._static_block = b"".join(b"%s: %s\r\n" % pair for pair in self._static)
        self._id_prefix = os.urandom(8).hex() + "-"
        self._id_counter = itertools.count(1)
        self.endpoints = Endpoints(settings, self.lifecycle, self.metrics, self._request_body)
        self.api = build_api(settings, self.endpoints, self._lifespan)

    # -- the served model's lanes --------------------------------------------------------------

    def install(self, loaded: LoadedModel) -> DataPlane:
        """Serve ``loaded`` now (tests and embedders; the server loads in the background)."""
        return self.lifecycle.install(loaded)

    def _open_lanes(self, plane: DataPlane) -> None:
        settings = self.settings
        name, version = settings.model_name, settings.model_version
        # The served model's inference paths: (endpoint label, path, async handler for the ASGI
        # lane, synchronous handler for the protocol-level lane).
        inference: list[tuple[str, str, Handler, NowHandler]] = [
            ("v1_predict", f"/v1/models/{name}:predict", plane.v1_predict, plane.v1_predict_now),
            ("v2_infer", f"/v2/models/{name}/infer", plane.v2_infer, plane.v2_infer_now),
            (
                "v2_infer",
                f"/v2/models/{name}/versions/{version}/infer",
                plane.v2_infer,
                plane.v2_infer_now,
            ),
        ]
        self._fast = {("POST", p): (endpoint, handler) for endpoint, p, handler, _ in inference}
        limit = lane_max_body(
            plane.signature.n_features, settings.inline_max_rows, settings.max_body_bytes
        )
        if settings.inline_max_rows > 0:
            self.fast_routes = {
                p.encode(): FastRoute(endpoint, now, limit) for endpoint, p, _, now in inference
            }

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        self.lifecycle.start()
        yield
        self.lifecycle.stop()

    async def _request_body(self, request: Request) -> bytes:
        try:
            return await _read_body(request.scope, request.receive, self.settings.max_body_bytes)
        except ClientGone:
            raise ServingError(400, "client disconnected") from None

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"]) or self.new_request_id()
        hot = self.metrics.hot
        hot.in_flight += 1
        try:
            route = self._fast.get((scope["method"], scope["path"]))
            if route is not None:
                endpoint = route[0]
                status = await self._fast_lane(route[1], request_id, scope, receive, send)
            else:
                endpoint = endpoint_of(scope["path"])
                status = await self._framework(request_id, scope, receive, send)
        finally:
            hot.in_flight -= 1
        self.metrics.observe_request(endpoint, status, time.perf_counter() - started)

    def new_request_id(self) -> str:
        # Unique per process (random prefix) and cheap: a uuid4 costs more than a prediction.
        return f"{self._id_prefix}{next(self._id_counter):x}"

    def answer_now(
        self, route: FastRoute, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes, bytes]:
        """Serve one fast-lane request: (status, response header lines, body)."""
        request_id = request_id_from(headers) or self.new_request_id()
        status = 200
        content_type, extra = JSON, b""
        try:
            payload = route.handler(body, request_id, is_pinned(headers), unit_of(headers))
        except ServingError as exc:
            status, payload = exc.status, error_body(exc.reason)
        except Exception:
            log.exception("error while serving %s", route.endpoint)
            status, payload = 500, INTERNAL_ERROR
        if type(payload) is not bytes:
            assert isinstance(payload, Reply)
            content_type = payload.content_type
            extra = b"".join(b"%s: %s\r\n" % pair for pair in payload.headers)
            payload = payload.body
        head = b"content-type: %s\r\ncontent-length: %d\r\n%s%sx-request-id: %s\r\n\r\n" % (
            content_type,
            len(payload),
            extra,
            self._static_block,
            request_id.encode(),
        )
        return status, head, payload

    def _headers(
        self,
        request_id: str,
        length: int,
        content_type: bytes,
        extra: Iterable[tuple[bytes, bytes]] = (),
    ) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", content_type),
            (b"content-length", str(length).encode()),
            *extra,
            *self._static,
            (b"x-request-id", request_id.encode()),
        ]

    async def _fast_lane(
        self, handler: Handler, request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> int:
        status = 200
        content_type: bytes = JSON
        extra: tuple[tuple[bytes, bytes], ...] = ()
        try:
            body = await _read_body(scope, receive, self.settings.max_body_bytes)
            headers = scope["headers"]
            payload = await handler(
                body, request_id, header_length_from(headers), is_pinned(headers), unit_of(headers)
            )
        except ServingError as exc:
            status, payload = exc.status, error_body(exc.reason)
        except ClientGone:
            return 499
        except Exception:
            log.exception("error while serving %s", scope["path"])
            status, payload = 500, INTERNAL_ERROR
        if type(payload) is not bytes:
            assert isinstance(payload, Reply)
            content_type, extra, payload = payload.content_type, payload.headers, payload.body
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": self._headers(request_id, len(payload), content_type, extra),
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return status

    async def _framework(self, request_id: str, scope: Scope, receive: Receive, send: Send) -> int:
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        extra = [*self._static, (b"x-request-id", request_id.encode())]
        status = 500
        started = False

        async def stamped_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if not h[0].startswith(b"x-model-")),
                    *extra,
                ]
            await send(message)

        try:
            await self.api(scope, receive, stamped_send)
        except Exception:
            log.exception("error while serving %s", scope["path"])
            if not started:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": self._headers(request_id, len(INTERNAL_ERROR), JSON),
                    }
                )
                await send({"type": "http.response.body", "body": INTERNAL_ERROR})
            status = 500
        return status


def create_app(settings: Settings, *, model: LoadedModel | None = None) -> ModelServerApp:
    """Build the server for ``settings``; the model loads in the background unless given."""
    app = ModelServerApp(settings)
    if model is not None:
        app.install(model)
    return app
