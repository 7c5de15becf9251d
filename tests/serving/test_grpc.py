"""The Open Inference Protocol over gRPC, through another project's client (tritonclient's
gRPC client), against real modelship-serve processes serving models trained here."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
from serving_helpers import Artifact, Server
from tabular_models import TabularArtifact
from test_server import metric
from tritonclient.utils import InferenceServerException


def _client(server: Server) -> triton.InferenceServerClient:
    assert server.grpc_target, "started without gRPC"
    return triton.InferenceServerClient(server.grpc_target)


@pytest.fixture(scope="module")
def bc(classifier_server: Server) -> Iterator[triton.InferenceServerClient]:
    client = _client(classifier_server)
    yield client
    client.close()


def _matrix(rows: np.ndarray, datatype: str = "FP64") -> triton.InferInput:
    tensor = triton.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)
    return tensor


def _outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name) for name in names]


def _refusal(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_health_and_metadata(bc: triton.InferenceServerClient, classifier: Artifact) -> None:
    assert bc.is_server_live()
    assert bc.is_server_ready()
    assert bc.is_model_ready("bc")
    assert bc.is_model_ready("bc", "1.4.0")
    assert bc.get_server_metadata().name == "modelship"
    meta = bc.get_model_metadata("bc")
    assert meta.versions == ["1.4.0"]
    assert meta.platform == "scikit-learn"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input-0", "FP64", [-1, classifier.X.shape[1]])
    ]
    assert [t.name for t in meta.outputs] == ["predict", "predict_proba"]
    assert _refusal(lambda: bc.get_model_metadata("other")).status() == "StatusCode.NOT_FOUND"


def test_model_infer_equals_scikit_learn(
    bc: triton.InferenceServerClient, classifier: Artifact
) -> None:
    rows = classifier.X[:7]
    result = bc.infer("bc", [_matrix(rows)], outputs=_outputs("predict", "predict_proba"))
    est = classifier.estimator
    np.testing.assert_array_equal(result.as_numpy("predict"), est.predict(rows))  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"),
        est.predict_proba(rows),  # type: ignore[attr-defined]
        rtol=1e-9,
        atol=1e-12,
    )
    response = result.get_response()
    assert (response.model_name, response.model_version) == ("bc", "1.4.0")
    # FP32 input, one row, the request's own id echoed, only predict by default
    one = bc.infer("bc", [_matrix(rows[:1].astype(np.float32), "FP32")], request_id="own-1")
    assert one.get_response().id == "own-1"
    assert [o.name for o in one.get_response().outputs] == ["predict"]
    assert one.as_numpy("predict").tolist() == est.predict(rows[:1].astype(np.float32)).tolist()  # type: ignore[attr-defined]


def test_string_classes_come_back_as_bytes(forest_server: Server, named_forest: Artifact) -> None:
    client = _client(forest_server)
    rows = named_forest.X[::30]
    result = client.infer("iris", [_matrix(rows)])
    predicted = [v.decode() for v in result.as_numpy("predict").tolist()]
    assert predicted == named_forest.estimator.predict(rows).tolist()  # type: ignore[attr-defined]
    client.close()


def test_tabular_columns_over_grpc(churn_server: Server, churn: TabularArtifact) -> None:
    frame = churn.frame.dropna().head(9)
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if not pd.api.types.is_numeric_dtype(column):
            tensor = triton.InferInput(name, [len(frame)], "BYTES")
            tensor.set_data_from_numpy(column.to_numpy(dtype=object))
        elif pd.api.types.is_integer_dtype(column):
            tensor = triton.InferInput(name, [len(frame)], "INT64")
            tensor.set_data_from_numpy(column.to_numpy(dtype=np.int64))
        else:
            tensor = triton.InferInput(name, [len(frame)], "FP64")
            tensor.set_data_from_numpy(column.to_numpy(dtype=np.float64))
        inputs.append(tensor)
    client = _client(churn_server)
    result = client.infer("churn", inputs, parameters={"content_type": "pd"})
    assert result.as_numpy("predict").tolist() == churn.estimator.predict(frame).tolist()  # type: ignore[attr-defined]
    client.close()


def test_invalid_input_is_invalid_argument_with_the_reason(
    bc: triton.InferenceServerClient, classifier_server: Server, classifier: Artifact
) -> None:
    labels = {"model": "bc", "handler": "grpc_infer"}
    refused0 = metric(classifier_server, "modelship_requests_total", code="422", **labels)
    wrong = _refusal(lambda: bc.infer("bc", [_matrix(classifier.X[:2, :5])]))
    assert wrong.status() == "StatusCode.INVALID_ARGUMENT"
    assert "the model expects [rows, 30]" in wrong.message()
    text = triton.InferInput("input-0", [1, 30], "BYTES")
    text.set_data_from_numpy(np.array([["x"] * 30], dtype=object))
    bad_type = _refusal(lambda: bc.infer("bc", [text]))
    assert bad_type.status() == "StatusCode.INVALID_ARGUMENT"
    nan = classifier.X[:1].copy()
    nan[0, 3] = np.nan
    non_finite = _refusal(lambda: bc.infer("bc", [_matrix(nan)]))
    assert non_finite.status() == "StatusCode.INVALID_ARGUMENT"
    assert "non-finite" in non_finite.message() or "NaN" in non_finite.message()
    bad_output = _refusal(
        lambda: bc.infer("bc", [_matrix(classifier.X[:1])], outputs=_outputs("x"))
    )
    assert bad_output.status() == "StatusCode.INVALID_ARGUMENT"
    assert "outputs[0].name" in bad_output.message()
    other = _refusal(lambda: bc.infer("other", [_matrix(classifier.X[:1])]))
    assert other.status() == "StatusCode.NOT_FOUND"
    assert "this server serves 'bc'" in other.message()
    assert (
        metric(classifier_server, "modelship_requests_total", code="422", **labels) >= refused0 + 4
    )


def test_requests_and_predictions_are_counted(
    bc: triton.InferenceServerClient, classifier_server: Server, classifier: Artifact
) -> None:
    labels = {"model": "bc", "version": "1.4.0", "variant": "canary", "handler": "grpc_infer"}
    ok0 = metric(classifier_server, "modelship_requests_total", code="200", **labels)
    count0 = metric(
        classifier_server, "modelship_request_duration_seconds_count", handler="grpc_infer"
    )
    predicted0 = sum(
        metric(classifier_server, "modelship_predictions_total", model="bc", **{"class": k})
        for k in ("0", "1")
    )
    for _ in range(3):
        bc.infer("bc", [_matrix(classifier.X[:4])])
    assert metric(classifier_server, "modelship_requests_total", code="200", **labels) == ok0 + 3
    assert (
        metric(classifier_server, "modelship_request_duration_seconds_count", handler="grpc_infer")
        == count0 + 3
    )
    predicted = sum(
        metric(classifier_server, "modelship_predictions_total", model="bc", **{"class": k})
        for k in ("0", "1")
    )
    assert predicted == predicted0 + 12


def test_grpc_predictions_take_feedback_by_request_id(
    bc: triton.InferenceServerClient, classifier_server: Server, classifier: Artifact
) -> None:
    rows, truth = classifier.X[10:12], classifier.y[10:12]
    bc.infer("bc", [_matrix(rows)], headers={"x-request-id": "grpc-fb-1"})
    labels = {"model": "bc", "variant": "canary"}
    total0 = metric(classifier_server, "modelship_feedback_total", **labels)
    answer = classifier_server.client.post(
        "/v1/models/bc:feedback",
        json={"feedback": [{"request_id": "grpc-fb-1", "labels": truth.tolist()}]},
    )
    assert answer.status_code == 200, answer.text
    assert metric(classifier_server, "modelship_feedback_total", **labels) == total0 + 2


def test_typed_contents_are_read_like_json_data(
    classifier_server: Server, classifier: Artifact
) -> None:
    """The protocol's other encoding (typed contents, not raw bytes), with our own messages."""
    import grpc
    from modelship_serving.oip import grpc_predict_v2_pb2 as pb

    rows = classifier.X[:3]
    request = pb.ModelInferRequest(model_name="bc", id="typed-1")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.reshape(-1).tolist())
    request.outputs.add(name="predict")
    with grpc.insecure_channel(classifier_server.grpc_target) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        response = infer(request, timeout=10)
        assert response.id == "typed-1"
        (output,) = response.outputs
        predicted = np.frombuffer(response.raw_output_contents[0], dtype="<i8")
        assert (output.datatype, list(output.shape)) == ("INT64", [3])
        assert predicted.tolist() == classifier.estimator.predict(rows).tolist()  # type: ignore[attr-defined]
        # Contents in the wrong field for the datatype: refused with the reason.
        tensor.contents.ClearField("fp64_contents")
        tensor.contents.int64_contents.extend([1] * rows.size)
        with pytest.raises(grpc.RpcError) as refused:
            infer(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "takes fp64_contents, not int64_contents" in refused.value.details()  # type: ignore[attr-defined]
        # Raw contents that do not match the shape.
        del request.inputs[:]
        request.inputs.add(name="input-0", datatype="FP64", shape=[1, 30])
        request.raw_input_contents.append(b"\0" * 8 * 29)
        with pytest.raises(grpc.RpcError) as short:
            infer(request, timeout=10)
        assert short.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "needs 240" in short.value.details()  # type: ignore[attr-defined]
