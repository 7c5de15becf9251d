"""Decode requests for tabular models (named, mixed-type columns) into validated columns.

Every input form becomes the same ``Table`` (one NumPy array per column, in the model's
column order), checked against the model's signature; each refusal is a 422 naming the
column (and the row):

- V1 ``instances`` (or ``inputs``) as objects ``[{"plan": "pro", "tenure": 3}]`` or as rows
  in column order ``[["pro", 3]]``;
- V1 columnar ``inputs``: ``{"plan": ["pro", "basic"], "tenure": [3, 5]}``;
- V2 with one named input per column (BYTES for strings), as MLServer's and KServe's pandas
  codec send it (``parameters.content_type: "pd"``), JSON or binary; or one tensor
  ``[rows, n_columns]`` in column order.

Values: numbers for FP64/INT64 columns (not booleans), strings for BYTES, booleans for BOOL;
``null`` (and NaN) only where the model fills missing values (an imputer, or missing values
seen in training) or the server allows non-finite input; an unseen category is refused when
the model's encoder would raise on it (``handle_unknown="error"``) and passed on otherwise.
Pure apart from ``to_frame`` (pandas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np

from .codec import Limits, _describe, _flatten, requested_outputs, v2_request_id
from .errors import ServingError
from .schemas import Datatype
from .signature import Column, ModelSignature

_NUMBERS = frozenset({int, float})
_SCALARS = frozenset({int, float, str, bool, type(None)})
# What a tensor's JSON data may hold, by datatype (null where the column allows missing values).
_NUMERIC_VALUES = frozenset({int, float, type(None)})
_ALLOWED = {"BYTES": frozenset({str, type(None)}), "BOOL": frozenset({bool, type(None)})}
_V2_TYPES = frozenset(get_args(Datatype))


@dataclass(slots=True)
class Table:
    """Validated input columns, in the model's column order, all ``rows`` long."""

    columns: dict[str, np.ndarray]
    rows: int

    def numeric(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        """The named numeric columns as one float matrix (rows x names)."""
        out = np.empty((self.rows, len(names)))
        columns = self.columns
        for j, name in enumerate(names):
            out[:, j] = columns[name]
        return out


@dataclass(slots=True)
class TableRequest:
    """A decoded request: the table, the outputs asked for, the V2 request id."""

    table: Table
    outputs: tuple[str, ...]
    want_proba: bool
    request_id: str | None


def _known(column: Column) -> frozenset[Any] | None:
    if column.categories is None or column.handle_unknown != "error":
        return None
    return frozenset(column.categories)


def _unseen(column: Column, value: Any, row: int, where: str) -> ServingError:
    cats = column.categories or ()
    shown = ", ".join(repr(c) for c in cats[:10]) + (", ..." if len(cats) > 10 else "")
    return ServingError(
        422,
        f"{where}column {column.name!r} row {row} is {_describe(value)}, a category the "
        f"model did not see in training (it knows {shown})",
    )


def _missing_refused(column: Column, row: int, where: str) -> ServingError:
    return ServingError(
        422,
        f"{where}column {column.name!r} row {row} is missing (null or NaN), and the model "
        "does not fill missing values in this column",
    )


def _wrong_type(column: Column, value: Any, row: int, where: str) -> ServingError:
    expected = {
        "FP64": "a number",
        "INT64": "a number",
        "BYTES": "a string",
        "BOOL": "true or false",
        "ANY": "a number, string or boolean",
    }[column.datatype]
    return ServingError(
        422,
        f"{where}column {column.name!r} row {row} is {_describe(value)}: expected "
        f"{expected} ({column.datatype})",
    )


def column_array(column: Column, values: Any, limits: Limits, where: str = "") -> np.ndarray:
    """One column's values (a list of JSON values, or a NumPy array from binary data) as the
    array the model gets, or the 422 that names the column and row."""
    if column.numeric:
        return _numeric(column, values, limits, where)
    if isinstance(values, np.ndarray):
        if column.datatype == "BOOL" and values.dtype.kind == "b":
            return values.astype(bool, copy=False)
        if column.datatype == "ANY":
            return values.astype(object)
        raise ServingError(
            422, f"{where}column {column.name!r} holds numbers: expected {column.datatype}"
        )
    if column.datatype == "BYTES":
        wanted: type = str
    elif column.datatype == "BOOL":
        wanted = bool
    else:
        wanted = object
    known = _known(column)
    missing = False
    for row, value in enumerate(values):
        kind = type(value)
        if kind is wanted or (wanted is object and kind in _SCALARS and kind is not type(None)):
            if known is not None and value not in known:
                raise _unseen(column, value, row, where)
            continue
        if value is None or (kind is float and math.isnan(value)):
            if not (column.nullable or limits.allow_non_finite):
                raise _missing_refused(column, row, where)
            missing = True
            continue
        raise _wrong_type(column, value, row, where)
    if column.datatype == "BOOL" and not missing:
        return np.array(values, dtype=bool)
    array = np.empty(len(values), dtype=object)
    array[:] = [np.nan if v is None else v for v in values] if missing else values
    return array


def _numeric(column: Column, values: Any, limits: Limits, where: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf":
            raise ServingError(
                422, f"{where}column {column.name!r} must hold numbers, not {values.dtype}"
            )
        array = values.astype(np.float64)
    else:
        types = set(map(type, values))
        if not types <= _NUMBERS:
            cleaned: list[Any] = []
            for row, value in enumerate(values):
                kind = type(value)
                if kind is int or kind is float:
                    cleaned.append(value)
                elif value is None:
                    cleaned.append(math.nan)
                else:
                    raise _wrong_type(column, value, row, where)
            values = cleaned
        try:
            array = np.array(values, dtype=np.float64)
        except OverflowError:
            raise ServingError(
                422, f"{where}column {column.name!r} holds a number too large for float64"
            ) from None
        if len(values) == 1 and math.isfinite(array[0]) and column.categories is None:
            return array  # the common one-row request: nothing more to check
    if not limits.allow_non_finite:
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            if column.nullable:
                inf = bad[np.isinf(array[bad])]
                bad = inf
            if bad.size:
                row = int(bad[0])
                if math.isnan(array[row]):
                    raise _missing_refused(column, row, where)
                raise ServingError(
                    422,
                    f"{where}column {column.name!r} row {row} is {array[row]}: infinity is not "
                    "accepted (MODELSHIP_ALLOW_NON_FINITE=true allows it)",
                )
    known = _known(column)
    if known is not None:
        present = array[~np.isnan(array)] if column.nullable else array
        unseen = ~np.isin(present, np.array(sorted(known), dtype=np.float64))
        if unseen.any():
            position = int(np.flatnonzero(unseen)[0])
            rows = np.flatnonzero(~np.isnan(array)) if column.nullable else np.arange(len(array))
            raise _unseen(column, _plain(array[rows[position]]), int(rows[position]), where)
    return array


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _columns_of(signature: ModelSignature) -> tuple[Column, ...]:
    assert signature.columns is not None
    return signature.columns


def _check_rows(count: int, limits: Limits, where: str) -> None:
    if count == 0:
        raise ServingError(422, f"{where} is empty: send at least one instance")
    if count > limits.max_rows:
        raise ServingError(413, f"{where} has {count} instances; at most {limits.max_rows}")


def _name_mismatch(given: set[str], columns: tuple[Column, ...], where: str) -> ServingError:
    expected = {c.name for c in columns}
    missing = [c.name for c in columns if c.name not in given]
    unknown = sorted(str(k) for k in given - expected)
    parts = []
    if missing:
        parts.append(f"missing columns {missing[:10]}")
    if unknown:
        parts.append(f"unknown columns {unknown[:10]}")
    return ServingError(422, f"{where} has {' and '.join(parts)}")


def table_from_rows(
    rows: Any, signature: ModelSignature, limits: Limits, where: str = "instances"
) -> Table:
    """V1 instances: objects keyed by column, or lists in column order."""
    columns = _columns_of(signature)
    if type(rows) is not list:
        raise ServingError(422, f"{where} must be a list of instances")
    _check_rows(len(rows), limits, where)
    names = [c.name for c in columns]
    if type(rows[0]) is dict:
        expected = set(names)
        for i, row in enumerate(rows):
            if type(row) is not dict:
                raise ServingError(422, f"{where}[{i}] must be an object like {where}[0]")
            if row.keys() != expected:
                raise _name_mismatch(set(row.keys()), columns, f"{where}[{i}]")
        values = {n: [row[n] for row in rows] for n in names}
    else:
        for i, row in enumerate(rows):
            if type(row) is not list:
                raise ServingError(
                    422,
                    f"{where}[{i}] must be an object keyed by column or a list of "
                    f"{len(names)} values in column order ({', '.join(names[:6])}"
                    f"{', ...' if len(names) > 6 else ''}), got {_describe(row)}",
                )
            if len(row) != len(names):
                raise ServingError(
                    422, f"{where}[{i}] has {len(row)} values; the model takes {len(names)} columns"
                )
        values = {n: [row[j] for row in rows] for j, n in enumerate(names)}
    where_prefix = f"{where}: "
    return Table(
        {c.name: column_array(c, values[c.name], limits, where_prefix) for c in columns},
        len(rows),
    )


def table_from_columns(
    data: dict[str, Any], signature: ModelSignature, limits: Limits, where: str = "inputs"
) -> Table:
    """V1 columnar inputs: ``{"column": [values...], ...}``."""
    columns = _columns_of(signature)
    if data.keys() != {c.name for c in columns}:
        raise _name_mismatch(set(data.keys()), columns, where)
    lengths = set()
    for name, values in data.items():
        if type(values) is not list:
            raise ServingError(422, f"{where}.{name} must be a list of values, one per row")
        lengths.add(len(values))
    if len(lengths) != 1:
        raise ServingError(422, f"{where}: columns have different numbers of rows")
    rows = lengths.pop()
    _check_rows(rows, limits, where)
    prefix = f"{where}: "
    return Table({c.name: column_array(c, data[c.name], limits, prefix) for c in columns}, rows)


def decode_v1_table(payload: Any, signature: ModelSignature, limits: Limits) -> tuple[Table, bool]:
    """KServe V1 body for a tabular model → (table, want probabilities)."""
    from .codec import v1_key, v1_wants_proba

    key = v1_key(payload)
    proba = v1_wants_proba(payload, signature)
    value = payload[key]
    if type(value) is dict:
        return table_from_columns(value, signature, limits, key), proba
    return table_from_rows(value, signature, limits, key), proba


def _tensor_values(entry: Any, index: int, limits: Limits) -> tuple[str, list[int], Any]:
    where = f"inputs[{index}]"
    if type(entry) is not dict:
        raise ServingError(422, f"{where} must be an object with name, shape, datatype, data")
    for field in ("name", "shape", "datatype", "data"):
        if field not in entry:
            raise ServingError(422, f"{where} has no '{field}'")
    name, shape, datatype, data = entry["name"], entry["shape"], entry["datatype"], entry["data"]
    if type(name) is not str:
        raise ServingError(422, f"{where}.name must be a string")
    if (
        type(shape) is not list
        or not 1 <= len(shape) <= 2
        or type(shape[0]) is not int
        or shape[0] < 0
        or (len(shape) == 2 and (type(shape[1]) is not int or shape[1] < 0))
    ):
        raise ServingError(422, f"{where}.shape must be [rows] or [rows, columns]")
    if datatype not in _V2_TYPES:
        raise ServingError(
            422, f"{where}.datatype {_describe(datatype)} is not one of {sorted(_V2_TYPES)}"
        )
    if shape[0] > limits.max_rows:
        raise ServingError(413, f"{where} has {shape[0]} rows; at most {limits.max_rows}")
    size = math.prod(shape)
    if isinstance(data, np.ndarray):
        values: Any = data
    else:
        if type(data) is not list:
            raise ServingError(422, f"{where}.data must be a list")
        values = _flatten(data, f"{where}.data") if data and type(data[0]) is list else data
        allowed = _ALLOWED.get(datatype, _NUMERIC_VALUES)
        if not set(map(type, values)) <= allowed:
            j, value = next((j, v) for j, v in enumerate(values) if type(v) not in allowed)
            if type(value) in _SCALARS:
                raise ServingError(
                    422, f"{where} ({name!r}) is {datatype} but holds {_describe(value)}"
                )
            raise ServingError(422, f"{where}.data[{j}] is {_describe(value)}, not a value")
    if len(values) != size:
        raise ServingError(
            422, f"{where}.data has {len(values)} values but shape {shape} needs {size}"
        )
    return name, shape, values


def decode_v2_table(payload: Any, signature: ModelSignature, limits: Limits) -> TableRequest:
    """OIP V2 body for a tabular model → TableRequest."""
    if type(payload) is not dict:
        raise ServingError(400, "body must be a JSON object with 'inputs'")
    parameters = payload.get("parameters")
    if type(parameters) is dict:
        content_type = parameters.get("content_type")
        if content_type is not None and content_type not in ("pd", "np"):
            raise ServingError(
                422,
                f"parameters.content_type {_describe(content_type)} is not supported: send "
                "'pd' (one input per column)",
            )
    inputs = payload.get("inputs")
    if type(inputs) is not list or not inputs:
        raise ServingError(422, "'inputs' must be a non-empty list of tensors")
    request_id = v2_request_id(payload)
    outputs = requested_outputs(payload.get("outputs"), signature)
    columns = _columns_of(signature)
    tensors = [_tensor_values(entry, i, limits) for i, entry in enumerate(inputs)]
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] == len(columns) > 1:
        _, shape, values = tensors[0]
        rows = shape[0]
        data = {
            c.name: values[j :: len(columns)]
            if not isinstance(values, np.ndarray)
            else values.reshape(shape)[:, j]
            for j, c in enumerate(columns)
        }
    else:
        data = {}
        rows_seen = set()
        for name, shape, values in tensors:
            if len(shape) == 2 and shape[1] != 1:
                raise ServingError(
                    422, f"input {name!r} must have shape [rows] or [rows, 1] (one column)"
                )
            if name in data:
                raise ServingError(422, f"input {name!r} is sent twice")
            data[name] = values
            rows_seen.add(shape[0])
        if data.keys() != {c.name for c in columns}:
            raise _name_mismatch(set(data.keys()), columns, "inputs")
        if len(rows_seen) != 1:
            raise ServingError(422, "input tensors have different numbers of rows")
        rows = rows_seen.pop()
    _check_rows(rows, limits, "inputs")
    table = Table({c.name: column_array(c, data[c.name], limits) for c in columns}, rows)
    return TableRequest(table, outputs, "predict_proba" in outputs, request_id)


def to_frame(table: Table, signature: ModelSignature) -> Any:
    """The table as the pandas DataFrame the model was fitted on (dtypes as recorded)."""
    import pandas as pd

    data: dict[str, Any] = {}
    for column in _columns_of(signature):
        values = table.columns[column.name]
        dtype = column.dtype
        if dtype == "category" and column.categories is not None:
            # Unseen values become missing, as pandas does when casting to the dtype (by codes:
            # pandas is deprecating values outside the categories in the constructor).
            categories = pd.Index(list(column.categories))
            codes = categories.get_indexer(pd.Index(values, dtype=object))
            data[column.name] = pd.Categorical.from_codes(codes, categories=categories)
        elif column.datatype == "INT64" and dtype.startswith(("int", "uint")):
            data[column.name] = values if np.isnan(values).any() else values.astype(dtype)
        elif column.datatype == "BOOL" and values.dtype == bool:
            data[column.name] = values
        else:
            data[column.name] = values
    return pd.DataFrame(data, copy=False)
