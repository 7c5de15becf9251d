"""A reference profile of the training inputs, saved with the model, and the PSI against it.

Per numeric feature the profile keeps the inner bin edges (the unique deciles of the training
column, by default) and the share of the non-missing training rows in each bin. The server
bins its recent window of rows the same way and exports the population stability index of
each feature, ``sum((a - e) * ln(a / e))`` over the bins (``a`` live, ``e`` reference share):
about 0 for the same distribution, over 0.25 for a large shift.

A value ``x`` falls in bin ``i`` when ``edges[i - 1] < x <= edges[i]``
(``np.searchsorted(edges, x, side="left")``), for reference and live rows alike. Missing
values (NaN) are left out of both. Pure: numpy and pydantic only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The zip member of a skops artifact that holds the profile (JSON).
REFERENCE_MEMBER = "modelship-reference.json"
REFERENCE_FORMAT: Literal[1] = 1
#: Shares are floored at this, so an empty bin does not make the PSI infinite.
PSI_FLOOR = 1e-4
DEFAULT_BINS = 10


class FeatureProfile(BaseModel):
    """One feature's bins: inner edges and the training rows' share of each bin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    edges: list[float] = Field(description="Ascending, unique, finite inner bin edges.")
    proportions: list[float] = Field(
        description="Share of the non-missing training rows in each bin (len(edges) + 1)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureProfile:
        edges, shares = self.edges, self.proportions
        if not all(math.isfinite(e) for e in edges):
            raise ValueError(f"feature {self.name!r}: edges must be finite numbers")
        if any(b <= a for a, b in pairwise(edges)):
            raise ValueError(f"feature {self.name!r}: edges must be strictly ascending")
        if len(shares) != len(edges) + 1:
            raise ValueError(
                f"feature {self.name!r}: {len(edges)} edges need {len(edges) + 1} "
                f"proportions, got {len(shares)}"
            )
        if not all(math.isfinite(p) and p >= 0 for p in shares):
            raise ValueError(f"feature {self.name!r}: proportions must be non-negative numbers")
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"feature {self.name!r}: proportions sum to {sum(shares)}, not 1")
        return self


class ReferenceProfile(BaseModel):
    """The JSON document ``save_model(..., reference=)`` writes into the artifact."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal[1] = REFERENCE_FORMAT
    rows: int = Field(ge=0, description="Training rows the profile was made of.")
    features: list[FeatureProfile]

    @model_validator(mode="after")
    def _unique_names(self) -> ReferenceProfile:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return self

    def by_name(self) -> dict[str, FeatureProfile]:
        return {f.name: f for f in self.features}


def bin_shares(edges: Sequence[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of ``values`` (no NaN, at least one) in each of the ``len(edges) + 1`` bins."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return counts / values.shape[0]  # type: ignore[no-any-return]


def feature_profile(name: str, column: np.ndarray, bins: int = DEFAULT_BINS) -> FeatureProfile:
    """The profile of one training column (NaN and infinities left out). A constant column,
    or one without any finite value, has no edges: one bin."""
    values = np.asarray(column, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.shape[0] == 0:
        return FeatureProfile(name=name, edges=[], proportions=[1.0])
    levels = np.arange(1, bins) / bins
    constant = values.min() == values.max()
    edges = np.empty(0) if bins == 1 or constant else np.unique(np.quantile(values, levels))
    return FeatureProfile(
        name=name, edges=edges.tolist(), proportions=bin_shares(edges, values).tolist()
    )


def _numeric_columns(X: Any, feature_names: Sequence[str] | None) -> list[tuple[str, np.ndarray]]:
    columns = getattr(X, "columns", None)
    if columns is not None and hasattr(X, "dtypes"):  # a pandas DataFrame
        import pandas as pd

        out = []
        for name in columns:
            series = X[name]
            dtype = series.dtype
            if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
                continue
            out.append((str(name), series.to_numpy(dtype=np.float64, na_value=np.nan)))
        return out
    try:
        matrix = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"reference rows must be numbers (or a DataFrame): {exc}") from None
    if matrix.ndim != 2:
        raise ValueError(f"reference rows must be 2-dimensional, got shape {matrix.shape}")
    k = matrix.shape[1]
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} feature names for {k} reference columns")
    return [(str(name), matrix[:, i]) for i, name in enumerate(names)]


def profile_of(
    X: Any, feature_names: Sequence[str] | None = None, bins: int = DEFAULT_BINS
) -> ReferenceProfile:
    """The reference profile of training inputs ``X``: a DataFrame (its numeric columns, by
    name; bool and non-numeric columns are left out) or a 2-d array (names ``feature_names``,
    else ``x0`` .. ``x{n-1}``). Edges are the unique quantiles 1/bins .. (bins-1)/bins of
    each column's finite values; a constant column, or one without any finite value, has
    one bin."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    columns = _numeric_columns(X, feature_names)
    features = [feature_profile(name, col, bins) for name, col in columns]
    return ReferenceProfile(rows=len(X), features=features)


def psi(reference: FeatureProfile, values: np.ndarray) -> float | None:
    """Population stability index of ``values`` against ``reference`` (NaN left out; both
    shares floored at :data:`PSI_FLOOR`); None when no value is left."""
    live = np.asarray(values, dtype=np.float64).reshape(-1)
    live = live[~np.isnan(live)]
    if live.shape[0] == 0:
        return None
    a = np.maximum(bin_shares(reference.edges, live), PSI_FLOOR)
    e = np.maximum(np.asarray(reference.proportions, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def align(
    profile: ReferenceProfile, names: Sequence[str], positional: int | None = None
) -> tuple[list[FeatureProfile | None], str | None]:
    """The reference of each of the drift summary's features ``names``, and a warning when
    some (or all) have none.

    Named features are matched by name. ``positional``: the model's columns have no names
    (``names`` are the first of its ``positional`` column indices); the profile must then
    have one feature per column, taken in order.
    """
    if positional is not None:
        if len(profile.features) != positional:
            return [None] * len(names), (
                f"the reference profile has {len(profile.features)} features, the model "
                f"{positional}: no PSI is exported"
            )
        return list(profile.features[: len(names)]), None
    by_name = profile.by_name()
    found = [by_name.get(name) for name in names]
    missing = [name for name, f in zip(names, found, strict=True) if f is None]
    if not missing:
        return found, None
    if len(missing) == len(names):
        return found, (
            f"the reference profile names none of the model's features {list(names)[:8]}: "
            "no PSI is exported"
        )
    return found, f"the reference profile has no feature {missing[:8]}: no PSI for them"
