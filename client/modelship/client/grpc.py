"""The gRPC transport: the Open Inference Protocol's ``inference.GRPCInferenceService``.

>>> from modelship.client.grpc import GrpcClient
>>> with GrpcClient("churn.ml:8081", "churn") as client:  # doctest: +SKIP
...     answer = client.predict(frame, probabilities=True)

Needs the ``grpc`` extra (``pip install 'modelship-client[grpc]'``: grpcio and protobuf).
The same inputs and answers as :class:`~modelship.client.ModelshipClient` with
``protocol="v2"`` (a DataFrame is sent as one tensor per column, an array as one
``[rows, features]`` tensor, both as raw contents), and the same typed errors, mapped from
the gRPC status: INVALID_ARGUMENT is :class:`~modelship.client.InvalidInput`, NOT_FOUND
:class:`~modelship.client.ModelNotFound`, UNAVAILABLE :class:`~modelship.client.NotReady`
when the server said why, else :class:`~modelship.client.ConnectionFailed`. Feedback is
HTTP only: send it with :meth:`ModelshipClient.feedback` and the prediction's request id.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from ._client import ModelMetadata, Prediction, _shaped, _shaped_proba
from .codec import _bytes_tensor, _column_datatype, _decode_bytes, _plain, is_frame
from .errors import (
    ConnectionFailed,
    ModelshipError,
    ProtocolError,
    ServerError,
    Timeout,
    error_for,
)
from .oip import grpc_predict_v2_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
_WIRE = {"BOOL": "|b1", "INT64": "<i8", "FP64": "<f8", "FP32": "<f4", "INT32": "<i4"}
_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def encode_request(
    model: str, version: str | None, data: Any, outputs: list[str]
) -> pb.ModelInferRequest:
    """A ModelInferRequest for a DataFrame (``content_type: pd``) or a 2-D array."""
    request = pb.ModelInferRequest(model_name=model, model_version=version or "")
    if is_frame(data):
        request.parameters["content_type"].string_param = "pd"
        for name in data.columns:
            series = data[name]
            datatype = _column_datatype(series)
            values = [_plain(v) for v in series.tolist()]
            if None in values:
                raise ValueError(f"column {name!r} has missing values: send them over HTTP")
            request.inputs.add(name=str(name), datatype=datatype, shape=[len(values)])
            if datatype == "BYTES":
                request.raw_input_contents.append(_bytes_tensor(values))
            else:
                request.raw_input_contents.append(
                    np.asarray(values, dtype=_WIRE[datatype]).tobytes()
                )
    else:
        array = np.asarray(data)
        if array.ndim != 2:
            raise ValueError("send a 2-D array (rows x features) or a DataFrame")
        if array.dtype.kind in "iub":
            datatype = "BOOL" if array.dtype.kind == "b" else "INT64"
        else:
            datatype = "FP64"
        request.inputs.add(name="input-0", datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(
            np.ascontiguousarray(array, dtype=_WIRE[datatype]).tobytes()
        )
    for name in outputs:
        request.outputs.add(name=name)
    return request


def decode_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Each output tensor of a ModelInferResponse as an array of its shape."""
    raw = response.raw_output_contents
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(response.outputs):
        shape = list(tensor.shape)
        if index < len(raw):
            blob = raw[index]
            if tensor.datatype == "BYTES":
                values: np.ndarray = np.asarray(_decode_bytes(blob), dtype=object)
            elif tensor.datatype in _WIRE:
                values = np.frombuffer(blob, dtype=_WIRE[tensor.datatype])
            else:
                raise ProtocolError(f"output {tensor.name!r} has datatype {tensor.datatype}")
        else:
            contents = tensor.contents
            field = next((f.name for f, _ in contents.ListFields()), None)
            values = np.asarray(list(getattr(contents, field)) if field else [])
        arrays[tensor.name] = values.reshape(shape)
    return arrays


class GrpcClient:
    """Talks to one model over gRPC (``target`` is ``host:port``, the server's gRPC port)."""

    def __init__(
        self,
        target: str,
        model: str,
        *,
        version: str | None = None,
        timeout: float = 10.0,
        metadata: dict[str, str] | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.timeout = timeout
        self.target = target
        self._metadata = tuple((metadata or {}).items())
        self._channel = channel if channel is not None else grpc.insecure_channel(target)
        self._methods: dict[str, Any] = {}

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(
        self, method: str, request: Any, response_type: Any, metadata: tuple[tuple[str, str], ...]
    ) -> tuple[Any, dict[str, str]]:
        stub = self._methods.get(method)
        if stub is None:
            stub = self._methods[method] = self._channel.unary_unary(
                SERVICE + method,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )
        try:
            response, call = stub.with_call(
                request, timeout=self.timeout, metadata=self._metadata + metadata
            )
        except grpc.RpcError as exc:
            raise _error(exc, self.target) from None
        return response, dict(call.initial_metadata() or ())

    def ready(self) -> bool:
        """Whether the model is loaded and the server takes traffic."""
        request = pb.ModelReadyRequest(name=self.model, version=self.version or "")
        try:
            response, _ = self._call("ModelReady", request, pb.ModelReadyResponse, ())
        except (ConnectionFailed, Timeout):
            return False
        except ServerError as exc:
            if exc.status in (404, 503):
                return False
            raise
        return bool(response.ready)

    def metadata(self) -> ModelMetadata:
        request = pb.ModelMetadataRequest(name=self.model, version=self.version or "")
        response, _ = self._call("ModelMetadata", request, pb.ModelMetadataResponse, ())

        def tensors(items: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        return ModelMetadata(
            name=response.name,
            versions=list(response.versions),
            platform=response.platform,
            inputs=tensors(response.inputs),
            outputs=tensors(response.outputs),
        )

    def predict(
        self, data: Any, *, probabilities: bool = False, request_id: str | None = None
    ) -> Prediction:
        """Predict for ``data`` (a DataFrame or a 2-D array); ``request_id`` goes as the
        ``x-request-id`` metadata (the server makes one when it is not given). The gRPC
        metadata carries no class names: probabilities of a DataFrame have columns 0..n-1."""
        outputs = ["predict", "predict_proba"] if probabilities else ["predict"]
        request = encode_request(self.model, self.version, data, outputs)
        extra = (("x-request-id", request_id),) if request_id is not None else ()
        response, headers = self._call("ModelInfer", request, pb.ModelInferResponse, extra)
        arrays = decode_outputs(response)
        if "predict" not in arrays:
            raise ProtocolError("the gRPC answer has no 'predict' output")
        proba = arrays.get("predict_proba")
        return Prediction(
            predictions=_shaped(arrays["predict"], data),
            probabilities=_shaped_proba(proba, None, data),
            classes=None,
            request_id=headers.get("x-request-id", request_id or ""),
            model_version=headers.get("x-model-version", response.model_version or None),
            variant=headers.get("x-model-variant"),
        )


def _error(exc: grpc.RpcError, target: str) -> ModelshipError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"gRPC call to {target}: no answer in time")
    if code == grpc.StatusCode.UNAVAILABLE and _transport_failure(details):
        return ConnectionFailed(f"cannot reach {target}: {details}")
    status = _STATUS.get(code, 500) if code is not None else 500
    return error_for(status, details, None)


def _transport_failure(details: str) -> bool:
    lowered = details.lower()
    return any(
        s in lowered for s in ("failed to connect", "connection refused", "connect failed", "dns")
    )
