"""``numpy-tabular``: a Pipeline whose first step is a ColumnTransformer, run on the decoded
columns without pandas or scikit-learn's per-call validation.

The ColumnTransformer's branches are compiled into NumPy operations on the request's columns,
in scikit-learn's order of operations, writing the same matrix ``transform`` would:

- ``OneHotEncoder`` (no ``drop``, no infrequent categories, float64 output): a dict lookup per
  value, unseen values (``handle_unknown="ignore"``) all zeros;
- ``SimpleImputer`` (``missing_values=nan``, no indicator): the fitted statistic per column;
- ``StandardScaler`` / ``MinMaxScaler`` on numeric columns, and ``passthrough`` / ``drop``;
- any of these chained in a Pipeline branch (imputer, then encoder or scalers).

The steps after the ColumnTransformer run on the existing accelerated heads (fastpath.py). A
model with anything else (OrdinalEncoder, TargetEncoder, one-hot ``drop`` or infrequent
categories, custom steps, ...) raises NotImplementedError here and is served by scikit-learn on
a DataFrame; so is one whose compiled output disagrees with scikit-learn on a probe table at
load time (``agrees``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .fastpath import (
    ATOL,
    RTOL,
    CompiledPath,
    Prediction,
    SklearnPath,
    _min_max_scaler,
    _qualname,
    _standard_scaler,
    compile_estimator,
)
from .signature import Column, ModelSignature, selected_columns
from .tabular import Table, to_frame

log = logging.getLogger("modelship.serving")
Block = Callable[[Table], np.ndarray]
_SCALERS = {
    "sklearn.preprocessing._data.StandardScaler": _standard_scaler,
    "sklearn.preprocessing._data.MinMaxScaler": _min_max_scaler,
}
_IMPUTER = "sklearn.impute._base.SimpleImputer"
_ONE_HOT = "sklearn.preprocessing._encoders.OneHotEncoder"


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_identity(transformer: Any) -> bool:
    """'passthrough', or the identity FunctionTransformer a fitted ColumnTransformer puts in
    its place."""
    if isinstance(transformer, str):
        return transformer == "passthrough"
    return (
        _qualname(transformer) == "sklearn.preprocessing._function_transformer.FunctionTransformer"
        and transformer.func is None
    )


def _imputer_fills(step: Any) -> list[Any]:
    if step.add_indicator or not _is_nan(step.missing_values):
        raise NotImplementedError("SimpleImputer with an indicator or other missing_values")
    fills = [v.item() if hasattr(v, "item") else v for v in step.statistics_.tolist()]
    if any(_is_nan(v) or v is None for v in fills):
        raise NotImplementedError("SimpleImputer with an all-missing column")
    return fills


def _one_hot(step: Any, columns: list[str]) -> tuple[list[dict[Any, int]], int]:
    if getattr(step, "drop_idx_", None) is not None:
        raise NotImplementedError("OneHotEncoder with drop")
    if getattr(step, "_infrequent_enabled", False):
        raise NotImplementedError("OneHotEncoder with infrequent categories")
    if np.dtype(step.dtype) != np.float64:
        raise NotImplementedError("OneHotEncoder with a dtype other than float64")
    lookups = []
    width = 0
    for categories in step.categories_:
        values = [c.item() if hasattr(c, "item") else c for c in categories.tolist()]
        if any(v is None or _is_nan(v) for v in values):
            raise NotImplementedError("OneHotEncoder with missing values as a category")
        lookups.append({v: width + i for i, v in enumerate(values)})
        width += len(values)
    if len(lookups) != len(columns):
        raise NotImplementedError("OneHotEncoder columns")
    return lookups, width


def _branch(transformer: Any, names: list[str], spec: dict[str, Column]) -> Block:
    """One ColumnTransformer branch as a function of the table."""
    numeric = all(spec[n].numeric for n in names)
    if _is_identity(transformer):
        if not numeric:
            raise NotImplementedError("passthrough of a non-numeric column")
        return lambda table: table.numeric(names)
    steps = (
        [s for _, s in transformer.steps if s not in (None, "passthrough")]
        if _qualname(transformer) == "sklearn.pipeline.Pipeline"
        else [transformer]
    )
    fills: list[Any] | None = None
    if steps and _qualname(steps[0]) == _IMPUTER:
        fills = _imputer_fills(steps[0])
        steps = steps[1:]
    for n in names:
        if spec[n].nullable and fills is None:
            raise NotImplementedError(f"column {n!r} may be missing and nothing imputes it")
    if steps and _qualname(steps[0]) == _ONE_HOT:
        if len(steps) > 1:
            raise NotImplementedError("steps after a OneHotEncoder")
        lookups, width = _one_hot(steps[0], names)
        return _one_hot_block(names, lookups, width, fills)
    if not numeric:
        raise NotImplementedError("a non-numeric column without a OneHotEncoder")
    scalers = []
    for step in steps:
        factory = _SCALERS.get(_qualname(step))
        if factory is None:
            raise NotImplementedError(f"ColumnTransformer step {_qualname(step)}")
        scalers.append(factory(step))
    fill_row = np.asarray(fills, dtype=np.float64) if fills is not None else None

    def block(table: Table) -> np.ndarray:
        x = table.numeric(names)
        if fill_row is not None:
            missing = np.isnan(x)
            if missing.any():
                x = np.where(missing, fill_row, x)
        for scale in scalers:
            x = scale(x)
        return x

    return block


def _one_hot_block(
    names: list[str], lookups: list[dict[Any, int]], width: int, fills: list[Any] | None
) -> Block:
    def block(table: Table) -> np.ndarray:
        out = np.zeros((table.rows, width))
        for j, name in enumerate(names):
            lookup = lookups[j]
            values = table.columns[name].tolist()
            if fills is not None:
                fill = fills[j]
                values = [fill if v != v else v for v in values]  # NaN is the only v != v
            if table.rows == 1:
                index = lookup.get(values[0])
                if index is not None:
                    out[0, index] = 1.0
                continue
            for i, value in enumerate(values):
                index = lookup.get(value)
                if index is not None:
                    out[i, index] = 1.0
        return out

    return block


class TabularPath:
    """A compiled ColumnTransformer feeding an accelerated head (see module docstring)."""

    def __init__(self, blocks: list[tuple[slice, Block]], width: int, head: CompiledPath) -> None:
        self.blocks = blocks
        self.width = width
        self.head = head
        self.name = "numpy-tabular"

    def matrix(self, table: Table) -> np.ndarray:
        x = np.empty((table.rows, self.width))
        for where, block in self.blocks:
            x[:, where] = block(table)
        return x

    def run_table(self, table: Table, want_proba: bool) -> Prediction:
        return self.head.run(self.matrix(table), want_proba)


def compile_tabular(estimator: Any, signature: ModelSignature) -> TabularPath:
    """The numpy-tabular path for ``estimator``; NotImplementedError when it does not apply."""
    if _qualname(estimator) != "sklearn.pipeline.Pipeline" or len(estimator.steps) < 2:
        raise NotImplementedError("not a Pipeline starting with a ColumnTransformer")
    ct = estimator.steps[0][1]
    if _qualname(ct) != "sklearn.compose._column_transformer.ColumnTransformer":
        raise NotImplementedError("not a Pipeline starting with a ColumnTransformer")
    if signature.columns is None:
        raise NotImplementedError("no named columns")
    spec = {c.name: c for c in signature.columns}
    names = tuple(spec)
    blocks: list[tuple[slice, Block]] = []
    width = 0
    for name, transformer, columns in ct.transformers_:
        where = ct.output_indices_[name]
        width = max(width, where.stop)
        if transformer == "drop" or where.stop == where.start:
            continue
        selected = selected_columns(ct, columns, names)
        blocks.append((where, _branch(transformer, selected, spec)))
    rest = estimator.steps[1:]
    final = rest[-1][1] if len(rest) == 1 else type(estimator)(rest)
    head = compile_estimator(final)
    return TabularPath(blocks, width, head)


def probe_table(signature: ModelSignature, rows: int = 128) -> Table:
    """Inputs for the load-time agreement check: known categories (and unseen ones where the
    model ignores them), numbers of several scales, missing values where the model fills them."""
    rng = np.random.default_rng(0)
    assert signature.columns is not None
    columns: dict[str, np.ndarray] = {}
    for column in signature.columns:
        if column.categories:
            choices: list[Any] = list(column.categories)
            if column.handle_unknown == "ignore" and column.datatype == "BYTES":
                choices.append("\x00unseen")
            picked = [choices[i] for i in rng.integers(0, len(choices), rows)]
        elif column.datatype == "BYTES" or column.datatype == "ANY":
            picked = [f"value-{i}" for i in rng.integers(0, 5, rows)]
        elif column.datatype == "BOOL":
            picked = [bool(v) for v in rng.integers(0, 2, rows)]
        else:
            scale = 10.0 ** rng.integers(0, 3, rows)
            picked = (rng.normal(0.0, 1.0, rows) * scale).tolist()
            if column.datatype == "INT64":
                picked = [float(round(v)) for v in picked]
        if column.nullable:
            for i in rng.integers(0, rows, rows // 8):
                picked[int(i)] = math.nan
        if column.numeric:
            columns[column.name] = np.asarray(picked, dtype=np.float64)
        elif column.datatype == "BOOL" and not column.nullable:
            columns[column.name] = np.asarray(picked, dtype=bool)
        else:
            array = np.empty(rows, dtype=object)
            array[:] = picked
            columns[column.name] = array
    return Table(columns, rows)


def agrees(path: TabularPath, reference: SklearnPath, signature: ModelSignature) -> bool:
    """Same class predictions, and values / probabilities within RTOL/ATOL, on a probe table."""
    table = probe_table(signature)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = to_frame(table, signature)
        want_proba = signature.has_predict_proba
        try:
            expected = reference.run_frame(frame, want_proba)
        except (ValueError, TypeError, KeyError):
            return False
        got = path.run_table(table, want_proba)
    if expected.labels.dtype.kind in "fc":
        same = np.allclose(got.labels, expected.labels, rtol=RTOL, atol=ATOL)
    else:
        same = bool(np.array_equal(got.labels, expected.labels))
    if want_proba and expected.proba is not None and got.proba is not None:
        same = same and np.allclose(got.proba, expected.proba, rtol=RTOL, atol=ATOL)
    return bool(same)


def choose_tabular_path(
    estimator: Any, reference: SklearnPath, signature: ModelSignature
) -> TabularPath | SklearnPath:
    """numpy-tabular when it covers the model and agrees with scikit-learn, else scikit-learn
    on a DataFrame."""
    try:
        compiled = compile_tabular(estimator, signature)
    except NotImplementedError as exc:
        log.info("no accelerated tabular path (%s); using scikit-learn on a DataFrame", exc)
        return reference
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        log.warning("cannot compile the tabular path (%r); using scikit-learn", exc)
        return reference
    if not agrees(compiled, reference, signature):
        log.warning(
            "numpy-tabular disagrees with scikit-learn on a probe table; using scikit-learn"
        )
        return reference
    return compiled
