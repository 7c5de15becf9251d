"""Decoding request bodies: every malformed input becomes a ServingError with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from modelship_serving.codec import Limits, decode_v1, decode_v2, encode_v2_output, parse_json
from modelship_serving.errors import ServingError
from modelship_serving.signature import ModelSignature

SIG = ModelSignature(
    n_features=3,
    feature_names=("a", "b", "c"),
    classes=(0, 1),
    estimator_type="classifier",
    estimator_class="x.Y",
    has_predict_proba=True,
    sklearn_version_saved="1",
    sklearn_version_runtime="1",
)
LIMITS = Limits(max_rows=4, allow_non_finite=False)


def refused(fn: object, *args: object) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


def test_v1_rows_and_named_objects_decode_in_feature_order() -> None:
    X, proba = decode_v1({"instances": [[1, 2.5, 3]]}, SIG, LIMITS)
    assert X.dtype == np.float64 and X.tolist() == [[1.0, 2.5, 3.0]] and proba is False
    X, proba = decode_v1({"inputs": [{"c": 3, "a": 1, "b": 2}], "probabilities": True}, SIG, LIMITS)
    assert X.tolist() == [[1.0, 2.0, 3.0]] and proba is True


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        ({"instances": [[1, 2]]}, 422, "has 2 features; the model expects 3 (a, b, c)"),
        ({"instances": [[1, 2, "3"]]}, 422, "instances[0][2] is '3'"),
        ({"instances": [[1, 2, None]]}, 422, "instances[0][2] is None"),
        ({"instances": [[1, 2, False]]}, 422, "features must be numbers"),
        ({"instances": [[1, 2, 3], 7]}, 422, "instances[1] must be a list of 3 numbers"),
        ({"instances": [[1, 2, float("nan")]]}, 422, "instances[0][2] is nan"),
        ({"instances": [[1, 2, float("-inf")]]}, 422, "NaN and infinity"),
        ({"instances": [[1, 2, 3]] * 5}, 413, "at most 4"),
        ({"instances": [{"a": 1, "b": 2}]}, 422, "missing features ['c']"),
        ({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, 422, "unknown features ['d']"),
        ({"instances": [[1, 2, 3]], "probabilities": "yes"}, 422, "true or false"),
        ({"instances": "abc"}, 422, "must be a list"),
        ({}, 422, "exactly one"),
        ([], 400, "JSON object"),
    ],
)
def test_v1_refusals_name_the_problem(payload: object, status: int, reason: str) -> None:
    error = refused(decode_v1, payload, SIG, LIMITS)
    assert error.status == status
    assert reason in error.reason


def test_non_finite_values_pass_when_allowed() -> None:
    X, _ = decode_v1({"instances": [[1, float("nan"), 3]]}, SIG, Limits(4, True))
    assert np.isnan(X[0, 1])


def test_json_parsing_reports_malformed_bodies_and_reads_nan_literals() -> None:
    assert refused(parse_json, b'{"a": ').status == 400
    assert refused(parse_json, b"").status == 400
    assert refused(parse_json, b"[" * 100_000).status == 400
    assert np.isnan(parse_json(b'{"x": NaN}')["x"])
    assert parse_json(b'{"x": 123456789012345678901234567890}')["x"] > 2**64


def tensor(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "x",
        "shape": [2, 3],
        "datatype": "FP64",
        "data": [1, 2, 3, 4, 5, 6],
    }
    return {**base, **overrides}


def test_v2_tensors_decode_flat_or_nested_with_outputs() -> None:
    request = decode_v2({"inputs": [tensor()], "outputs": [{"name": "predict_proba"}]}, SIG, LIMITS)
    assert request.features.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert request.outputs == ("predict_proba",)
    nested = decode_v2({"inputs": [tensor(data=[[1, 2, 3], [4, 5, 6]])]}, SIG, LIMITS)
    assert nested.features.tolist() == [[1, 2, 3], [4, 5, 6]] and nested.outputs == ("predict",)
    fp32 = decode_v2({"inputs": [tensor(datatype="FP32", data=[0.1] * 6)]}, SIG, LIMITS)
    assert fp32.features[0, 0] == np.float64(np.float32(0.1))
    ints = decode_v2({"inputs": [tensor(datatype="INT32")]}, SIG, LIMITS)
    assert ints.features.dtype == np.float64
    columns = decode_v2(
        {
            "inputs": [
                {"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
                for n, v in (("c", 3), ("a", 1), ("b", 2))
            ]
        },
        SIG,
        LIMITS,
    )
    assert columns.features.tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [
        ([tensor(shape=[2, 2], data=[1, 2, 3, 4])], "the model expects [rows, 3]"),
        ([tensor(data=[1, 2, 3])], "has 3 values but shape [2, 3] needs 6"),
        ([tensor(datatype="STRING")], "is not one of"),
        ([tensor(datatype="INT64", data=[1, 2, 3, 4, 5, 6.5])], "data[5] is 6.5, not a INT64"),
        ([tensor(datatype="INT32", data=[2**40] * 6)], "out of INT32 range"),
        ([tensor(datatype="FP32", data=[1e300] * 6)], "NaN and infinity"),
        ([tensor(datatype="BOOL")], "not a BOOL value"),
        ([tensor(shape=[2, -3])], "shape must be"),
        ([tensor(shape="2,3")], "shape must be"),
        ([{"name": "x"}], "has no 'shape'"),
        ([tensor(shape=[0, 3], data=[])], "no rows"),
        ([tensor(shape=[5, 3], data=[1] * 15)], "at most 4"),
        (
            [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}] * 2,
            "do not match the features",
        ),
        ([], "non-empty list"),
    ],
)
def test_v2_refusals_name_the_problem(inputs: list[object], reason: str) -> None:
    error = refused(decode_v2, {"inputs": inputs}, SIG, LIMITS)
    assert 400 <= error.status < 500
    assert reason in error.reason


def test_v2_outputs_must_be_known() -> None:
    error = refused(decode_v2, {"inputs": [tensor()], "outputs": [{"name": "x"}]}, SIG, LIMITS)
    assert "outputs[0].name" in error.reason


def test_encoding_picks_datatypes() -> None:
    assert encode_v2_output("predict", np.array([1, 0]))["datatype"] == "INT64"
    assert encode_v2_output("predict", np.array([0.5]))["datatype"] == "FP64"
    assert encode_v2_output("predict", np.array(["a"], dtype=object)) == {
        "name": "predict",
        "shape": [1],
        "datatype": "BYTES",
        "data": ["a"],
    }
    proba = encode_v2_output("predict_proba", np.array([[0.25, 0.75], [1.0, 0.0]]))
    assert proba["shape"] == [2, 2] and proba["data"] == [0.25, 0.75, 1.0, 0.0]
