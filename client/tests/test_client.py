"""modelship.client against real servers: DataFrame and NumPy in, the same out, equal to
scikit-learn; feedback, metadata, typed errors, retries on connection errors only, timeouts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from modelship.client import (
    ConnectionFailed,
    InvalidInput,
    ModelNotFound,
    ModelshipClient,
    Timeout,
)
from serving_helpers import Artifact, Server, free_port
from tabular_models import TabularArtifact, churn_frame


@pytest.fixture
def frame() -> pd.DataFrame:
    data, _ = churn_frame(15, seed=22, missing=False)
    return data.set_index(pd.Index([f"c{i}" for i in range(15)], name="customer"))


@pytest.mark.parametrize(("protocol", "binary"), [("v1", False), ("v2", False), ("v2", True)])
def test_dataframe_in_series_out(
    tabular_server: Server,
    tabular: TabularArtifact,
    frame: pd.DataFrame,
    protocol: Any,
    binary: bool,
) -> None:
    with ModelshipClient(tabular_server.base, "churn") as client:
        answer = client.predict(frame, protocol=protocol, probabilities=True, binary=binary)
    expected = tabular.estimator.predict(frame)
    assert isinstance(answer.predictions, pd.Series)
    assert list(answer.predictions.index) == list(frame.index)
    assert answer.predictions.tolist() == expected.tolist()
    assert isinstance(answer.probabilities, pd.DataFrame)
    assert list(answer.probabilities.columns) == ["churn", "stay"]
    np.testing.assert_allclose(
        answer.probabilities.to_numpy(), tabular.estimator.predict_proba(frame), rtol=1e-9
    )
    assert answer.model_version == "2.0.0" and answer.classes == ["churn", "stay"]


@pytest.mark.parametrize(("protocol", "binary"), [("v1", False), ("v2", False), ("v2", True)])
def test_numpy_in_numpy_out(
    numeric_server: Server, numeric: Artifact, protocol: Any, binary: bool
) -> None:
    rows = numeric.X[:9]
    with ModelshipClient(numeric_server.base, "bc") as client:
        answer = client.predict(rows, protocol=protocol, probabilities=True, binary=binary)
    assert isinstance(answer.predictions, np.ndarray)
    np.testing.assert_array_equal(answer.predictions, numeric.estimator.predict(rows))
    np.testing.assert_allclose(
        answer.probabilities, numeric.estimator.predict_proba(rows), rtol=1e-9, atol=1e-12
    )


def test_versioned_v2_path(tabular_server: Server, frame: pd.DataFrame) -> None:
    with ModelshipClient(tabular_server.base, "churn", version="2.0.0") as client:
        assert client.predict(frame.head(2)).predictions.shape == (2,)
        assert client.ready()
    with (
        ModelshipClient(tabular_server.base, "churn", version="9") as client,
        pytest.raises(ModelNotFound) as info,
    ):
        client.predict(frame.head(2))
        assert "2.0.0" in info.value.reason
        assert not client.ready()


def test_feedback_by_request_id(
    tabular_server: Server, tabular: TabularArtifact, frame: pd.DataFrame
) -> None:
    with ModelshipClient(tabular_server.base, "churn") as client:
        answer = client.predict(frame.head(4), request_id="client-fb-1")
        assert answer.request_id == "client-fb-1"
        truth = tabular.estimator.predict(frame.head(4))
        result = client.feedback("client-fb-1", labels=truth)
        assert (result.matched, result.rows, result.correct) == (1, 4, 4)
        again = client.feedback("client-fb-1", labels=truth)
        assert again.unknown_request_ids == ["client-fb-1"]
        one = client.predict(frame.head(1))
        assert client.feedback(one.request_id, "nobody").correct == 0
        # Directly on a server there is no router replica; the headers are harmless.
        two = client.predict(frame.head(1))
        assert two.replica is None
        label = tabular.estimator.predict(frame.head(1))[0]
        joined = client.feedback(two.request_id, label, variant=two.variant, replica="x")
        assert joined.matched == 1


def test_metadata(tabular_server: Server) -> None:
    with ModelshipClient(tabular_server.base, "churn") as client:
        meta = client.metadata()
    assert meta.columns == ["plan", "region", "tenure", "spend"]
    assert meta.classes == ["churn", "stay"]
    assert meta.versions == ["2.0.0"]
    assert meta.parameters["tabular"] is True


def test_errors_carry_the_servers_reason(tabular_server: Server, frame: pd.DataFrame) -> None:
    bad = frame.head(2).copy()
    bad.loc[bad.index[0], "plan"] = "platinum"
    with ModelshipClient(tabular_server.base, "churn") as client:
        for protocol in ("v1", "v2"):
            with pytest.raises(InvalidInput) as info:
                client.predict(bad, protocol=protocol)  # type: ignore[arg-type]
            assert info.value.status == 422
            assert "'plan'" in info.value.reason and "platinum" in info.value.reason
            assert info.value.request_id
    with ModelshipClient(tabular_server.base, "nope") as client, pytest.raises(ModelNotFound):
        client.metadata()


class Flaky(httpx.BaseTransport):
    """Fails to connect ``failures`` times, then sends for real; counts attempts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return self.real.handle_request(request)


def test_retries_on_connection_errors_only(numeric_server: Server, numeric: Artifact) -> None:
    flaky = Flaky(failures=2)
    with ModelshipClient(numeric_server.base, "bc", retries=2, backoff=0, transport=flaky) as c:
        answer = c.predict(numeric.X[:1])
    assert flaky.attempts == 3
    assert answer.predictions.tolist() == numeric.estimator.predict(numeric.X[:1]).tolist()
    refused = Flaky(failures=0)
    with (
        ModelshipClient(numeric_server.base, "bc", retries=3, transport=refused) as c,
        pytest.raises(InvalidInput),
    ):
        c.predict(numeric.X[:1, :5])
    assert refused.attempts == 1  # an answer, even an error, is never retried
    down = Flaky(failures=99)
    with (
        ModelshipClient(numeric_server.base, "bc", retries=1, backoff=0, transport=down) as c,
        pytest.raises(ConnectionFailed) as info,
    ):
        c.predict(numeric.X[:1])
    assert down.attempts == 2 and "2 attempts" in str(info.value)


def test_nothing_listening_is_a_connection_failure() -> None:
    with (
        ModelshipClient(f"http://127.0.0.1:{free_port()}", "bc", retries=1, backoff=0) as c,
        pytest.raises(ConnectionFailed),
    ):
        c.predict(np.zeros((1, 30)))
        assert not c.ready()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_timeouts_are_not_retried(silent_server: str) -> None:
    counting = Flaky(failures=0)
    with (
        ModelshipClient(silent_server, "bc", timeout=0.3, retries=3, transport=counting) as c,
        pytest.raises(Timeout),
    ):
        c.predict(np.zeros((1, 30)))
    assert counting.attempts == 1
