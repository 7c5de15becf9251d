"""The reference profile and the PSI, against hand-written numpy, and the drift summary's
PSI export (no server)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from modelship_serving import contract
from modelship_serving.drift import DriftSummary
from modelship_serving.profile import (
    PSI_FLOOR,
    FeatureProfile,
    ReferenceProfile,
    align,
    profile_of,
    psi,
)
from pydantic import ValidationError

BASE = {"deployment": "d", "model": "m", "version": "1", "variant": "stable"}


def test_psi_equals_the_formula_on_known_proportions() -> None:
    """Four bins of a quarter each; live values put 0.4, 0.3, 0.2, 0.1 in them."""
    reference = FeatureProfile(
        name="a", edges=[1.0, 2.0, 3.0], proportions=[0.25, 0.25, 0.25, 0.25]
    )
    # x <= 1 is bin 0, 1 < x <= 2 bin 1, ...: the edges themselves fall in the lower bin.
    live = np.array([0.0] * 3 + [1.0] + [1.5] * 2 + [2.0] + [3.0] * 2 + [7.0])
    a = np.array([0.4, 0.3, 0.2, 0.1])
    e = np.full(4, 0.25)
    assert psi(reference, live) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert psi(reference, np.array([0.5, 1.5, 2.5, 3.5])) == pytest.approx(0.0)


def test_psi_floors_empty_bins_and_leaves_out_missing_values() -> None:
    reference = FeatureProfile(name="a", edges=[0.0], proportions=[1.0, 0.0])
    live = np.array([5.0, 5.0, np.nan, 5.0])  # every value in the bin training never saw
    a = np.array([PSI_FLOOR, 1.0])
    e = np.array([1.0, PSI_FLOOR])
    expected = float(np.sum((a - e) * np.log(a / e)))
    assert psi(reference, live) == pytest.approx(expected)
    assert math.isfinite(expected) and expected > 10
    assert psi(reference, np.array([np.nan, np.nan])) is None
    assert psi(reference, np.array([])) is None


def test_profile_edges_are_the_unique_deciles_and_proportions_their_bins() -> None:
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.normal(size=997), rng.integers(0, 3, 997).astype(float)])
    X[::10, 0] = np.nan
    profile = profile_of(X)
    assert profile.rows == 997 and [f.name for f in profile.features] == ["x0", "x1"]
    for j, feature in enumerate(profile.features):
        column = X[:, j][~np.isnan(X[:, j])]
        edges = np.unique(np.quantile(column, np.arange(1, 10) / 10))
        assert feature.edges == pytest.approx(edges.tolist())
        bins = np.searchsorted(edges, column, side="left")
        shares = np.bincount(bins, minlength=len(edges) + 1) / len(column)
        assert feature.proportions == pytest.approx(shares.tolist())
        assert sum(feature.proportions) == pytest.approx(1.0)
    assert len(profile.features[0].edges) == 9
    assert profile.features[1].edges == [0.0, 1.0, 2.0]  # ties collapse to unique edges
    assert psi(profile.features[0], X[:, 0]) == pytest.approx(0.0)


def test_constant_missing_and_non_numeric_columns() -> None:
    frame = pd.DataFrame(
        {
            "constant": [4.0] * 50,
            "empty": [np.nan] * 50,
            "flag": [True, False] * 25,
            "plan": ["a", "b"] * 25,
            "count": pd.array([*range(49), None], dtype="Int64"),
        }
    )
    profile = profile_of(frame, bins=5)
    by_name = profile.by_name()
    assert sorted(by_name) == ["constant", "count", "empty"]  # bool and strings left out
    for one_bin in ("constant", "empty"):
        assert by_name[one_bin].edges == [] and by_name[one_bin].proportions == [1.0]
    counts = np.arange(49.0)
    assert by_name["count"].edges == pytest.approx(
        np.quantile(counts, [0.2, 0.4, 0.6, 0.8]).tolist()
    )
    assert psi(by_name["constant"], np.array([4.0, 9.0])) == pytest.approx(0.0)


def test_profiles_round_trip_and_bad_ones_are_refused() -> None:
    profile = profile_of(np.arange(20.0).reshape(10, 2), feature_names=["a", "b"])
    assert ReferenceProfile.model_validate_json(profile.model_dump_json()) == profile
    with pytest.raises(ValidationError, match="proportions"):
        FeatureProfile(name="a", edges=[1.0], proportions=[1.0])
    with pytest.raises(ValidationError, match="ascending"):
        FeatureProfile(name="a", edges=[2.0, 1.0], proportions=[0.5, 0.5, 0.0])
    with pytest.raises(ValidationError, match="sum"):
        FeatureProfile(name="a", edges=[1.0], proportions=[0.5, 0.4])
    with pytest.raises(ValidationError, match="unique"):
        ReferenceProfile(rows=1, features=[profile.features[0], profile.features[0]])
    with pytest.raises(ValidationError):
        ReferenceProfile.model_validate({"format": 2, "rows": 1, "features": []})
    with pytest.raises(ValueError, match="2 feature names for 3"):
        profile_of(np.zeros((4, 3)), feature_names=["a", "b"])


def test_align_matches_names_or_positions() -> None:
    profile = profile_of(np.zeros((4, 3)), feature_names=["a", "b", "c"])
    found, warning = align(profile, ["c", "a"])
    assert [f.name for f in found if f] == ["c", "a"] and warning is None
    found, warning = align(profile, ["a", "z"])
    assert found[1] is None and warning is not None and "'z'" in warning
    found, warning = align(profile, ["y", "z"])
    assert found == [None, None] and warning is not None and "none" in warning
    positional = profile_of(np.zeros((4, 3)))
    found, warning = align(positional, ["0", "1"], positional=3)
    assert [f.name for f in found if f] == ["x0", "x1"] and warning is None
    found, warning = align(positional, ["0", "1", "2", "3"], positional=4)
    assert found == [None] * 4 and warning is not None and "3 features" in warning


def psi_samples(drift: DriftSummary) -> dict[str, float]:
    for family in drift.collect():
        if family.name == contract.INPUT_FEATURE_PSI:
            assert family.type == "gauge"
            return {s.labels[contract.FEATURE]: s.value for s in family.samples}
    return {}


def test_drift_summary_exports_psi_once_the_window_has_enough_values() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 3))
    profile = profile_of(train)
    drift = DriftSummary(BASE, ["a", "b", "c"], window=512)
    drift.use_reference([profile.features[0], profile.features[1], None])
    live = rng.normal(size=(contract.PSI_MIN_ROWS - 1, 3))
    drift.observe(live)
    assert psi_samples(drift) == {}  # too few rows: nothing to judge
    live[:, 1] = np.nan
    drift.observe(live[:1])  # the hundredth row, but b's value is missing
    assert set(psi_samples(drift)) == {"a"}
    for _ in range(600):  # one-row requests, past the window's end
        drift.observe_row(rng.normal(size=3).tolist())
    samples = psi_samples(drift)
    assert set(samples) == {"a", "b"}  # c has no reference
    recent = np.array(drift._buffer)
    for j, name in enumerate(["a", "b"]):
        assert samples[name] == pytest.approx(psi(profile.features[j], recent[:, j]))
        assert samples[name] < 0.1
    shifted = rng.normal(size=(512, 3)) + np.array([0.0, 3.0, 0.0])
    drift.observe(shifted)
    samples = psi_samples(drift)
    assert samples["b"] > 1 and samples["a"] < 0.1


def test_no_reference_no_psi_family() -> None:
    drift = DriftSummary(BASE, ["a"], window=128)
    drift.observe(np.ones((200, 1)))
    assert contract.INPUT_FEATURE_PSI not in {f.name for f in drift.collect()}
    assert not drift.has_reference
    with pytest.raises(ValueError, match="2 reference profiles for 1"):
        drift.use_reference([None, None])
