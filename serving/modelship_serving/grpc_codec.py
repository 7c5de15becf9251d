"""Open Inference Protocol messages over gRPC <-> the V2 payloads the data plane decodes.

A ``ModelInferRequest`` becomes the same dict a V2 JSON body parses into (``id``,
``parameters``, ``inputs`` with ``name``/``shape``/``datatype``/``data``, ``outputs``), so
every check of the HTTP path (codec.py, tabular.py) applies unchanged. Typed contents
become lists (as JSON gives them); raw contents are decoded like the binary tensor extension
(binary.py). Outputs go back as ``raw_output_contents``, as Triton and KServe answer.

Pure: messages in, payloads or messages out, ServingError for input it cannot accept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .binary import decode_bytes_elements, decode_tensor, encode_binary
from .codec import v2_datatype
from .errors import ServingError
from .fastpath import Prediction
from .oip import grpc_predict_v2_pb2 as pb

#: The typed contents field of each datatype (FP16 and BF16 have none: raw contents only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(parameter: pb.InferParameter) -> Any:
    """An ``InferParameter``'s value (None when no field of its oneof is set)."""
    which = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, which) if which is not None else None


def parameters_of(parameters: Any) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def _typed_data(tensor: pb.ModelInferRequest.InferInputTensor, where: str) -> list[Any]:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        # codec.py names the datatypes it accepts; an unknown one fails there with its reason.
        set_fields = [f.name for f, _ in tensor.contents.ListFields()]
        return list(getattr(tensor.contents, set_fields[0])) if set_fields else []
    values = getattr(tensor.contents, field)
    if tensor.datatype == "BYTES":
        try:
            return [bytes(v).decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise ServingError(422, f"{where}.contents.bytes_contents is not UTF-8") from None
    other = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if other:
        raise ServingError(
            422, f"{where}: a {tensor.datatype} tensor takes {field}, not {', '.join(other)}"
        )
    return list(values)


def _raw_data(entry: dict[str, Any], blob: bytes, where: str) -> Any:
    if entry["datatype"] == "BYTES":
        return decode_bytes_elements(blob, where)
    return decode_tensor(entry, memoryview(blob), where)


def payload_of(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The V2 payload of a ``ModelInferRequest`` (see the module docstring)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ServingError(
            422,
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(request.inputs)} inputs: send one per input, in order",
        )
    inputs: list[dict[str, Any]] = []
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}]"
        entry: dict[str, Any] = {
            "name": tensor.name,
            "shape": list(tensor.shape),
            "datatype": tensor.datatype,
        }
        if tensor.parameters:
            entry["parameters"] = parameters_of(tensor.parameters)
        if raw:
            if tensor.HasField("contents"):
                raise ServingError(
                    422, f"{where} has contents, but the request sends raw_input_contents"
                )
            entry["data"] = _raw_data(entry, raw[index], where)
        else:
            entry["data"] = _typed_data(tensor, where)
        inputs.append(entry)
    payload: dict[str, Any] = {"inputs": inputs}
    if request.id:
        payload["id"] = request.id
    if request.parameters:
        payload["parameters"] = parameters_of(request.parameters)
    if request.outputs:
        payload["outputs"] = [{"name": output.name} for output in request.outputs]
    return payload


def infer_response(
    model_name: str,
    model_version: str,
    response_id: str,
    outputs: tuple[str, ...],
    prediction: Prediction,
) -> pb.ModelInferResponse:
    """The ``ModelInferResponse``: each requested output as raw contents, row-major."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=response_id
    )
    for name in outputs:
        values: np.ndarray | None = prediction.labels if name == "predict" else prediction.proba
        assert values is not None
        datatype = v2_datatype(values)
        response.outputs.add(name=name, datatype=datatype, shape=values.shape)
        response.raw_output_contents.append(encode_binary(values, datatype))
    return response
