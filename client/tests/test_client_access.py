"""modelship.client and protected feedback, against real servers: the token goes with
feedback and with requests that force a variant, nowhere else; refusals are AccessDenied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from modelship.client import AccessDenied, ModelshipClient, ServerError
from serving_helpers import Server, start_server, stop_server
from tabular_models import TabularArtifact


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, tabular: TabularArtifact) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("guarded")
    (tmp / "token").write_text("client-token\n")
    server = start_server(tmp, tabular, "--feedback-token-file", str(tmp / "token"), name="churn")
    yield server
    stop_server(server)


class Recording(httpx.BaseTransport):
    """Sends for real and keeps every request's headers."""

    def __init__(self) -> None:
        self.sent: list[httpx.Headers] = []
        self.real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.headers)
        return self.real.handle_request(request)


def test_feedback_with_the_token_is_taken(guarded: Server, tabular: TabularArtifact) -> None:
    frame = tabular.frame.head(3)
    truth = tabular.estimator.predict(frame)
    with ModelshipClient(guarded.base, "churn", token="client-token") as client:
        answer = client.predict(frame)
        result = client.feedback(answer.request_id, labels=truth)
    assert (result.matched, result.rows, result.correct) == (1, 3, 3)


def test_feedback_without_or_with_a_wrong_token_raises_access_denied(
    guarded: Server, tabular: TabularArtifact
) -> None:
    frame = tabular.frame.head(1)
    with ModelshipClient(guarded.base, "churn") as client:
        answer = client.predict(frame)  # predictions need no token
        with pytest.raises(AccessDenied) as missing:
            client.feedback(answer.request_id, "stay")
    assert missing.value.status == 401
    assert missing.value.reason == "feedback needs the x-modelship-token header"
    assert isinstance(missing.value, ServerError)
    with (
        ModelshipClient(guarded.base, "churn", token="guess") as client,
        pytest.raises(AccessDenied) as wrong,
    ):
        client.feedback(answer.request_id, "stay")
    assert wrong.value.status == 403 and wrong.value.reason == "invalid x-modelship-token"
    assert "HTTP 403: invalid x-modelship-token" in str(wrong.value)
    with ModelshipClient(guarded.base, "churn", token="client-token") as client:
        # The refusals left the prediction for the right token.
        assert client.feedback(answer.request_id, "stay").matched == 1


def test_the_token_goes_only_with_feedback_and_forced_variants(
    guarded: Server, tabular: TabularArtifact
) -> None:
    frame = tabular.frame.head(1)
    recording = Recording()
    with ModelshipClient(
        guarded.base, "churn", token="client-token", transport=recording
    ) as client:
        answer = client.predict(frame)
        client.metadata()
        client.feedback(answer.request_id, "stay", variant="stable")
    predict, metadata, feedback = recording.sent
    assert "x-modelship-token" not in predict and "x-modelship-token" not in metadata
    assert feedback["x-modelship-token"] == "client-token"
    assert feedback["x-modelship-variant"] == "stable"
    forcing = Recording()
    with ModelshipClient(
        guarded.base,
        "churn",
        token="client-token",
        headers={"X-Modelship-Variant": "stable"},
        transport=forcing,
    ) as client:
        client.predict(frame)
    assert forcing.sent[0]["x-modelship-token"] == "client-token"


def test_feedback_off_raises_access_denied(tmp_path: Path, tabular: TabularArtifact) -> None:
    server = start_server(tmp_path, tabular, "--no-feedback", name="churn")
    try:
        with ModelshipClient(server.base, "churn", token="anything") as client:
            answer = client.predict(tabular.frame.head(1))
            with pytest.raises(AccessDenied) as off:
                client.feedback(answer.request_id, "stay")
        assert off.value.status == 403 and off.value.reason.startswith("feedback is off: ")
    finally:
        stop_server(server)
