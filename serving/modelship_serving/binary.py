"""The Open Inference Protocol's binary tensor extension, as KServe and Triton implement it.

A request whose ``Inference-Header-Content-Length`` header is N holds N bytes of JSON, then the
raw bytes of every input whose ``parameters.binary_data_size`` is set, in input order. Numeric
tensors are little-endian, row-major; BOOL one byte per value; BYTES a 4-byte little-endian
length before each element. Outputs come back the same way when the request asks for it
(``parameters.binary_data_output: true``, or ``binary_data: true`` on one requested output).

Pure: bytes in, decoded payload (binary data replaced by NumPy arrays or lists of strings) or
ServingError out.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from .errors import ServingError

_WIRE: dict[str, str] = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_LENGTH = struct.Struct("<I")


def decode_bytes_elements(blob: bytes | memoryview, where: str) -> list[str]:
    """A BYTES tensor's elements (length-prefixed) as UTF-8 strings."""
    view = memoryview(blob)
    out: list[str] = []
    offset, end = 0, len(view)
    while offset < end:
        if offset + 4 > end:
            raise ServingError(422, f"{where}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise ServingError(422, f"{where}: BYTES element {len(out)} runs past the data")
        try:
            out.append(str(view[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise ServingError(422, f"{where}: BYTES element {len(out)} is not UTF-8") from None
        offset += length
    return out


def _size_of(entry: dict[str, Any], where: str) -> int | None:
    parameters = entry.get("parameters")
    if parameters is None:
        return None
    if type(parameters) is not dict:
        raise ServingError(422, f"{where}.parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise ServingError(422, f"{where}.parameters.binary_data_size must be a whole number")
    return size


def decode_tensor(entry: dict[str, Any], blob: memoryview, where: str) -> Any:
    """One tensor's raw bytes (binary extension, gRPC raw contents) as its ``data``."""
    datatype = entry.get("datatype")
    shape = entry.get("shape")
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise ServingError(422, f"{where}.shape must be a list of whole numbers")
    count = math.prod(shape)
    if datatype == "BYTES":
        values = decode_bytes_elements(blob, where)
        if len(values) != count:
            raise ServingError(
                422, f"{where} has {len(values)} BYTES elements but shape {shape} needs {count}"
            )
        return values
    wire = _WIRE.get(datatype) if type(datatype) is str else None
    if wire is None:
        raise ServingError(422, f"{where}.datatype {datatype!r} cannot be sent as binary data here")
    itemsize = np.dtype(wire).itemsize
    if len(blob) != count * itemsize:
        raise ServingError(
            422,
            f"{where} has {len(blob)} bytes of binary data but shape {shape} of {datatype} "
            f"needs {count * itemsize}",
        )
    return np.frombuffer(blob, dtype=wire)


def split_binary_request(body: bytes, header_length: int) -> dict[str, Any]:
    """The JSON header of a binary request, with each binary input's ``data`` filled in."""
    if not 0 < header_length <= len(body):
        raise ServingError(
            400,
            f"Inference-Header-Content-Length is {header_length} but the body has "
            f"{len(body)} bytes",
        )
    try:
        payload = orjson.loads(body[:header_length])
    except orjson.JSONDecodeError as exc:
        raise ServingError(400, f"malformed JSON header: {exc}") from None
    if type(payload) is not dict:
        raise ServingError(400, "the JSON header must be an object with 'inputs'")
    inputs = payload.get("inputs")
    if type(inputs) is not list:
        raise ServingError(422, "'inputs' must be a non-empty list of tensors")
    view = memoryview(body)
    offset = header_length
    for index, entry in enumerate(inputs):
        where = f"inputs[{index}]"
        if type(entry) is not dict:
            raise ServingError(422, f"{where} must be an object with name, shape, datatype")
        size = _size_of(entry, where)
        if size is None:
            continue
        if "data" in entry:
            raise ServingError(422, f"{where} has both 'data' and binary_data_size")
        if offset + size > len(body):
            raise ServingError(
                422, f"{where}.parameters.binary_data_size {size} runs past the end of the body"
            )
        entry["data"] = decode_tensor(entry, view[offset : offset + size], where)
        offset += size
    if offset != len(body):
        raise ServingError(
            422, f"{len(body) - offset} bytes after the last binary input belong to no tensor"
        )
    return payload


def binary_outputs(payload: dict[str, Any], names: tuple[str, ...]) -> frozenset[str]:
    """Which requested outputs go back as binary data."""
    parameters = payload.get("parameters")
    default = False
    if type(parameters) is dict:
        flag = parameters.get("binary_data_output", False)
        if type(flag) is not bool:
            raise ServingError(422, "parameters.binary_data_output must be true or false")
        default = flag
    chosen = set(names) if default else set()
    requested = payload.get("outputs")
    if type(requested) is list:
        for i, entry in enumerate(requested):
            if type(entry) is not dict or type(entry.get("parameters")) is not dict:
                continue
            flag = entry["parameters"].get("binary_data")
            if flag is None:
                continue
            if type(flag) is not bool:
                raise ServingError(422, f"outputs[{i}].parameters.binary_data must be a boolean")
            if flag:
                chosen.add(entry["name"])
            else:
                chosen.discard(entry["name"])
    return frozenset(chosen)


def encode_binary(values: np.ndarray, datatype: str) -> bytes:
    """One output tensor's raw bytes, row-major."""
    flat = values.reshape(-1)
    if datatype == "BYTES":
        parts = []
        for value in flat.tolist():
            data = str(value).encode()
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    wire = {"INT64": "<i8", "FP64": "<f8", "BOOL": "|b1"}[datatype]
    return np.ascontiguousarray(flat, dtype=wire).tobytes()
