"""The client's gRPC transport against real modelship-serve processes."""

from __future__ import annotations

import numpy as np
import pytest
from modelship.client import InvalidInput, ModelNotFound, ModelshipClient
from modelship.client.grpc import GrpcClient
from serving_helpers import Artifact, Server
from tabular_models import TabularArtifact


def test_array_predictions_equal_scikit_learn(numeric_server: Server, numeric: Artifact) -> None:
    rows = numeric.X[:9]
    with GrpcClient(numeric_server.grpc_target, "bc") as client:
        assert client.ready()
        assert client.metadata().inputs[0]["shape"] == [-1, rows.shape[1]]
        answer = client.predict(rows, probabilities=True, request_id="grpc-client-1")
    est = numeric.estimator
    np.testing.assert_array_equal(answer.predictions, est.predict(rows))  # type: ignore[attr-defined]
    np.testing.assert_allclose(answer.probabilities, est.predict_proba(rows), rtol=1e-9)  # type: ignore[attr-defined]
    assert answer.request_id == "grpc-client-1"
    assert answer.variant == "stable"
    # Feedback for a gRPC prediction goes over HTTP, by the same request id.
    with ModelshipClient(numeric_server.base, "bc") as http:
        result = http.feedback("grpc-client-1", labels=numeric.y[:9])
    assert (result.matched, result.rows) == (1, 9)


def test_frames_and_typed_errors(tabular_server: Server, tabular: TabularArtifact) -> None:
    frame = tabular.frame.head(6)
    with GrpcClient(tabular_server.grpc_target, "churn", version="2.0.0") as client:
        answer = client.predict(frame)
        assert answer.predictions.tolist() == tabular.estimator.predict(frame).tolist()  # type: ignore[attr-defined]
        assert list(answer.predictions.index) == list(frame.index)
        with pytest.raises(InvalidInput) as refused:
            client.predict(frame.drop(columns=["plan"]))
        assert "plan" in refused.value.reason
    with GrpcClient(tabular_server.grpc_target, "other") as other, pytest.raises(ModelNotFound):
        other.predict(frame)


def test_unreachable_server_is_connection_failed() -> None:
    from modelship.client import ConnectionFailed

    with GrpcClient("127.0.0.1:1", "bc", timeout=2) as client:
        assert not client.ready()
        with pytest.raises(ConnectionFailed):
            client.predict(np.zeros((1, 3)))
