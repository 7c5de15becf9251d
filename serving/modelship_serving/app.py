"""HTTP wiring: an ASGI front that stamps every response and measures it, a fast lane for the
inference endpoints of the served model, and a FastAPI app for everything else (and the docs).

Why a front of our own: FastAPI's routing, dependency solving and middleware stack cost more per
request than a one-row prediction does. The fast lane matches the few exact inference paths with
one dict lookup and calls the same DataPlane methods the FastAPI routes call.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .config import Settings
from .dataplane import DataPlane
from .errors import ModelLoadError, ServingError
from .fastpath import choose_path, quiet_feature_name_warnings
from .loading import LoadedModel, load_model
from .metrics import ServingMetrics
from .schemas import (
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    V1PredictRequest,
    V1PredictResponse,
    V2InferRequest,
    V2InferResponse,
    json_body,
)

log = logging.getLogger("modelship.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[bytes, str], Awaitable[bytes]]
# Bodies the protocol-level fast lane may take are also bounded by this, whatever the rows.
FAST_LANE_MAX_BODY = 1024 * 1024

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_JSON = b"application/json"
REQUEST_ID_SCOPE_KEY = "modelship.request_id"


@dataclass(frozen=True, slots=True)
class FastRoute:
    """An inference endpoint the protocol answers synchronously (see protocol.py)."""

    endpoint: str
    handler: Callable[[bytes, str], bytes]
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


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class ServerState:
    """What the probes report and what the handlers serve."""

    def __init__(self, settings: Settings, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.dataplane: DataPlane | None = None
        self.load_error: str | None = None
        self.draining = False
        self.on_load_failure: Callable[[str], None] | None = None

    @property
    def ready(self) -> bool:
        return self.dataplane is not None and not self.draining

    def not_ready_reason(self) -> str:
        if self.load_error:
            return f"model failed to load: {self.load_error}"
        if self.draining:
            return "shutting down: draining in-flight requests"
        return "model is loading"

    def begin_drain(self) -> None:
        """Readiness turns false first; requests keep being served until the server stops."""
        if not self.draining:
            log.info("drain started: readiness is now false, in-flight requests will finish")
        self.draining = True
        self.metrics.ready.set(0)


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


def _error(status: int, reason: str) -> Response:
    return Response(
        orjson.dumps({"error": reason}), status_code=status, media_type="application/json"
    )


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
        self.state = ServerState(settings, self.metrics)
        self._fast: dict[tuple[str, str], tuple[str, Handler]] = {}
        # Keyed by the raw request target, for the protocol-level lane (protocol.py).
        self.fast_routes: dict[bytes, FastRoute] = {}
        self._static = [
            (b"x-model-name", settings.model_name.encode()),
            (b"x-model-version", settings.model_version.encode()),
            (b"x-model-variant", settings.variant.encode()),
        ]
        self._static_block = b"".join(b"%s: %s\r\n" % pair for pair in self._static)
        self._load_task: asyncio.Task[None] | None = None
        self._id_prefix = os.urandom(8).hex() + "-"
        self._id_counter = itertools.count(1)
        self.api = self._build_api()

    # -- model loading -------------------------------------------------------------------------

    def install(self, loaded: LoadedModel) -> None:
        """Serve a loaded model: choose its inference path, publish metrics, open the fast lane."""
        settings = self.settings
        path = choose_path(loaded.estimator, settings.inference_path)
        sig = loaded.signature
        names = sig.feature_names or tuple(str(i) for i in range(sig.n_features))
        self.metrics.model_loaded(
            sha256=loaded.sha256,
            sklearn_version=sig.sklearn_version_runtime,
            sklearn_saved_version=sig.sklearn_version_saved,
            inference_path=path.name,
            estimator=sig.estimator_class,
            load_seconds=loaded.load_seconds,
            classes=sig.classes,
            feature_names=names[: settings.drift_max_features],
            drift_window=settings.drift_window,
        )
        plane = DataPlane(settings, loaded, path, self.metrics)
        self.state.dataplane = plane
        name, version = settings.model_name, settings.model_version
        # The served model's inference paths: (endpoint label, path, async handler for the ASGI
        # lane, synchronous handler for the protocol-level lane).
        inference = [
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
        limit = lane_max_body(sig.n_features, settings.inline_max_rows, settings.max_body_bytes)
        if settings.inline_max_rows > 0:
            self.fast_routes = {
                p.encode(): FastRoute(endpoint, now, limit) for endpoint, p, _, now in inference
            }
        if not self.state.draining:
            self.metrics.ready.set(1)
        log.info(
            "serving %s version %s (%s, %s, sha256 %s, inference path %s) loaded in %.3fs",
            name,
            version,
            sig.estimator_class,
            loaded.artifact_format,
            loaded.sha256[:12],
            path.name,
            loaded.load_seconds,
        )

    async def _load(self) -> None:
        try:
            loaded = await anyio.to_thread.run_sync(load_model, self.settings)
            self.install(loaded)
            # The libraries and the model live as long as the process: move them out of the
            # collector's sight, so a full collection scans only what requests allocate
            # instead of pausing the server for tens of milliseconds every few seconds.
            gc.collect()
            gc.freeze()
        except ModelLoadError as exc:
            self._load_failed(str(exc))
        except Exception as exc:
            log.exception("unexpected error while loading the model")
            self._load_failed(f"unexpected error: {exc!r}")

    def _load_failed(self, reason: str) -> None:
        self.state.load_error = reason
        log.error("cannot serve the model: %s", reason)
        if self.state.on_load_failure is not None:
            self.state.on_load_failure(reason)

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> Any:
        quiet_feature_name_warnings()
        if self.state.dataplane is None:
            self._load_task = asyncio.create_task(self._load())
        yield
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"]) or self._new_request_id()
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

    def _new_request_id(self) -> str:
        # Unique per process (random prefix) and cheap: a uuid4 costs more than a prediction.
        return f"{self._id_prefix}{next(self._id_counter):x}"

    def answer_now(
        self, route: FastRoute, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes, bytes]:
        """Serve one fast-lane request: (status, response header lines, body)."""
        request_id = request_id_from(headers) or self._new_request_id()
        status = 200
        try:
            payload = route.handler(body, request_id)
        except ServingError as exc:
            status, payload = exc.status, orjson.dumps({"error": exc.reason})
        except Exception:
            log.exception("error while serving %s", route.endpoint)
            status, payload = 500, b'{"error":"internal server error"}'
        head = (
            b"content-type: application/json\r\ncontent-length: %d\r\n%sx-request-id: %s\r\n\r\n"
            % (
                len(payload),
                self._static_block,
                request_id.encode(),
            )
        )
        return status, head, payload

    def _headers(
        self, request_id: str, length: int, content_type: bytes
    ) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", content_type),
            (b"content-length", str(length).encode()),
            *self._static,
            (b"x-request-id", request_id.encode()),
        ]

    async def _fast_lane(
        self, handler: Handler, request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> int:
        status = 200
        try:
            body = await _read_body(scope, receive, self.settings.max_body_bytes)
            payload = await handler(body, request_id)
        except ServingError as exc:
            status, payload = exc.status, orjson.dumps({"error": exc.reason})
        except ClientGone:
            return 499
        except Exception:
            log.exception("error while serving %s", scope["path"])
            status, payload = 500, b'{"error":"internal server error"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": self._headers(request_id, len(payload), _JSON),
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
                payload = b'{"error":"internal server error"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": self._headers(request_id, len(payload), _JSON),
                    }
                )
                await send({"type": "http.response.body", "body": payload})
            status = 500
        return status

    # -- FastAPI routes (metadata, probes, metrics, docs, and inference for other names) --------

    def _plane_for(self, name: str, version: str | None = None) -> DataPlane:
        settings = self.settings
        if name != settings.model_name:
            raise ServingError(
                404,
                f"model {name!r} is not served here; this server serves {settings.model_name!r}",
            )
        if version is not None and version != settings.model_version:
            raise ServingError(
                404,
                f"version {version!r} of {name!r} is not served here; "
                f"this server serves version {settings.model_version!r}",
            )
        plane = self.state.dataplane
        if plane is None:
            raise ServingError(503, self.state.not_ready_reason())
        return plane

    def _build_api(self) -> FastAPI:
        settings = self.settings
        state = self.state
        api = FastAPI(
            title="modelship model server",
            version=__version__,
            description=(
                f"Serves scikit-learn model {settings.model_name!r} version "
                f"{settings.model_version!r} ({settings.variant}) over KServe V1 and the Open "
                "Inference Protocol V2. Every response carries x-model-name, x-model-version, "
                "x-model-variant and x-request-id headers."
            ),
            lifespan=self._lifespan,
        )
        errors: dict[int | str, dict[str, Any]] = {
            code: {"model": ErrorBody} for code in (400, 404, 413, 422, 503)
        }

        @api.exception_handler(ServingError)
        async def serving_error(_: Request, exc: ServingError) -> Response:
            return _error(exc.status, exc.reason)

        @api.exception_handler(StarletteHTTPException)
        async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
            return _error(exc.status_code, str(exc.detail))

        @api.exception_handler(RequestValidationError)
        async def validation_error(_: Request, exc: RequestValidationError) -> Response:
            return _error(422, f"invalid request: {exc.errors()}")

        async def body_of(request: Request) -> bytes:
            try:
                return await _read_body(request.scope, request.receive, settings.max_body_bytes)
            except ClientGone:
                raise ServingError(400, "client disconnected") from None

        def rid(request: Request) -> str:
            return str(request.scope.get(REQUEST_ID_SCOPE_KEY) or uuid.uuid4().hex)

        def json_response(payload: bytes) -> Response:
            return Response(payload, media_type="application/json")

        @api.get("/v2/health/live", tags=["probes"], summary="Liveness: the process serves HTTP")
        async def live() -> dict[str, bool]:
            return {"live": True}

        @api.get(
            "/v2/health/ready",
            tags=["probes"],
            summary="Readiness: the model is loaded and the server is not shutting down",
            responses={503: {"model": ErrorBody}},
        )
        async def ready() -> Response:
            if state.ready:
                return json_response(b'{"ready":true}')
            return Response(
                orjson.dumps({"ready": False, "error": state.not_ready_reason()}),
                status_code=503,
                media_type="application/json",
            )

        @api.get("/metrics", tags=["probes"], summary="Prometheus metrics")
        async def metrics() -> Response:
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        @api.get("/v2", tags=["v2"], summary="Server metadata")
        async def server_metadata() -> dict[str, Any]:
            return {"name": "modelship", "version": __version__, "extensions": []}

        def v2_metadata(name: str, version: str | None) -> dict[str, Any]:
            plane = self._plane_for(name, version)
            sig = plane.signature
            outputs = [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
            if sig.has_predict_proba:
                n = len(sig.classes or ())
                outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, n]})
            return {
                "name": settings.model_name,
                "versions": [settings.model_version],
                "platform": "scikit-learn",
                "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, sig.n_features]}],
                "outputs": outputs,
                "parameters": {
                    **sig.as_json(),
                    "variant": settings.variant,
                    "sha256": plane.model.sha256,
                    "inference_path": plane.path.name,
                },
            }

        @api.get("/v2/models/{name}", tags=["v2"], summary="Model metadata", responses=errors)
        async def model_metadata(name: str) -> dict[str, Any]:
            return v2_metadata(name, None)

        @api.get(
            "/v2/models/{name}/versions/{version}",
            tags=["v2"],
            summary="Model metadata (one version)",
            responses=errors,
        )
        async def model_version_metadata(name: str, version: str) -> dict[str, Any]:
            return v2_metadata(name, version)

        def model_ready(name: str, version: str | None) -> Response:
            self._plane_for(name, version)
            if not state.ready:
                raise ServingError(503, state.not_ready_reason())
            return json_response(orjson.dumps({"name": name, "ready": True}))

        @api.get(
            "/v2/models/{name}/ready", tags=["v2"], summary="Model readiness", responses=errors
        )
        async def v2_model_ready(name: str) -> Response:
            return model_ready(name, None)

        @api.get(
            "/v2/models/{name}/versions/{version}/ready",
            tags=["v2"],
            summary="Model readiness (one version)",
            responses=errors,
        )
        async def v2_model_version_ready(name: str, version: str) -> Response:
            return model_ready(name, version)

        infer_doc = {
            "tags": ["v2"],
            "responses": {200: {"model": V2InferResponse}, **errors},
            "openapi_extra": json_body(V2InferRequest),
        }

        @api.post("/v2/models/{name}/infer", summary="Infer (Open Inference Protocol)", **infer_doc)
        async def v2_infer(name: str, request: Request) -> Response:
            plane = self._plane_for(name)
            return json_response(await plane.v2_infer(await body_of(request), rid(request)))

        @api.post(
            "/v2/models/{name}/versions/{version}/infer",
            summary="Infer on one version (Open Inference Protocol)",
            **infer_doc,
        )
        async def v2_version_infer(name: str, version: str, request: Request) -> Response:
            plane = self._plane_for(name, version)
            return json_response(await plane.v2_infer(await body_of(request), rid(request)))

        @api.get("/v1/models", tags=["v1"], summary="List served models")
        async def v1_models() -> dict[str, list[str]]:
            return {"models": [settings.model_name]}

        @api.get("/v1/models/{name}", tags=["v1"], summary="Model status", responses=errors)
        async def v1_model(name: str) -> dict[str, Any]:
            if name != settings.model_name:
                self._plane_for(name)
            plane = state.dataplane
            return {
                "name": settings.model_name,
                "version": settings.model_version,
                "variant": settings.variant,
                "ready": state.ready,
                "signature": plane.signature.as_json() if plane else None,
            }

        @api.post(
            "/v1/models/{name}:predict",
            tags=["v1"],
            summary="Predict (KServe V1)",
            responses={200: {"model": V1PredictResponse}, **errors},
            openapi_extra=json_body(V1PredictRequest),
        )
        async def v1_predict(name: str, request: Request) -> Response:
            plane = self._plane_for(name)
            return json_response(await plane.v1_predict(await body_of(request), rid(request)))

        @api.post(
            "/v1/models/{name}:feedback",
            tags=["v1"],
            summary="Ground truth for earlier predictions, by request id",
            responses={200: {"model": FeedbackResponse}, **errors},
            openapi_extra=json_body(FeedbackRequest),
        )
        async def v1_feedback(name: str, request: Request) -> Response:
            plane = self._plane_for(name)
            return json_response(plane.feedback(await body_of(request)))

        return api


def create_app(settings: Settings, *, model: LoadedModel | None = None) -> ModelServerApp:
    """Build the server for ``settings``; the model loads in the background unless given."""
    app = ModelServerApp(settings)
    if model is not None:
        app.install(model)
    return app
