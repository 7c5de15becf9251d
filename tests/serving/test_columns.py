"""Pure parts of tabular serving: the signature's columns, column decoding and validation, and
the binary tensor codec."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from modelship_serving.artifacts import save_model
from modelship_serving.binary import (
    binary_outputs,
    decode_bytes_elements,
    encode_binary,
    split_binary_request,
)
from modelship_serving.codec import Limits
from modelship_serving.config import Settings
from modelship_serving.errors import ModelLoadError, ServingError
from modelship_serving.loading import load_model
from modelship_serving.signature import SIGNATURE_MEMBER, columns_of, signature_of
from modelship_serving.tabular import decode_v1_table, decode_v2_table, to_frame
from tabular_models import churn_frame, churn_pipeline, strict_forest

LIMITS = Limits(max_rows=5, allow_non_finite=False)


@pytest.fixture(scope="module")
def churn_model() -> object:
    frame, y = churn_frame(300, seed=31)
    return churn_pipeline().fit(frame, y)


def test_columns_from_the_estimator_and_from_an_example(churn_model: object) -> None:
    found = columns_of(churn_model)
    assert found is not None
    columns, tabular = found
    assert tabular
    by_name = {c.name: c for c in columns}
    assert by_name["plan"].datatype == "BYTES" and by_name["plan"].nullable
    assert by_name["plan"].categories == ("basic", "enterprise", "pro", "team")
    assert by_name["plan"].handle_unknown == "ignore"
    assert by_name["tenure"].datatype == "FP64"  # the estimator alone cannot tell an int
    frame, _ = churn_frame(5, seed=1)
    with_example = columns_of(churn_model, frame)
    assert with_example is not None
    assert {c.name: c.datatype for c in with_example[0]}["tenure"] == "INT64"
    with pytest.raises(ValueError, match="missing"):
        columns_of(churn_model, frame.drop(columns=["spend"]))


def test_numeric_frame_models_are_not_tabular() -> None:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    est = LogisticRegression().fit(frame, [0, 1, 0, 1])
    sig = signature_of(est, "x")
    assert sig.columns is not None and not sig.tabular
    assert [i["name"] for i in sig.v2_inputs()] == ["a", "b"]


@pytest.mark.filterwarnings("ignore:Duplicate name")  # a second member shadows the first
def test_a_recorded_signature_must_match_the_model(tmp_path: Path, churn_model: object) -> None:
    frame, _ = churn_frame(5, seed=1)
    path = tmp_path / "m.skops"
    save_model(churn_model, path, example=frame)
    assert load_model(Settings(model_uri=str(path))).signature.source == "saved"
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(
            SIGNATURE_MEMBER, '{"columns": [{"name": "x", "datatype": "FP64"}], "tabular": true}'
        )
    with pytest.raises(ModelLoadError, match="not the model's feature_names_in_"):
        load_model(Settings(model_uri=str(path)))
    broken = tmp_path / "b.skops"
    save_model(churn_model, broken, example=frame)
    with zipfile.ZipFile(broken, "a") as archive:
        archive.writestr(SIGNATURE_MEMBER, '{"columns": "nope"}')
    with pytest.raises(ModelLoadError, match="invalid"):
        load_model(Settings(model_uri=str(broken)))
    with pytest.raises(ValueError, match="feature_names_in_"):
        save_model(object(), tmp_path / "c.skops", example=frame)


def test_every_v1_form_decodes_to_the_same_table(churn_model: object) -> None:
    sig = signature_of(churn_model, "x")
    objects = [{"plan": "pro", "region": "eu", "tenure": 3, "spend": None}]
    forms = [
        {"instances": objects},
        {"instances": [["pro", "eu", 3, None]]},
        {"inputs": {"plan": ["pro"], "region": ["eu"], "tenure": [3], "spend": [None]}},
    ]
    frames = [to_frame(decode_v1_table(f, sig, LIMITS)[0], sig) for f in forms]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    assert np.isnan(frames[0]["spend"][0]) and frames[0]["plan"][0] == "pro"


def test_v2_single_tensor_in_column_order(churn_model: object) -> None:
    sig = signature_of(churn_model, "x")
    tensor = {"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["pro", "eu", "3", "1"]}
    with pytest.raises(ServingError, match="column 'tenure' row 0 is '3': expected a number"):
        decode_v2_table({"inputs": [tensor]}, sig, LIMITS)
    tensor["data"] = ["pro", "eu", None, None]
    request = decode_v2_table({"inputs": [tensor]}, sig, LIMITS)
    assert request.table.rows == 1 and np.isnan(request.table.columns["tenure"][0])
    with pytest.raises(ServingError, match="content_type"):
        decode_v2_table({"inputs": [tensor], "parameters": {"content_type": "np2"}}, sig, LIMITS)


def elements(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_binary_requests_split_into_typed_tensors() -> None:
    ints = np.array([7, -1], dtype="<i4").tobytes()
    strings = elements(b"pro", "\u00e9t\u00e9".encode())
    inputs = [
        {"name": "a", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
        {
            "name": "b",
            "shape": [2],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(strings)},
        },
        {"name": "c", "shape": [1], "datatype": "FP64", "data": [0.5]},
    ]
    header = json.dumps({"inputs": inputs}).encode()
    payload = split_binary_request(header + ints + strings, len(header))
    a, b, c = payload["inputs"]
    assert a["data"].tolist() == [7, -1] and b["data"] == ["pro", "été"] and c["data"] == [0.5]
    with pytest.raises(ServingError, match="not UTF-8"):
        decode_bytes_elements(elements(b"\xff"), "x")


def test_binary_output_flags_and_encoding() -> None:
    names = ("predict", "predict_proba")
    assert binary_outputs({"parameters": {"binary_data_output": True}}, names) == set(names)
    mixed = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "predict_proba", "parameters": {"binary_data": False}}],
    }
    assert binary_outputs(mixed, names) == {"predict"}
    assert binary_outputs({}, names) == frozenset()
    with pytest.raises(ServingError):
        binary_outputs({"parameters": {"binary_data_output": "yes"}}, names)
    assert encode_binary(np.array(["a", "bc"], dtype=object), "BYTES") == elements(b"a", b"bc")
    assert encode_binary(np.array([1, 2]), "INT64") == np.array([1, 2], dtype="<i8").tobytes()
    assert encode_binary(np.array([True, False]), "BOOL") == b"\x01\x00"


def test_strict_model_columns() -> None:
    frame, y = churn_frame(200, seed=32, missing=False)
    sig = signature_of(strict_forest().fit(frame, y), "x")
    assert sig.columns is not None
    by_name = {c.name: c for c in sig.columns}
    assert by_name["region"].datatype == "ANY"  # dropped by the ColumnTransformer
    assert by_name["plan"].handle_unknown == "error" and not by_name["tenure"].nullable
    request = decode_v1_table(
        {"instances": [{"plan": "pro", "region": 7, "tenure": 1, "spend": 2.0}]}, sig, LIMITS
    )
    assert request[0].columns["region"].tolist() == [7]
