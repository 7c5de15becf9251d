"""The Open Inference Protocol's binary tensor extension, against a real server: NVIDIA's
tritonclient (HTTP, JSON and binary tensors) gets scikit-learn's answers, for a numeric model
and for a tabular one (BYTES columns), and malformed binary bodies get a 4xx with a reason."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from serving_helpers import Artifact, Server
from tabular_models import TabularArtifact, churn_frame
from tritonclient.utils import InferenceServerException


def client_of(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.base.removeprefix("http://"))


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_numeric_model(
    classifier_server: Server, classifier: Artifact, binary: bool
) -> None:
    client = client_of(classifier_server)
    assert client.is_server_ready() and client.is_model_ready("bc")
    metadata = client.get_model_metadata("bc")
    assert metadata["inputs"][0]["shape"] == [-1, 30]
    rows = classifier.X[:7]
    tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("predict", binary_data=binary),
        triton.InferRequestedOutput("predict_proba", binary_data=binary),
    ]
    result = client.infer("bc", [tensor], outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("predict"), classifier.estimator.predict(rows))
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"),
        classifier.estimator.predict_proba(rows),
        rtol=1e-9,
        atol=1e-12,
    )
    # No outputs named: tritonclient asks for every output in binary (binary_data_output).
    one = triton.InferInput("input-0", [1, 30], "FP32")
    one.set_data_from_numpy(rows[:1].astype(np.float32), binary_data=binary)
    default = client.infer("bc", [one], model_version="1.4.0")
    expected = classifier.estimator.predict(rows[:1].astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(default.as_numpy("predict"), expected)
    client.close()


def column_inputs(frame: Any, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if name in ("plan", "region"):
            array, datatype = values.astype(object), "BYTES"
        elif name == "tenure":
            array, datatype = values.astype(np.int64), "INT64"
        else:
            array, datatype = values.astype(np.float64), "FP64"
        tensor = triton.InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_tabular_models(
    churn_server: Server,
    churn: TabularArtifact,
    strict_server: Server,
    strict: TabularArtifact,
    binary: bool,
) -> None:
    frame, _ = churn_frame(10, seed=5, missing=False)
    for server, artifact, name in (
        (churn_server, churn, "churn"),
        (strict_server, strict, "strict"),
    ):
        client = client_of(server)
        outputs = [
            triton.InferRequestedOutput("predict", binary_data=binary),
            triton.InferRequestedOutput("predict_proba", binary_data=binary),
        ]
        result = client.infer(
            name, column_inputs(frame, binary), outputs=outputs, parameters={"content_type": "pd"}
        )
        labels = result.as_numpy("predict")
        if labels.dtype == object:  # BYTES come back as bytes
            labels = np.array([v.decode() if isinstance(v, bytes) else v for v in labels])
        np.testing.assert_array_equal(labels, artifact.estimator.predict(frame))
        np.testing.assert_allclose(
            result.as_numpy("predict_proba"),
            artifact.estimator.predict_proba(frame),
            rtol=1e-9,
            atol=1e-12,
        )
        client.close()


def test_tritonclient_sees_the_reason_of_a_refusal(strict_server: Server) -> None:
    frame, _ = churn_frame(2, seed=5, missing=False)
    frame.loc[0, "plan"] = "platinum"
    client = client_of(strict_server)
    with pytest.raises(InferenceServerException) as info:
        client.infer("strict", column_inputs(frame, True))
    assert info.value.status() == "422"
    assert "'plan'" in info.value.message() and "platinum" in info.value.message()
    client.close()


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    import json

    text = json.dumps(header).encode()
    return text + b"".join(blobs), {"Inference-Header-Content-Length": str(len(text))}


def bytes_tensor(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_raw_binary_bytes_columns_and_outputs(churn_server: Server, churn: TabularArtifact) -> None:
    frame, _ = churn_frame(3, seed=9, missing=False)
    blobs = [
        bytes_tensor(*(v.encode() for v in frame["plan"])),
        bytes_tensor(*(v.encode() for v in frame["region"])),
        frame["tenure"].to_numpy().astype("<i8").tobytes(),
        frame["spend"].to_numpy().astype("<f8").tobytes(),
    ]
    types = {"plan": "BYTES", "region": "BYTES", "tenure": "INT64", "spend": "FP64"}
    header = {
        "inputs": [
            {
                "name": name,
                "shape": [3],
                "datatype": types[name],
                "parameters": {"binary_data_size": len(blob)},
            }
            for name, blob in zip(types, blobs, strict=True)
        ],
        "parameters": {"binary_data_output": True, "content_type": "pd"},
    }
    body, headers = binary_body(header, *blobs)
    response = churn_server.client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    import json

    answer = json.loads(response.content[:length])
    (predict,) = answer["outputs"]
    assert "data" not in predict and predict["parameters"]["binary_data_size"] == 24
    labels = np.frombuffer(response.content[length:], dtype="<i8")
    np.testing.assert_array_equal(labels, churn.estimator.predict(frame))


@pytest.mark.parametrize(
    ("header", "blob", "length", "status", "reason"),
    [
        ({"inputs": []}, b"", 10**6, 400, "Inference-Header-Content-Length is"),
        ({"inputs": []}, b"", -1, 400, "Inference-Header-Content-Length is"),
        ({"inputs": []}, b"", "x", 400, "whole number"),
        (
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [1, 30],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            },
            b"\0" * 16,
            None,
            422,
            "needs 240",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [1, 30],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 240},
                    }
                ]
            },
            b"\0" * 100,
            None,
            422,
            "runs past the end",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [1, 30],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 240},
                    }
                ]
            },
            b"\0" * 250,
            None,
            422,
            "belong to no tensor",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [1, 30],
                        "datatype": "BF16",
                        "parameters": {"binary_data_size": 60},
                    }
                ]
            },
            b"\0" * 60,
            None,
            422,
            "cannot be sent as binary",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [2],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 6},
                    }
                ]
            },
            b"\x09\0\0\0ab",
            None,
            422,
            "runs past the data",
        ),
    ],
)
def test_malformed_binary_requests_get_a_reason(
    classifier_server: Server,
    header: dict[str, Any],
    blob: bytes,
    length: Any,
    status: int,
    reason: str,
) -> None:
    body, headers = binary_body(header, blob)
    if length is not None:
        headers["Inference-Header-Content-Length"] = str(length)
    response = classifier_server.client.post("/v2/models/bc/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
