"""Who may send feedback, and pinned predictions, against real modelship-serve processes
serving a model trained here (the contract in docs/serving.md, "Feedback")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from modelship_demo.traffic import TrafficStats, run_traffic
from router_harness import SecretVolume
from serving_helpers import Artifact, Server, start_server, stop_server
from test_server import metric

LABELS = {"model": "bc", "version": "1", "variant": "canary"}


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> SecretVolume:
    volume = SecretVolume(tmp_path_factory.mktemp("secret"))
    volume.write("first-token\n")
    return volume


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, classifier: Artifact, volume: SecretVolume
) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("srv"),
        classifier,
        "--model-version",
        "1",
        "--variant",
        "canary",
        name="bc",
        env={"MODELSHIP_FEEDBACK_TOKEN_FILE": str(volume.path)},
    )
    yield server
    stop_server(server)


def predict(server: Server, rows: np.ndarray, request_id: str, pinned: bool = False) -> None:
    headers = {"x-request-id": request_id}
    if pinned:
        headers["x-modelship-pinned"] = "1"
    response = server.client.post(
        "/v1/models/bc:predict", json={"instances": rows.tolist()}, headers=headers
    )
    assert response.status_code == 200, response.text


def feedback(server: Server, items: list[dict[str, object]], token: str | None) -> httpx.Response:
    headers = {} if token is None else {"x-modelship-token": token}
    return server.client.post("/v1/models/bc:feedback", json={"feedback": items}, headers=headers)


def test_feedback_needs_the_token_checked_before_the_body(
    guarded: Server, classifier: Artifact
) -> None:
    predict(guarded, classifier.X[:2], "acc-1")
    item = {"request_id": "acc-1", "labels": classifier.y[:2].tolist()}
    missing = feedback(guarded, [item], None)
    assert missing.status_code == 401
    assert missing.json() == {"error": "feedback needs the x-modelship-token header"}
    wrong = feedback(guarded, [item], "second-token")
    assert wrong.status_code == 403 and wrong.json() == {"error": "invalid x-modelship-token"}
    # Refused before the body is parsed: not even a malformed body gets a 422.
    junk = guarded.client.post("/v1/models/bc:feedback", content=b"{not json")
    assert junk.status_code == 401
    # The refusals did not consume the prediction.
    accepted = feedback(guarded, [item], "first-token")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["matched"] == 1 and accepted.json()["rows"] == 2


def test_a_rotated_token_applies_within_a_second(
    guarded: Server, classifier: Artifact, volume: SecretVolume
) -> None:
    volume.write("second-token")
    deadline = time.monotonic() + 5
    while (
        feedback(guarded, [{"request_id": "none", "label": 0}], "second-token").status_code != 200
    ):
        assert time.monotonic() < deadline, "the new token was never accepted"
        time.sleep(0.2)
    assert feedback(guarded, [{"request_id": "none", "label": 0}], "first-token").status_code == 403
    volume.write("")  # an emptied Secret: nothing privileged is taken
    time.sleep(1.2)
    refused = feedback(guarded, [{"request_id": "none", "label": 0}], "second-token")
    assert refused.status_code == 403 and refused.json()["error"].startswith("feedback is off: ")
    volume.write("first-token")
    time.sleep(1.2)
    assert "access token file" in guarded.log() and "is empty" in guarded.log()


def test_feedback_turned_off_is_refused(tmp_path: Path, classifier: Artifact) -> None:
    server = start_server(tmp_path, classifier, "--no-feedback", name="bc", env={})
    try:
        predict(server, classifier.X[:1], "off-1")
        refused = feedback(server, [{"request_id": "off-1", "label": 0}], "anything")
        assert refused.status_code == 403
        assert refused.json()["error"].startswith("feedback is off: ")
    finally:
        stop_server(server)
    server = start_server(
        tmp_path, classifier, name="bc", env={"MODELSHIP_FEEDBACK_ENABLED": "false"}
    )
    try:
        assert feedback(server, [{"request_id": "x", "label": 0}], None).status_code == 403
    finally:
        stop_server(server)


def counters(server: Server) -> tuple[float, float, float, float]:
    """(feedback, correct, confusion rows, pinned) as /metrics says."""
    text = server.client.get("/metrics").text
    confusion = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelship_feedback_confusion_total{")
    )
    return (
        metric(server, "modelship_feedback_total", **LABELS),
        metric(server, "modelship_feedback_correct_total", **LABELS),
        confusion,
        metric(server, "modelship_feedback_pinned_total", **LABELS),
    )


def test_pinned_predictions_feedback_counts_only_as_pinned(
    guarded: Server, classifier: Artifact, volume: SecretVolume
) -> None:
    token = volume.path.read_text().strip()
    X, y = classifier.X, classifier.y
    correct = classifier.estimator.predict(X[:300]) == y[:300]  # type: ignore[attr-defined]
    before = counters(guarded)
    # One row (the protocol lane), many rows (the ASGI lane), V1 and V2, pinned.
    predict(guarded, X[:1], "pin-v1-row", pinned=True)
    predict(guarded, X[1:300], "pin-v1-batch", pinned=True)
    v2 = {"inputs": [{"name": "x", "shape": [3, 30], "datatype": "FP64",
                      "data": X[:3].ravel().tolist()}]}  # fmt: skip
    response = guarded.client.post(
        "/v2/models/bc/infer",
        json=v2,
        headers={"x-request-id": "pin-v2", "x-modelship-pinned": "1"},
    )
    assert response.status_code == 200, response.text
    chunked = guarded.client.post(
        "/v2/models/bc/versions/1/infer",
        content=iter([httpx.Request("POST", "/", json=v2).content]),
        headers={"x-request-id": "pin-v2-chunked", "x-modelship-pinned": "1",
                 "content-type": "application/json"},
    )  # fmt: skip
    assert chunked.status_code == 200, chunked.text
    with triton.InferenceServerClient(guarded.grpc_target) as grpc_client:
        tensor = triton.InferInput("input-0", [2, 30], "FP64")
        tensor.set_data_from_numpy(X[:2])
        grpc_client.infer(
            "bc", [tensor], headers={"x-request-id": "pin-grpc", "x-modelship-pinned": "1"}
        )
    predict(guarded, X[:1], "not-pinned", pinned=False)
    predict(guarded, X[:1], "pinned-0", pinned=False)
    # A client's own other value of the header pins nothing.
    guarded.client.post(
        "/v1/models/bc:predict",
        json={"instances": X[:1].tolist()},
        headers={"x-request-id": "pinned-0", "x-modelship-pinned": "true"},
    )
    answer = feedback(
        guarded,
        [
            {"request_id": "pin-v1-row", "labels": y[:1].tolist()},
            {"request_id": "pin-v1-batch", "labels": y[1:300].tolist()},
            {"request_id": "pin-v2", "labels": y[:3].tolist()},
            {"request_id": "pin-v2-chunked", "labels": y[:3].tolist()},
            {"request_id": "pin-grpc", "labels": y[:2].tolist()},
        ],
        token,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected_correct = int(correct.sum() + 2 * correct[:3].sum() + correct[:2].sum())
    assert (body["matched"], body["rows"], body["correct"]) == (5, 308, expected_correct)
    total, right, confusion, pinned = counters(guarded)
    assert (total, right, confusion) == before[:3]  # the variant's statistics did not move
    assert pinned == before[3] + 308
    plain = feedback(
        guarded,
        [
            {"request_id": "not-pinned", "labels": y[:1].tolist()},
            {"request_id": "pinned-0", "labels": y[:1].tolist()},
        ],
        token,
    )
    assert plain.json()["matched"] == 2
    after = counters(guarded)
    assert after[0] == total + 2 and after[2] == confusion + 2
    assert after[1] == right + 2 * int(correct[0])
    assert after[3] == pinned


def test_demo_traffic_sends_the_token_with_its_feedback(
    guarded: Server, classifier: Artifact, volume: SecretVolume
) -> None:
    token = volume.path.read_text().strip()
    for given, joined in ((token, 8), (None, 0)):
        stats = asyncio.run(
            run_traffic(
                guarded.base,
                "bc",
                classifier.X,
                classifier.y,
                rate=100,
                duration=10,
                max_requests=8,
                stats=TrafficStats(),
                token=given,
            )
        )
        assert stats.feedback_sent == 8
        assert stats.feedback_joined == joined
        assert stats.feedback_refused == 8 - joined
