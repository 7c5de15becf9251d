"""The HTTP API: one ``Endpoints`` method per operation and a route table that maps them.

As in MLServer (``rest/endpoints.py`` + ``rest/app.py``) and KServe (``protocol/rest``): the
methods hold what each operation does and call the data plane; the table says where each is
served and how the OpenAPI document describes it. ``build_api`` turns both into a FastAPI app.
The served model's inference paths are also answered by the ASGI front and the protocol lane
(app.py, protocol.py) before FastAPI, with the same data-plane methods.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .access import FeedbackGate, is_pinned, unit_of
from .config import Settings
from .errors import ServingError
from .lifecycle import ModelLifecycle
from .metrics import ServingMetrics
from .responses import error_response, json_response, reply_response
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

REQUEST_ID_SCOPE_KEY = "modelship.request_id"
BodyReader = Callable[[Request], Awaitable[bytes]]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 422, 503)
}
_FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    401: {"model": ErrorBody, "description": "feedback needs the x-modelship-token header"},
    403: {"model": ErrorBody, "description": "feedback is off, or the token is invalid"},
}


def request_id_of(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID_SCOPE_KEY) or uuid.uuid4().hex)


def pinned_of(request: Request) -> bool:
    """Whether the router marked the request as a tester's (``x-modelship-pinned: 1``)."""
    return is_pinned(request.scope["headers"])


def unit_of_request(request: Request) -> str | None:
    """The request's unit (``x-modelship-unit``, set by the router for a sticky key)."""
    return unit_of(request.scope["headers"])


def header_length_of(request: Request) -> int | None:
    """The binary extension's ``Inference-Header-Content-Length``, when sent."""
    value = request.headers.get("inference-header-content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ServingError(
            400, "Inference-Header-Content-Length must be a whole number of bytes"
        ) from None


class Endpoints:
    """What each operation of the API does (the route table says where it is served)."""

    def __init__(
        self,
        settings: Settings,
        lifecycle: ModelLifecycle,
        metrics: ServingMetrics,
        read_body: BodyReader,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.read_body = read_body
        self.feedback_gate = FeedbackGate.from_settings(
            settings.feedback_enabled, settings.feedback_token_file
        )

    # -- probes and server -----------------------------------------------------------------

    async def live(self) -> dict[str, bool]:
        return {"live": True}

    async def ready(self) -> Response:
        if self.lifecycle.ready:
            return json_response(b'{"ready":true}')
        return Response(
            b'{"ready":false,"error":' + _json_string(self.lifecycle.not_ready_reason()) + b"}",
            status_code=503,
            media_type="application/json",
        )

    async def prometheus(self) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def server_metadata(self) -> dict[str, Any]:
        return {"name": "modelship", "version": __version__, "extensions": ["binary_tensor_data"]}

    # -- V2 ----------------------------------------------------------------------------------

    def _v2_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        plane = self.lifecycle.plane_for(name, version)
        settings = self.settings
        sig = plane.signature
        drift = self.metrics.drift
        return {
            "name": settings.model_name,
            "versions": [settings.model_version],
            "platform": "scikit-learn",
            "inputs": sig.v2_inputs(),
            "outputs": sig.v2_outputs(),
            "parameters": {
                **sig.as_json(),
                "variant": settings.variant,
                "sha256": plane.model.sha256,
                "inference_path": plane.path.name,
                "drift_reference": drift is not None and drift.has_reference,
            },
        }

    async def model_metadata(self, name: str) -> dict[str, Any]:
        return self._v2_metadata(name, None)

    async def model_version_metadata(self, name: str, version: str) -> dict[str, Any]:
        return self._v2_metadata(name, version)

    def _model_ready(self, name: str, version: str | None) -> Response:
        self.lifecycle.plane_for(name, version)
        if not self.lifecycle.ready:
            raise ServingError(503, self.lifecycle.not_ready_reason())
        return json_response(b'{"name":' + _json_string(name) + b',"ready":true}')

    async def model_ready(self, name: str) -> Response:
        return self._model_ready(name, None)

    async def model_version_ready(self, name: str, version: str) -> Response:
        return self._model_ready(name, version)

    async def infer(self, name: str, request: Request) -> Response:
        plane = self.lifecycle.plane_for(name)
        body = await self.read_body(request)
        return reply_response(
            await plane.v2_infer(
                body,
                request_id_of(request),
                header_length_of(request),
                pinned_of(request),
                unit_of_request(request),
            )
        )

    async def version_infer(self, name: str, version: str, request: Request) -> Response:
        plane = self.lifecycle.plane_for(name, version)
        body = await self.read_body(request)
        return reply_response(
            await plane.v2_infer(
                body,
                request_id_of(request),
                header_length_of(request),
                pinned_of(request),
                unit_of_request(request),
            )
        )

    # -- V1 ----------------------------------------------------------------------------------

    async def v1_models(self) -> dict[str, list[str]]:
        return {"models": [self.settings.model_name]}

    async def v1_model(self, name: str) -> dict[str, Any]:
        settings = self.settings
        if name != settings.model_name:
            self.lifecycle.plane_for(name)
        plane = self.lifecycle.dataplane
        return {
            "name": settings.model_name,
            "version": settings.model_version,
            "variant": settings.variant,
            "ready": self.lifecycle.ready,
            "signature": plane.signature.as_json() if plane else None,
        }

    async def predict(self, name: str, request: Request) -> Response:
        plane = self.lifecycle.plane_for(name)
        body = await self.read_body(request)
        return json_response(
            await plane.v1_predict(
                body, request_id_of(request), None, pinned_of(request), unit_of_request(request)
            )
        )

    async def feedback(self, name: str, request: Request) -> Response:
        # Who may send feedback is decided before the body is read (access.py).
        self.feedback_gate.check(request.scope["headers"])
        plane = self.lifecycle.plane_for(name)
        return json_response(plane.feedback(await self.read_body(request)))


def _json_string(text: str) -> bytes:
    return orjson.dumps(text)


@dataclass(frozen=True)
class Route:
    """One row of the route table."""

    method: str
    path: str
    endpoint: str  # the Endpoints method
    summary: str
    tags: tuple[str, ...]
    doc: dict[str, Any] = field(default_factory=dict)


_INFER_DOC = {
    "responses": {200: {"model": V2InferResponse}, **_ERRORS},
    "openapi_extra": json_body(V2InferRequest),
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", "live", "Liveness: the process serves HTTP", ("probes",)),
    Route(
        "GET",
        "/v2/health/ready",
        "ready",
        "Readiness: the model is loaded and the server is not shutting down",
        ("probes",),
        {"responses": {503: {"model": ErrorBody}}},
    ),
    Route("GET", "/metrics", "prometheus", "Prometheus metrics", ("probes",)),
    Route("GET", "/v2", "server_metadata", "Server metadata", ("v2",)),
    Route(
        "GET",
        "/v2/models/{name}",
        "model_metadata",
        "Model metadata",
        ("v2",),
        {"responses": _ERRORS},
    ),
    Route(
        "GET",
        "/v2/models/{name}/versions/{version}",
        "model_version_metadata",
        "Model metadata (one version)",
        ("v2",),
        {"responses": _ERRORS},
    ),
    Route(
        "GET",
        "/v2/models/{name}/ready",
        "model_ready",
        "Model readiness",
        ("v2",),
        {"responses": _ERRORS},
    ),
    Route(
        "GET",
        "/v2/models/{name}/versions/{version}/ready",
        "model_version_ready",
        "Model readiness (one version)",
        ("v2",),
        {"responses": _ERRORS},
    ),
    Route(
        "POST",
        "/v2/models/{name}/infer",
        "infer",
        "Infer (Open Inference Protocol)",
        ("v2",),
        _INFER_DOC,
    ),
    Route(
        "POST",
        "/v2/models/{name}/versions/{version}/infer",
        "version_infer",
        "Infer on one version (Open Inference Protocol)",
        ("v2",),
        _INFER_DOC,
    ),
    Route("GET", "/v1/models", "v1_models", "List served models", ("v1",)),
    Route("GET", "/v1/models/{name}", "v1_model", "Model status", ("v1",), {"responses": _ERRORS}),
    Route(
        "POST",
        "/v1/models/{name}:predict",
        "predict",
        "Predict (KServe V1)",
        ("v1",),
        {
            "responses": {200: {"model": V1PredictResponse}, **_ERRORS},
            "openapi_extra": json_body(V1PredictRequest),
        },
    ),
    Route(
        "POST",
        "/v1/models/{name}:feedback",
        "feedback",
        "Ground truth for earlier predictions, by request id",
        ("v1",),
        {
            "responses": {200: {"model": FeedbackResponse}, **_FEEDBACK_ERRORS},
            "openapi_extra": json_body(FeedbackRequest),
        },
    ),
)


def build_api(
    settings: Settings,
    endpoints: Endpoints,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
) -> FastAPI:
    """A FastAPI app serving ``ROUTES`` with ``endpoints``; every error is ``{"error": ...}``."""
    api = FastAPI(
        title="modelship model server",
        version=__version__,
        description=(
            f"Serves scikit-learn model {settings.model_name!r} version "
            f"{settings.model_version!r} ({settings.variant}) over KServe V1 and the Open "
            "Inference Protocol V2 (with its binary tensor extension). Every response carries "
            "x-model-name, x-model-version, x-model-variant and x-request-id headers."
        ),
        lifespan=lifespan,
    )

    async def serving_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServingError)
        return error_response(exc.status, exc.reason)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail))

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, f"invalid request: {exc.errors()}")

    api.add_exception_handler(ServingError, serving_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(RequestValidationError, validation_error)
    for route in ROUTES:
        api.add_api_route(
            route.path,
            getattr(endpoints, route.endpoint),
            methods=[route.method],
            summary=route.summary,
            tags=list(route.tags),
            **route.doc,
        )
    return api
