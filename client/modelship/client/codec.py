"""Request bodies from DataFrames and arrays, and answers back into them (V1 and V2, with the
Open Inference Protocol's binary tensor extension). Pure: no I/O."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ProtocolError

_LENGTH = struct.Struct("<I")
_WIRE = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "|b1"}


def is_frame(data: Any) -> bool:
    """Whether ``data`` is a pandas DataFrame (without importing pandas when it is not)."""
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")


def _plain(value: Any) -> Any:
    if value is None:
        return None
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def frame_records(frame: Any) -> list[dict[str, Any]]:
    """Rows as JSON objects; NaN, None and pandas' NA become null."""
    columns = [str(c) for c in frame.columns]
    return [
        {c: _plain(v) for c, v in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def _column_datatype(series: Any) -> str:
    kind = series.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    if getattr(series.dtype, "name", "") == "category":
        categories = series.dtype.categories
        return "BYTES" if categories.dtype.kind in "OUS" else "FP64"
    return "BYTES"


@dataclass
class Body:
    """An encoded request: its bytes and the extra headers it needs."""

    content: bytes
    headers: dict[str, str]


def encode_v1(data: Any, probabilities: bool) -> Body:
    if is_frame(data):
        instances: Any = frame_records(data)
    else:
        array = np.asarray(data)
        if array.ndim != 2:
            raise ValueError("send a 2-D array (rows x features) or a DataFrame")
        instances = array.tolist()
    payload: dict[str, Any] = {"instances": instances}
    if probabilities:
        payload["probabilities"] = True
    return Body(json.dumps(payload).encode(), {"content-type": "application/json"})


def _bytes_tensor(values: list[Any]) -> bytes:
    parts = []
    for value in values:
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_v2(data: Any, outputs: list[str], binary: bool, request_id: str | None) -> Body:
    """A V2 request: one input per column for a DataFrame (``content_type: pd``), one
    ``[rows, features]`` tensor for an array; binary tensors when ``binary``."""
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    parameters: dict[str, Any] = {}
    if is_frame(data):
        parameters["content_type"] = "pd"
        for name in data.columns:
            series = data[name]
            datatype = _column_datatype(series)
            values = [_plain(v) for v in series.tolist()]
            tensor: dict[str, Any] = {
                "name": str(name),
                "shape": [len(values)],
                "datatype": datatype,
            }
            if binary and None not in values:
                if datatype == "BYTES":
                    blob = _bytes_tensor(values)
                else:
                    blob = np.asarray(values, dtype=_WIRE[datatype]).tobytes()
                tensor["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                tensor["data"] = values
            tensors.append(tensor)
    else:
        array = np.asarray(data)
        if array.ndim != 2:
            raise ValueError("send a 2-D array (rows x features) or a DataFrame")
        if array.dtype.kind in "iub":
            datatype = {"b": "BOOL"}.get(array.dtype.kind, "INT64")
        else:
            datatype, array = "FP64", array.astype(np.float64)
        tensor = {"name": "input-0", "shape": list(array.shape), "datatype": datatype}
        if binary:
            blob = np.ascontiguousarray(array, dtype=_WIRE[datatype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    payload: dict[str, Any] = {"inputs": tensors}
    payload["outputs"] = [
        {"name": name, "parameters": {"binary_data": binary}} if binary else {"name": name}
        for name in outputs
    ]
    if request_id is not None:
        payload["id"] = request_id
    if parameters:
        payload["parameters"] = parameters
    header = json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    if blobs:
        headers = {
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(header)),
        }
    return Body(header + b"".join(blobs), headers)


def _decode_bytes(blob: bytes) -> list[str]:
    out, offset = [], 0
    while offset < len(blob):
        (length,) = _LENGTH.unpack_from(blob, offset)
        offset += 4
        out.append(blob[offset : offset + length].decode())
        offset += length
    return out


def decode_v2(content: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A V2 answer → (its JSON, output name → NumPy array)."""
    try:
        if header_length is None:
            answer = json.loads(content)
            rest = b""
        else:
            length = int(header_length)
            answer = json.loads(content[:length])
            rest = content[length:]
        arrays: dict[str, Any] = {}
        offset = 0
        for output in answer["outputs"]:
            shape = output["shape"]
            datatype = output["datatype"]
            size = (output.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                blob = rest[offset : offset + size]
                offset += size
                if datatype == "BYTES":
                    values: Any = np.array(_decode_bytes(blob), dtype=object)
                else:
                    values = np.frombuffer(blob, dtype=_WIRE[datatype]).copy()
            else:
                values = np.array(output["data"], dtype=object if datatype == "BYTES" else None)
            arrays[output["name"]] = values.reshape(shape)
    except (KeyError, TypeError, ValueError, struct.error) as exc:
        raise ProtocolError(f"unexpected V2 answer: {exc!r}") from None
    return answer, arrays
