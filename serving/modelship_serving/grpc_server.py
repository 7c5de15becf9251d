"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``) on its own
port, in the HTTP server's process and event loop, serving the same loaded model.

ModelInfer goes through the same data plane as ``POST /v2/models/NAME/infer``
(:meth:`DataPlane.v2_predict`): the same validation, the same metrics (handler
``grpc_infer``, ``code`` the HTTP status the same request gets over HTTP) and the same
prediction store for feedback (keyed by the ``x-request-id`` metadata, or an id the server
makes and sends back as ``x-request-id`` initial metadata; ``x-modelship-pinned: 1``
metadata marks a tester's prediction, and ``x-modelship-unit`` its unit, as the HTTP headers
do). A refusal is a gRPC status with the reason as its details: INVALID_ARGUMENT for client
input, NOT_FOUND for another model, UNAVAILABLE before the model is loaded; INTERNAL only
for a server bug. While draining, calls are still answered (ServerReady and ModelReady say
false), as over HTTP.

The methods are registered by name with a generic handler (the messages come from
``oip/``, generated from serving/proto/grpc_predict_v2.proto), so no generated servicer
is needed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc import aio

from . import __version__
from . import contract as c
from .access import unit_from
from .app import ModelServerApp
from .errors import ServingError
from .grpc_codec import infer_response, payload_of
from .oip import grpc_predict_v2_pb2 as pb

log = logging.getLogger("modelship.serving")

SERVICE = "inference.GRPCInferenceService"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status of a refusal the HTTP path answers with ``status``."""
    if status == 404:
        return grpc.StatusCode.NOT_FOUND
    if status == 503:
        return grpc.StatusCode.UNAVAILABLE
    if status < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _pinned(context: aio.ServicerContext[Any, Any]) -> bool:
    """Whether the router marked the call as a tester's (``x-modelship-pinned: 1``)."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-modelship-pinned":
            return isinstance(value, str) and value.strip() == "1"
    return False


def _unit(context: aio.ServicerContext[Any, Any]) -> str | None:
    """The call's unit (``x-modelship-unit`` metadata, set by the router for a sticky key)."""
    for key, value in context.invocation_metadata() or ():
        if key == c.UNIT_HEADER:
            return unit_from(value) if isinstance(value, str) else None
    return None


def _request_id(context: aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str):
            return value if _REQUEST_ID.fullmatch(value) else None
    return None


async def _abort(
    context: aio.ServicerContext[Any, Any], code: grpc.StatusCode, reason: str
) -> NoReturn:
    await context.abort(code, reason)
    raise AssertionError("context.abort returned")  # it raises: the call ends with ``code``


class InferenceService:
    """The six methods of ``inference.GRPCInferenceService`` over one ModelServerApp."""

    def __init__(self, app: ModelServerApp) -> None:
        self.app = app
        self.settings = app.settings
        self.lifecycle = app.lifecycle
        self.metrics = app.metrics
        settings = app.settings
        self._static = (
            ("x-model-name", settings.model_name),
            ("x-model-version", settings.model_version),
            ("x-model-variant", settings.variant),
        )

    async def server_live(
        self, _: pb.ServerLiveRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(
        self, _: pb.ServerReadyRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.lifecycle.ready)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        try:
            self.lifecycle.plane_for(request.name, request.version or None)
        except ServingError as exc:
            if exc.status == 503:
                return pb.ModelReadyResponse(ready=False)
            await _abort(context, grpc_code(exc.status), exc.reason)
        return pb.ModelReadyResponse(ready=self.lifecycle.ready)

    async def server_metadata(
        self, _: pb.ServerMetadataRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="modelship", version=__version__, extensions=[])

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        try:
            plane = self.lifecycle.plane_for(request.name, request.version or None)
        except ServingError as exc:
            await _abort(context, grpc_code(exc.status), exc.reason)
        sig = plane.signature
        response = pb.ModelMetadataResponse(
            name=self.settings.model_name,
            versions=[self.settings.model_version],
            platform="scikit-learn",
        )
        for tensor in sig.v2_inputs():
            response.inputs.add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
            )
        for tensor in sig.v2_outputs():
            response.outputs.add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
            )
        return response

    async def model_infer(
        self, request: pb.ModelInferRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        request_id = _request_id(context) or self.app.new_request_id()
        hot = self.metrics.hot
        hot.in_flight += 1
        status = 200
        try:
            await context.send_initial_metadata((*self._static, ("x-request-id", request_id)))
            plane = self.lifecycle.plane_for(request.model_name, request.model_version or None)
            result = await plane.v2_predict(
                payload_of(request), request_id, _pinned(context), _unit(context)
            )
            settings = self.settings
            return infer_response(
                settings.model_name,
                settings.model_version,
                result.own_id or request_id,
                result.outputs,
                result.prediction,
            )
        except ServingError as exc:
            status = exc.status
            await _abort(context, grpc_code(status), exc.reason)
        except aio.AbortError:
            raise
        except Exception:
            status = 500
            log.exception("error while serving ModelInfer")
            await _abort(context, grpc.StatusCode.INTERNAL, "internal error")
        finally:
            hot.in_flight -= 1
            self.metrics.observe_request(c.GRPC_INFER, status, time.perf_counter() - started)

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(
            method: Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]],
            request_type: Any,
            response_type: Any,
        ) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
                "ServerReady": unary(
                    self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse
                ),
                "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
                "ServerMetadata": unary(
                    self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
                ),
                "ModelMetadata": unary(
                    self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse
                ),
                "ModelInfer": unary(self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            },
        )


async def start_grpc(app: ModelServerApp) -> aio.Server:
    """Listen on ``settings.grpc_port`` in the running event loop."""
    settings = app.settings
    limit = settings.max_body_bytes
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((InferenceService(app).handler(),))
    host = settings.host
    address = f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("gRPC (%s) listening on %s", SERVICE, address)
    return server
