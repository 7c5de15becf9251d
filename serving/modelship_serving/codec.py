"""Decode request bodies into feature matrices and encode predictions (KServe V1 and OIP V2).

Pure: bytes and JSON values in, numpy arrays or ServingError out. Every refusal names the
offending field so a client can fix its request without reading server logs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .errors import ServingError
from .signature import ModelSignature

V2_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
V2_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
V2_DATATYPES = V2_FLOAT_TYPES | V2_INT_TYPES | {"BOOL"}
_NUMPY_DTYPES: dict[str, Any] = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}
_NUMBER_TYPES = frozenset({int, float})
V2_OUTPUTS = ("predict", "predict_proba")


@dataclass(frozen=True)
class Limits:
    """Per-request bounds taken from the settings."""

    max_rows: int
    allow_non_finite: bool


@dataclass(slots=True)
class V2Request:
    """A decoded inference request: features plus which outputs were asked for."""

    features: np.ndarray
    outputs: tuple[str, ...]
    request_id: str | None


def parse_json(body: bytes) -> Any:
    """Parse a body; NaN/Infinity literals are accepted here and judged later by policy."""
    if not body:
        raise ServingError(400, "empty request body: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    try:  # the standard library also reads NaN, Infinity and integers beyond 64 bits
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ServingError(400, f"malformed JSON: {first_error}") from None


def _all_finite(values: list[Any]) -> bool:
    """Whether a flat list of numbers is all finite, by its sum (inf and NaN propagate); an
    integer too large for a float counts as not finite (the general decoder names it)."""
    try:
        return math.isfinite(sum(values))
    except OverflowError:
        return False


def _describe(value: Any) -> str:
    text = repr(value)
    return (text[:40] + "...") if len(text) > 40 else text


def _first_bad(rows: list[list[Any]], allowed: frozenset[type], where: str) -> tuple[str, Any]:
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if type(value) not in allowed:
                return f"{where}[{i}][{j}]", value
    raise AssertionError("caller saw a bad type")  # pragma: no cover


def _check_finite(features: np.ndarray, limits: Limits, where: str) -> None:
    if limits.allow_non_finite:
        return
    finite = np.isfinite(features)
    if not finite.all():
        i, j = (int(v) for v in np.argwhere(~finite)[0])
        raise ServingError(
            422,
            f"{where}[{i}][{j}] is {features[i, j]}: NaN and infinity are not accepted "
            "(the server can be started with MODELSHIP_ALLOW_NON_FINITE=true for models "
            "that handle missing values)",
        )


def _feature_hint(signature: ModelSignature) -> str:
    if signature.feature_names:
        shown = ", ".join(signature.feature_names[:5])
        more = ", ..." if len(signature.feature_names) > 5 else ""
        return f" ({shown}{more})"
    return ""


def _rows_from_objects(rows: list[Any], signature: ModelSignature, where: str) -> list[list[Any]]:
    names = signature.feature_names
    if names is None:
        raise ServingError(
            422,
            f"{where}[0] is an object, but the model was fitted without feature names: "
            f"send each instance as a list of {signature.n_features} numbers",
        )
    expected = set(names)
    out: list[list[Any]] = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise ServingError(422, f"{where}[{i}] must be an object like {where}[0]")
        if row.keys() != expected:
            missing = sorted(expected - row.keys())
            unknown = sorted(str(k) for k in row.keys() - expected)
            parts = []
            if missing:
                parts.append(f"missing features {missing[:10]}")
            if unknown:
                parts.append(f"unknown features {unknown[:10]}")
            raise ServingError(422, f"{where}[{i}] has {' and '.join(parts)}")
        out.append([row[name] for name in names])
    return out


def rows_to_matrix(rows: Any, signature: ModelSignature, limits: Limits, where: str) -> np.ndarray:
    """A JSON list of instances (lists of numbers, or objects keyed by feature name) to X."""
    if type(rows) is not list:
        raise ServingError(422, f"{where} must be a list of instances")
    if not rows:
        raise ServingError(422, f"{where} is empty: send at least one instance")
    if len(rows) > limits.max_rows:
        raise ServingError(
            413, f"{where} has {len(rows)} instances; at most {limits.max_rows} per request"
        )
    if type(rows[0]) is dict:
        rows = _rows_from_objects(rows, signature, where)
    n_features = signature.n_features
    seen: set[type] = set()
    for i, row in enumerate(rows):
        if type(row) is not list:
            raise ServingError(
                422,
                f"{where}[{i}] must be a list of {n_features} numbers"
                + (" or an object keyed by feature name" if signature.feature_names else "")
                + f", got {_describe(row)}",
            )
        if len(row) != n_features:
            raise ServingError(
                422,
                f"{where}[{i}] has {len(row)} features; the model expects {n_features}"
                + _feature_hint(signature),
            )
        seen.update(map(type, row))
    if not seen <= _NUMBER_TYPES:
        place, value = _first_bad(rows, _NUMBER_TYPES, where)
        raise ServingError(422, f"{place} is {_describe(value)}: features must be numbers")
    try:
        features = np.array(rows, dtype=np.float64)
    except OverflowError:
        raise ServingError(422, f"{where} holds a number too large for float64") from None
    # A finite sum proves every value finite (inf and NaN propagate); it is cheaper than
    # np.isfinite for the common one-row request. Otherwise look element by element.
    if len(rows) > 1 or not math.isfinite(sum(rows[0])):
        _check_finite(features, limits, where)
    return features


def v1_wants_proba(payload: dict[str, Any], signature: ModelSignature) -> bool:
    """The V1 ``probabilities`` flag, checked against the model."""
    proba = payload.get("probabilities", False)
    if type(proba) is not bool:
        raise ServingError(422, "'probabilities' must be true or false")
    if proba and not signature.has_predict_proba:
        raise ServingError(
            422, f"{signature.estimator_class} has no predict_proba: drop 'probabilities'"
        )
    return proba


def v1_key(payload: Any) -> str:
    """Which of a KServe V1 body's two forms it uses: 'instances' or 'inputs' (refused
    unless it is an object with exactly one of them)."""
    if type(payload) is not dict:
        raise ServingError(400, "body must be a JSON object with 'instances' or 'inputs'")
    has_instances = "instances" in payload
    if has_instances == ("inputs" in payload):
        raise ServingError(422, "send exactly one of 'instances' or 'inputs'")
    return "instances" if has_instances else "inputs"


def decode_v1(payload: Any, signature: ModelSignature, limits: Limits) -> tuple[np.ndarray, bool]:
    """KServe V1 body → (X, want probabilities)."""
    key = v1_key(payload)
    proba = v1_wants_proba(payload, signature)
    rows = payload[key]
    if type(rows) is dict:
        rows = _rows_from_columns(rows, signature, key)
    return rows_to_matrix(rows, signature, limits, key), proba


def _rows_from_columns(columns: dict[str, Any], signature: ModelSignature, where: str) -> Any:
    """Columnar V1 ``{"feature": [values...]}`` as rows, for models with feature names."""
    names = signature.feature_names
    if names is None:
        raise ServingError(
            422, f"{where} is an object of columns, but the model was fitted without feature names"
        )
    if columns.keys() != set(names):
        missing = sorted(set(names) - columns.keys())
        unknown = sorted(str(k) for k in columns.keys() - set(names))
        raise ServingError(
            422, f"{where} has missing features {missing[:10]} and unknown features {unknown[:10]}"
        )
    values = [columns[n] for n in names]
    if any(type(v) is not list for v in values) or len({len(v) for v in values}) != 1:
        raise ServingError(422, f"{where}: every column must be a list of the same length")
    return [list(row) for row in zip(*values, strict=True)]


def _flatten(data: list[Any], where: str) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                if len(stack) > 8:
                    raise ServingError(422, f"{where} is nested too deeply")
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _tensor(entry: Any, index: int, limits: Limits) -> tuple[str, list[int], np.ndarray]:
    where = f"inputs[{index}]"
    if type(entry) is not dict:
        raise ServingError(422, f"{where} must be an object with name, shape, datatype, data")
    for field in ("name", "shape", "datatype", "data"):
        if field not in entry:
            raise ServingError(422, f"{where} has no '{field}'")
    name, shape, datatype, data = entry["name"], entry["shape"], entry["datatype"], entry["data"]
    if type(name) is not str:
        raise ServingError(422, f"{where}.name must be a string")
    bad_shape = type(shape) is not list or not 1 <= len(shape) <= 2
    if not bad_shape:
        for d in shape:
            if type(d) is not int or d < 0:
                bad_shape = True
    if bad_shape:
        raise ServingError(422, f"{where}.shape must be [rows, features] or [rows]")
    if datatype not in V2_DATATYPES:
        raise ServingError(
            422, f"{where}.datatype {_describe(datatype)} is not one of {sorted(V2_DATATYPES)}"
        )
    if shape[0] > limits.max_rows:
        raise ServingError(
            413, f"{where} has {shape[0]} rows; at most {limits.max_rows} per request"
        )
    size = math.prod(shape)
    if isinstance(data, np.ndarray):  # binary data (binary.py): already typed and sized
        if data.size != size:
            raise ServingError(
                422, f"{where} has {data.size} values but shape {shape} needs {size}"
            )
        return name, shape, data.astype(np.float64).reshape(shape)
    if type(data) is not list:
        raise ServingError(422, f"{where}.data must be a list")
    if data and type(data[0]) is list:
        data = _flatten(data, f"{where}.data")
    if len(data) != size:
        raise ServingError(
            422, f"{where}.data has {len(data)} values but shape {shape} needs {size}"
        )
    allowed: frozenset[type]
    if datatype == "BOOL":
        allowed = frozenset({bool})
    elif datatype in V2_INT_TYPES:
        allowed = frozenset({int})
    else:
        allowed = _NUMBER_TYPES
    if not set(map(type, data)) <= allowed:
        j, value = next((j, v) for j, v in enumerate(data) if type(v) not in allowed)
        raise ServingError(422, f"{where}.data[{j}] is {_describe(value)}, not a {datatype} value")
    try:
        array = np.array(data, dtype=_NUMPY_DTYPES[datatype])
    except OverflowError:
        raise ServingError(422, f"{where}.data holds a value out of {datatype} range") from None
    return name, shape, array.astype(np.float64, copy=False).reshape(shape)


def _single_fp64_tensor(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The body's only input tensor when it is a named FP64 tensor, else None."""
    inputs = payload.get("inputs")
    if type(inputs) is not list or len(inputs) != 1:
        return None
    tensor = inputs[0]
    if (
        type(tensor) is not dict
        or tensor.get("datatype") != "FP64"
        or type(tensor.get("name")) is not str
    ):
        return None
    return tensor


def _common_tensor(payload: dict[str, Any], n_features: int, limits: Limits) -> np.ndarray | None:
    """The usual request, recognised cheaply: one FP64 tensor [rows, n_features] with flat,
    finite numbers. None sends the request through the general decoder (and its errors)."""
    tensor = _single_fp64_tensor(payload)
    if tensor is None:
        return None
    shape, data = tensor.get("shape"), tensor.get("data")
    if type(shape) is not list or len(shape) != 2 or type(data) is not list:
        return None
    rows, cols = shape
    if (
        type(rows) is not int
        or type(cols) is not int
        or cols != n_features
        or not 0 < rows <= limits.max_rows
        or len(data) != rows * cols
        or not set(map(type, data)) <= _NUMBER_TYPES
        or not _all_finite(data)
    ):
        return None
    try:
        return np.array(data, dtype=np.float64).reshape(rows, cols)
    except OverflowError:
        return None


def _plain_row(values: Any, n_features: int) -> list[float] | None:
    """``values`` as a list of ``n_features`` finite floats, or None."""
    if type(values) is not list or len(values) != n_features:
        return None
    types = set(map(type, values))
    if types == _FLOAT:
        return values if _all_finite(values) else None
    if not types <= _NUMBER_TYPES or not _all_finite(values):
        return None
    return [float(v) for v in values]


_FLOAT = {float}


def v2_single_row(payload: dict[str, Any], n_features: int) -> list[float] | None:
    """The usual one-row request (one FP64 tensor of shape [1, n_features], flat, finite) as a
    list of floats; None sends the request through the general decoder (and its errors)."""
    tensor = _single_fp64_tensor(payload)
    if tensor is None:
        return None
    shape = tensor.get("shape")
    if (
        type(shape) is not list
        or len(shape) != 2
        or type(shape[0]) is not int
        or type(shape[1]) is not int
        or shape[0] != 1
        or shape[1] != n_features
    ):
        return None
    return _plain_row(tensor.get("data"), n_features)


def v1_single_row(payload: Any, n_features: int) -> list[float] | None:
    """The usual one-row V1 request (``instances`` or ``inputs`` holding one list of numbers)
    as a list of floats; None sends it through :func:`decode_v1`."""
    if type(payload) is not dict:
        return None
    rows = payload.get("instances")
    if rows is None:
        rows = payload.get("inputs")
    elif "inputs" in payload:
        return None
    if type(rows) is not list or len(rows) != 1:
        return None
    return _plain_row(rows[0], n_features)


def v2_request_id(payload: dict[str, Any]) -> str | None:
    """The V2 body's optional ``id``."""
    request_id = payload.get("id")
    if request_id is not None and type(request_id) is not str:
        raise ServingError(422, "'id' must be a string")
    return request_id


def decode_v2(payload: Any, signature: ModelSignature, limits: Limits) -> V2Request:
    """Open Inference Protocol V2 body → V2Request."""
    if type(payload) is not dict:
        raise ServingError(400, "body must be a JSON object with 'inputs'")
    common = _common_tensor(payload, signature.n_features, limits)
    if common is not None:
        request_id = v2_request_id(payload)
        return V2Request(common, requested_outputs(payload.get("outputs"), signature), request_id)
    inputs = payload.get("inputs")
    if type(inputs) is not list or not inputs:
        raise ServingError(422, "'inputs' must be a non-empty list of tensors")
    request_id = v2_request_id(payload)
    outputs = requested_outputs(payload.get("outputs"), signature)
    tensors = [_tensor(entry, i, limits) for i, entry in enumerate(inputs)]
    if len(tensors) == 1:
        _, shape, array = tensors[0]
        if len(shape) != 2 or shape[1] != signature.n_features:
            raise ServingError(
                422,
                f"inputs[0].shape is {shape}; the model expects [rows, {signature.n_features}]"
                + _feature_hint(signature),
            )
        features = array
    else:
        features = _columns(tensors, signature)
    if features.shape[0] == 0:
        raise ServingError(422, "inputs hold no rows: send at least one")
    # Integer and boolean tensors are always finite; FP64 data is checked by its sum (inf and NaN
    # propagate) before looking element by element; FP16/FP32 may overflow when cast.
    datatypes = {entry["datatype"] for entry in inputs}
    if datatypes == {"FP64"} and len(tensors) == 1 and type(inputs[0]["data"]) is list:
        if not math.isfinite(sum(_flat_data(inputs[0]["data"]))):
            _check_finite(features, limits, "inputs")
    elif datatypes & V2_FLOAT_TYPES:
        _check_finite(features, limits, "inputs")
    return V2Request(features=features, outputs=outputs, request_id=request_id)


def _flat_data(data: list[Any]) -> list[Any]:
    return _flatten(data, "data") if data and type(data[0]) is list else data


def _columns(
    tensors: list[tuple[str, list[int], np.ndarray]], signature: ModelSignature
) -> np.ndarray:
    """One tensor per feature, named after the model's features (column-wise requests)."""
    names = signature.feature_names
    if names is None:
        raise ServingError(
            422,
            "several input tensors need a model fitted with feature names; "
            f"send one tensor of shape [rows, {signature.n_features}]",
        )
    by_name = {}
    for name, shape, array in tensors:
        if len(shape) == 2 and shape[1] != 1:
            raise ServingError(422, f"input {name!r} must have shape [rows] or [rows, 1]")
        by_name[name] = array.reshape(-1)
    if by_name.keys() != set(names):
        missing = sorted(set(names) - by_name.keys())
        unknown = sorted(by_name.keys() - set(names))
        raise ServingError(
            422,
            f"input tensors do not match the features: missing {missing[:10]}, "
            f"unknown {unknown[:10]}",
        )
    lengths = {len(a) for a in by_name.values()}
    if len(lengths) != 1:
        raise ServingError(422, "input tensors have different numbers of rows")
    return np.stack([by_name[n] for n in names], axis=1)


def requested_outputs(value: Any, signature: ModelSignature) -> tuple[str, ...]:
    if value is None:
        return ("predict",)
    if type(value) is not list or not value:
        raise ServingError(422, "'outputs' must be a non-empty list of {\"name\": ...} objects")
    names: list[str] = []
    for i, entry in enumerate(value):
        name = entry.get("name") if type(entry) is dict else None
        if name not in V2_OUTPUTS:
            raise ServingError(422, f"outputs[{i}].name must be one of {list(V2_OUTPUTS)}")
        if name == "predict_proba" and not signature.has_predict_proba:
            raise ServingError(422, f"{signature.estimator_class} has no predict_proba")
        if name not in names:
            names.append(name)
    return tuple(names)


def v2_datatype(values: np.ndarray) -> str:
    """The OIP datatype that describes a prediction array."""
    kind = values.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def encode_v2_output(name: str, values: np.ndarray) -> dict[str, Any]:
    """One OIP output tensor, row-major flattened."""
    datatype = v2_datatype(values)
    flat = values.reshape(-1)
    data = [str(v) for v in flat.tolist()] if datatype == "BYTES" else flat.tolist()
    return {"name": name, "shape": list(values.shape), "datatype": datatype, "data": data}
