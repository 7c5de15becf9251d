"""What a fitted model expects and returns, read once at load time and used to validate input.

The columns of a model fitted on a DataFrame come from two places:

- recorded at save time (``save_model(estimator, path, example=frame)``): the example frame's
  column names and dtypes, written next to the model inside the artifact as JSON (covered by
  the artifact's sha256, read without unpickling anything);
- read from the estimator otherwise: ``feature_names_in_``, and per column what its
  ColumnTransformer branch does with it: the categories an encoder saw in training and what it
  does with unseen ones (``handle_unknown``), whether an imputer fills missing values, whether
  it is dropped.

A model is *tabular* when it needs a DataFrame: some column is not a number, or its
ColumnTransformer selects columns by name. Only then does the server build columns (and a
DataFrame when scikit-learn runs); every other model keeps the numeric matrix path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EstimatorType = Literal["classifier", "regressor", "other"]
#: OIP datatypes a column can have; ANY for columns the model drops (any scalar is accepted).
ColumnType = Literal["FP64", "INT64", "BOOL", "BYTES", "ANY"]
Category = str | int | float | bool
SIGNATURE_MEMBER = "modelship-signature.json"
SIGNATURE_FORMAT = 1


class Column(BaseModel):
    """One named input column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    datatype: ColumnType = Field(description="OIP datatype of the column's values.")
    dtype: str = Field(default="float64", description="pandas dtype the model was fitted on.")
    categories: tuple[Category, ...] | None = Field(
        default=None, description="Values seen in training (encoded columns)."
    )
    handle_unknown: Literal["error", "ignore"] | None = Field(
        default=None, description="What the model does with an unseen category."
    )
    nullable: bool = Field(default=False, description="null is accepted (imputed or native).")

    @property
    def numeric(self) -> bool:
        return self.datatype in ("FP64", "INT64")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "dtype": self.dtype}
        if self.categories is not None:
            out["categories"] = list(self.categories)
            out["handle_unknown"] = self.handle_unknown
        if self.nullable:
            out["nullable"] = True
        return out


class SavedSignature(BaseModel):
    """The JSON document ``save_model(..., example=)`` writes into the artifact."""

    model_config = ConfigDict(extra="ignore")

    format: int = SIGNATURE_FORMAT
    columns: tuple[Column, ...]
    tabular: bool
    outputs: tuple[str, ...] = ("predict",)


@dataclass(frozen=True)
class ModelSignature:
    """The contract between clients and the model: features, columns, classes, kind."""

    n_features: int
    feature_names: tuple[str, ...] | None
    classes: tuple[Any, ...] | None
    estimator_type: EstimatorType
    estimator_class: str
    has_predict_proba: bool
    sklearn_version_saved: str
    sklearn_version_runtime: str
    columns: tuple[Column, ...] | None = None
    tabular: bool = False
    source: Literal["saved", "estimator"] = "estimator"

    @property
    def version_skew(self) -> bool:
        """True when the artifact was saved with another scikit-learn than the one serving it."""
        return self.sklearn_version_saved != self.sklearn_version_runtime

    @property
    def predict_datatype(self) -> str:
        if self.classes is None:
            return "FP64"
        kinds = {type(c) for c in self.classes}
        if kinds == {bool}:
            return "BOOL"
        if kinds <= {int}:
            return "INT64"
        if kinds <= {int, float}:
            return "FP64"
        return "BYTES"

    def drift_features(self) -> tuple[str, ...]:
        """Names of the numeric input features the drift summary follows."""
        if self.tabular and self.columns is not None:
            return tuple(c.name for c in self.columns if c.numeric)
        return self.feature_names or tuple(str(i) for i in range(self.n_features))

    def v2_inputs(self) -> list[dict[str, Any]]:
        """OIP metadata inputs: one per column for named columns, else one [-1, n] tensor."""
        if self.columns is None:
            return [{"name": "input-0", "datatype": "FP64", "shape": [-1, self.n_features]}]
        inputs = []
        for column in self.columns:
            entry: dict[str, Any] = {
                "name": column.name,
                "datatype": "BYTES" if column.datatype == "ANY" else column.datatype,
                "shape": [-1],
            }
            parameters: dict[str, Any] = {"dtype": column.dtype}
            if column.categories is not None:
                parameters["categories"] = list(column.categories)
                parameters["handle_unknown"] = column.handle_unknown
            if column.nullable:
                parameters["nullable"] = True
            entry["parameters"] = parameters
            inputs.append(entry)
        return inputs

    def v2_outputs(self) -> list[dict[str, Any]]:
        """OIP metadata outputs: predict (with the classes) and predict_proba when it exists."""
        predict: dict[str, Any] = {
            "name": "predict",
            "datatype": self.predict_datatype,
            "shape": [-1],
        }
        outputs = [predict]
        if self.classes is not None:
            predict["parameters"] = {"classes": list(self.classes)}
        if self.has_predict_proba:
            n = len(self.classes or ())
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, n]})
        return outputs

    def as_json(self) -> dict[str, Any]:
        """JSON-friendly description for the metadata endpoints."""
        return {
            "n_features": self.n_features,
            "feature_names": list(self.feature_names) if self.feature_names else None,
            "columns": [c.describe() for c in self.columns] if self.columns else None,
            "tabular": self.tabular,
            "signature_source": self.source,
            "classes": list(self.classes) if self.classes is not None else None,
            "estimator_type": self.estimator_type,
            "estimator_class": self.estimator_class,
            "predict_proba": self.has_predict_proba,
            "sklearn_version_saved": self.sklearn_version_saved,
            "sklearn_version_runtime": self.sklearn_version_runtime,
        }


def _native(value: Any) -> Any:
    """numpy scalars to plain Python, so classes compare and serialise like JSON values."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# -- columns from the estimator --------------------------------------------------------------

_ENCODERS = {"OneHotEncoder", "OrdinalEncoder", "TargetEncoder"}


def column_transformer_of(estimator: Any) -> Any | None:
    """The ColumnTransformer that first sees the input (the estimator or a Pipeline's first
    step), or None."""
    if type(estimator).__name__ == "Pipeline" and estimator.steps:
        first = estimator.steps[0][1]
        return first if type(first).__name__ == "ColumnTransformer" else None
    return estimator if type(estimator).__name__ == "ColumnTransformer" else None


def selected_columns(ct: Any, columns: Any, names: tuple[str, ...]) -> list[str]:
    """A fitted ColumnTransformer branch's column selection, as input column names."""
    import numpy as np

    if callable(columns):
        columns = columns(_empty_frame(names))
    if isinstance(columns, str):
        return [columns]
    if isinstance(columns, int):
        return [names[columns]]
    if isinstance(columns, slice):
        if columns.start is None or isinstance(columns.start, int):
            return list(names[columns])
        start, stop = names.index(columns.start), names.index(columns.stop) + 1
        return list(names[start:stop])
    array = np.asarray(columns)
    if array.size == 0:
        return []
    if array.dtype.kind == "b":
        return [n for n, keep in zip(names, array.tolist(), strict=True) if keep]
    if array.dtype.kind in "iu":
        return [names[int(i)] for i in array.tolist()]
    return [str(c) for c in array.tolist()]


def _empty_frame(names: tuple[str, ...]) -> Any:
    import pandas as pd

    return pd.DataFrame({n: [] for n in names})


def _selects_by_name(ct: Any) -> bool:
    for _, _, columns in ct.transformers_:
        if callable(columns) or isinstance(columns, str):
            return True
        if isinstance(columns, slice) and isinstance(columns.start, str):
            return True
        if isinstance(columns, list | tuple) and columns and isinstance(columns[0], str):
            return True
    return False


def _branch_columns(transformer: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """What one ColumnTransformer branch says about each of its columns."""
    info: dict[str, dict[str, Any]] = {n: {} for n in names}
    if transformer == "drop":
        for n in names:
            info[n]["datatype"] = "ANY"
        return info
    if transformer == "passthrough":
        return info
    steps = (
        [s for _, s in transformer.steps]
        if type(transformer).__name__ == "Pipeline"
        else [transformer]
    )
    for position, step in enumerate(steps):
        kind = type(step).__name__
        if kind == "SimpleImputer":
            statistics = getattr(step, "statistics_", None)
            missing = getattr(step, "missing_values", None)
            for i, n in enumerate(names):
                if position == 0 and _is_nan(missing):
                    info[n]["nullable"] = True
                if statistics is not None and statistics.dtype.kind == "O":
                    value = statistics[i]
                    if isinstance(value, str):
                        info[n].setdefault("datatype", "BYTES")
        elif kind in _ENCODERS and hasattr(step, "categories_"):
            unknown = getattr(step, "handle_unknown", "error")
            for i, n in enumerate(names):
                categories = [_native(c) for c in step.categories_[i].tolist()]
                known = [c for c in categories if not _is_missing(c)]
                if any(_is_missing(c) for c in categories):
                    info[n]["nullable"] = True
                info[n]["categories"] = tuple(known)
                info[n]["handle_unknown"] = (
                    "error" if unknown == "error" and kind != "TargetEncoder" else "ignore"
                )
                if known and all(isinstance(c, str) for c in known):
                    info[n]["datatype"] = "BYTES"
                elif known and all(isinstance(c, bool) for c in known):
                    info[n]["datatype"] = "BOOL"
                elif known and all(isinstance(c, int) for c in known):
                    info[n].setdefault("datatype", "INT64")
                elif any(isinstance(c, str) for c in known):
                    info[n]["datatype"] = "BYTES"
            break  # later steps see encoded numbers
        else:
            break
    return info


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_missing(value: Any) -> bool:
    return value is None or _is_nan(value)


def columns_of(estimator: Any, example: Any = None) -> tuple[tuple[Column, ...], bool] | None:
    """The estimator's named columns and whether it is tabular; None without feature names.

    ``example`` (a pandas DataFrame like the training data) fixes the dtypes."""
    raw = getattr(estimator, "feature_names_in_", None)
    if raw is None:
        return None
    names = tuple(str(n) for n in raw)
    info: dict[str, dict[str, Any]] = {n: {} for n in names}
    ct = column_transformer_of(estimator)
    by_name = False
    if ct is not None and hasattr(ct, "transformers_"):
        by_name = _selects_by_name(ct)
        for _, transformer, columns in ct.transformers_:
            selected = selected_columns(ct, columns, names)
            for n, found in _branch_columns(transformer, selected).items():
                info[n].update(found)
    if example is not None:
        _apply_example(info, example, names)
    columns = []
    for n in names:
        found = info[n]
        datatype = found.get("datatype", "FP64")
        dtype = found.get("dtype") or ("object" if datatype in ("BYTES", "ANY") else "float64")
        if datatype == "BOOL" and "dtype" not in found:
            dtype = "bool"
        if datatype == "INT64" and "dtype" not in found:
            dtype = "int64"
        columns.append(
            Column(
                name=n,
                datatype=datatype,
                dtype=dtype,
                categories=found.get("categories"),
                handle_unknown=found.get("handle_unknown"),
                nullable=bool(found.get("nullable", False)),
            )
        )
    tabular = by_name or any(c.datatype in ("BYTES", "BOOL", "ANY") for c in columns)
    tabular = tabular or any(c.dtype == "category" for c in columns)
    return tuple(columns), tabular


def _apply_example(info: dict[str, dict[str, Any]], example: Any, names: tuple[str, ...]) -> None:
    import pandas as pd

    if not isinstance(example, pd.DataFrame):
        raise TypeError("example must be a pandas DataFrame like the training data")
    given = [str(c) for c in example.columns]
    if set(given) != set(names):
        missing = sorted(set(names) - set(given))
        unknown = sorted(set(given) - set(names))
        raise ValueError(
            f"example columns differ from the model's: missing {missing}, unknown {unknown}"
        )
    for column in example.columns:
        series = example[column]
        found = info[str(column)]
        dtype = series.dtype
        found["dtype"] = str(dtype)
        if bool(series.isna().any()):
            found["nullable"] = True
        if isinstance(dtype, pd.CategoricalDtype):
            cats = [_native(c) for c in dtype.categories.tolist()]
            found.setdefault("categories", tuple(cats))
            found.setdefault("handle_unknown", "error")
            found["datatype"] = "BYTES" if any(isinstance(c, str) for c in cats) else "FP64"
        elif pd.api.types.is_bool_dtype(dtype):
            found["datatype"] = "BOOL"
        elif pd.api.types.is_integer_dtype(dtype):
            found["datatype"] = "INT64"
        elif pd.api.types.is_float_dtype(dtype):
            found["datatype"] = "FP64"
        elif found.get("datatype") != "ANY":
            found["datatype"] = "BYTES"


def signature_of(
    estimator: Any, sklearn_version_saved: str, saved: SavedSignature | None = None
) -> ModelSignature:
    """Read the signature from a fitted estimator (pipelines delegate to their steps), with
    the columns recorded at save time when the artifact has them."""
    import sklearn
    from sklearn.base import is_classifier, is_regressor

    n_features = getattr(estimator, "n_features_in_", None)
    if not isinstance(n_features, int) or n_features < 1:
        raise ValueError(
            f"{type(estimator).__name__} has no n_features_in_: is it fitted on a 2-D array?"
        )
    names = getattr(estimator, "feature_names_in_", None)
    feature_names = tuple(str(n) for n in names) if names is not None else None
    classes_attr = getattr(estimator, "classes_", None)
    classes = tuple(_native(c) for c in classes_attr) if classes_attr is not None else None
    kind: EstimatorType
    if is_classifier(estimator):
        kind = "classifier"
    elif is_regressor(estimator):
        kind = "regressor"
    else:
        kind = "other"
    try:
        has_proba = callable(getattr(estimator, "predict_proba", None))
    except AttributeError:  # available_if raises when the final step lacks it
        has_proba = False
    columns: tuple[Column, ...] | None = None
    tabular = False
    source: Literal["saved", "estimator"] = "estimator"
    if saved is not None:
        saved_names = tuple(c.name for c in saved.columns)
        if saved_names != feature_names:
            raise ValueError(
                f"the recorded signature's columns {list(saved_names)[:10]} are not the "
                f"model's feature_names_in_ {list(feature_names or ())[:10]}"
            )
        columns, tabular, source = saved.columns, saved.tabular, "saved"
    else:
        found = columns_of(estimator)
        if found is not None:
            columns, tabular = found
    return ModelSignature(
        n_features=n_features,
        feature_names=feature_names,
        classes=classes if kind == "classifier" else None,
        estimator_type=kind,
        estimator_class=f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        has_predict_proba=has_proba and kind == "classifier",
        sklearn_version_saved=sklearn_version_saved,
        sklearn_version_runtime=sklearn.__version__,
        columns=columns,
        tabular=tabular,
        source=source,
    )
