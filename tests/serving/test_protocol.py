"""The protocol-level fast lane and uvicorn's ASGI path answer alike, over real sockets.

Small inference bodies with a Content-Length are answered inside the protocol (one-row requests
to linear models in plain Python); chunked uploads, large batches, other endpoints and pipelined
requests behind an ASGI request take uvicorn's ASGI path. These tests send the same requests
both ways and check HTTP behaviour a client relies on: keep-alive, pipelining order,
HTTP/1.0 and ``Connection: close``, back-pressure from a client that does not read.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from serving_helpers import Artifact, Server, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, classifier: Artifact) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("lane"),
        classifier,
        "--model-version",
        "3",
        "--variant",
        "stable",
        name="bc",
    )
    yield srv
    stop_server(srv)


def _address(server: Server) -> tuple[str, int]:
    host, port = server.base.removeprefix("http://").split(":")
    return host, int(port)


def _request(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "host: x", "content-type: application/json"]
    lines += [f"content-length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _chunked(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: x", "content-type: application/json"]
    lines += ["transfer-encoding: chunked", *headers]
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"


class Reader:
    """Reads Content-Length framed HTTP/1.1 responses off one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed mid-response: {self.buffer!r}"
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(rest) < length:
            assert self._fill(), "connection closed mid-body"
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        return int(status_line.split()[1]), headers, rest[:length]

    def closed(self) -> bool:
        """True when the server closed the connection (after any buffered bytes)."""
        self.sock.settimeout(5)
        try:
            return not self.sock.recv(1)
        except ConnectionResetError:
            return True


def _connect(server: Server) -> tuple[socket.socket, Reader]:
    sock = socket.create_connection(_address(server), timeout=10)
    return sock, Reader(sock)


def _v2(rows: np.ndarray, proba: bool = True) -> bytes:
    body: dict[str, object] = {
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}
        ]
    }
    if proba:
        body["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}]
    return json.dumps(body).encode()


def test_every_lane_gives_the_same_answer(server: Server, classifier: Artifact) -> None:
    """One row (Python path), the row inside a batch (NumPy path), and the same bodies uploaded
    chunked (ASGI path): identical predictions, probabilities and attribution headers."""
    row = classifier.X[7:8]
    expected_label = int(classifier.estimator.predict(row)[0])
    expected_proba = classifier.estimator.predict_proba(row)[0]
    path = "/v2/models/bc/infer"
    sock, reader = _connect(server)
    answers = []
    with sock:
        for wire in (
            _request(path, _v2(row), "x-request-id: one-row"),
            _request(path, _v2(np.repeat(row, 3, axis=0)), "x-request-id: batch"),
            _chunked(path, _v2(row), "x-request-id: chunked-row"),
            _chunked(path, _v2(np.repeat(row, 3, axis=0)), "x-request-id: chunked-batch"),
            _request("/v2/models/bc/versions/3/infer", _v2(row), "x-request-id: versioned"),
        ):
            sock.sendall(wire)
            answers.append(reader.response())
    for (status, headers, body), rid in zip(
        answers, ["one-row", "batch", "chunked-row", "chunked-batch", "versioned"], strict=True
    ):
        assert status == 200, body
        assert headers["x-request-id"] == rid
        assert headers["x-model-name"] == "bc"
        assert headers["x-model-version"] == "3"
        assert headers["x-model-variant"] == "stable"
        assert headers["content-type"] == "application/json"
        assert "date" in headers
        payload = json.loads(body)
        assert payload["id"] == rid
        predict, proba = payload["outputs"]
        assert predict["datatype"] == "INT64"
        assert set(predict["data"]) == {expected_label}
        assert proba["shape"][1] == 2
        for got in np.reshape(proba["data"], proba["shape"]):
            np.testing.assert_allclose(got, expected_proba, rtol=1e-9, atol=1e-12)


def test_v1_one_row_and_batch_agree(server: Server, classifier: Artifact) -> None:
    rows = classifier.X[:6]
    one = [
        server.client.post(
            "/v1/models/bc:predict", json={"instances": [r.tolist()], "probabilities": True}
        ).json()
        for r in rows
    ]
    batch = server.client.post(
        "/v1/models/bc:predict", json={"instances": rows.tolist(), "probabilities": True}
    ).json()
    assert [o["predictions"][0] for o in one] == batch["predictions"]
    assert batch["predictions"] == classifier.estimator.predict(rows).tolist()
    np.testing.assert_allclose(
        [o["probabilities"][0] for o in one], batch["probabilities"], rtol=1e-9, atol=1e-12
    )
    assert all(o["classes"] == [0, 1] for o in one)


def test_pipelined_requests_are_answered_in_order(server: Server, classifier: Artifact) -> None:
    """Fast-lane requests queued behind an ASGI request (a chunked upload, a probe) keep their
    order on the connection."""
    row = classifier.X[:1]
    path = "/v2/models/bc/infer"
    wire = b"".join(
        [
            _request(path, _v2(row), "x-request-id: p1"),
            _chunked(path, _v2(row), "x-request-id: p2"),
            _request(path, _v2(row), "x-request-id: p3"),
            b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nx-request-id: p4\r\n\r\n",
            _request(path, b"{not json", "x-request-id: p5"),
            _request(path, _v2(row), "x-request-id: p6"),
        ]
    )
    sock, reader = _connect(server)
    with sock:
        sock.sendall(wire)
        answers = [reader.response() for _ in range(6)]
    assert [h["x-request-id"] for _, h, _ in answers] == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert [s for s, _, _ in answers] == [200, 200, 200, 200, 400, 200]
    assert "malformed JSON" in json.loads(answers[4][2])["error"]


def test_connection_close_and_http_1_0(server: Server, classifier: Artifact) -> None:
    body = _v2(classifier.X[:1])
    for wire in (
        _request("/v2/models/bc/infer", body, "connection: close"),
        _request("/v2/models/bc/infer", body, version="1.0"),
    ):
        sock, reader = _connect(server)
        with sock:
            sock.sendall(wire)
            status, headers, _ = reader.response()
            assert status == 200
            assert headers.get("connection") == "close"
            assert reader.closed()


def test_keep_alive_serves_many_requests_on_one_connection(
    server: Server, classifier: Artifact
) -> None:
    sock, reader = _connect(server)
    with sock:
        for i in range(200):
            sock.sendall(_request("/v2/models/bc/infer", _v2(classifier.X[i : i + 1], False)))
            status, _, body = reader.response()
            assert status == 200
            label = json.loads(body)["outputs"][0]["data"][0]
            assert label == classifier.estimator.predict(classifier.X[i : i + 1])[0]


def test_bad_input_on_the_fast_lane_is_a_4xx_with_a_reason(server: Server) -> None:
    """Including values a float cannot hold (an integer literal of 400 digits)."""
    huge = "1" + "0" * 400
    cases = [
        (b'{"instances": [[' + b",".join([huge.encode()] * 30) + b"]]}", "/v1/models/bc:predict"),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": ['
            + b",".join([huge.encode()] * 30)
            + b"]}]}",
            "/v2/models/bc/infer",
        ),
        (b'{"instances": [[true' + b", 1" * 29 + b"]]}", "/v1/models/bc:predict"),
        (b'{"instances": [[1, 2]]}', "/v1/models/bc:predict"),
        (b'{"inputs": [[1]], "instances": [[1]]}', "/v1/models/bc:predict"),
        (
            b'{"inputs": [{"name": "x", "shape": [1.0, 30], "datatype": "FP64", "data": ['
            + b",".join([b"1"] * 30)
            + b"]}]}",
            "/v2/models/bc/infer",
        ),
        (b"", "/v2/models/bc/infer"),
    ]
    for body, path in cases:
        response = server.client.post(path, content=body)
        assert 400 <= response.status_code < 500, (path, body[:80], response.text)
        assert response.json()["error"], response.text
        assert response.headers["x-model-version"] == "3"


def test_a_large_batch_is_answered_through_the_asgi_path(
    server: Server, classifier: Artifact
) -> None:
    """300 rows (more than inline_max_rows) go to a worker thread; same answers."""
    rows = classifier.X[:300]
    response = server.client.post("/v1/models/bc:predict", json={"instances": rows.tolist()})
    assert response.status_code == 200
    assert response.json()["predictions"] == classifier.estimator.predict(rows).tolist()


def test_a_client_that_does_not_read_is_held_back_then_answered_in_order(
    server: Server, classifier: Artifact
) -> None:
    """Back-pressure: a client pipelining requests without reading its answers is stopped
    (the server stops reading once its answers back up, so its memory stays bounded) instead of
    having every answer buffered; once the client reads, every answer arrives, in order."""
    count = 60_000
    row = json.dumps({"instances": [[round(v, 2) for v in classifier.X[0]]]}).encode()
    wire = b"".join(
        _request("/v1/models/bc:predict", row, f"x-request-id: bp{i}") for i in range(count)
    )
    sock = socket.create_connection(_address(server), timeout=10)
    with sock:
        sock.setblocking(False)
        sent, last_progress, stalled = 0, time.monotonic(), False
        deadline = time.monotonic() + 120
        while sent < len(wire) and time.monotonic() < deadline:
            try:
                sent += sock.send(wire[sent : sent + 65536])
                last_progress = time.monotonic()
            except BlockingIOError:
                if time.monotonic() - last_progress > 1.5:
                    stalled = True
                    break
                time.sleep(0.01)
        assert stalled, f"the server read all {sent} bytes without anyone reading its answers"
        sock.setblocking(True)
        sock.settimeout(30)
        sender = threading.Thread(target=sock.sendall, args=(wire[sent:],), daemon=True)
        sender.start()
        reader = Reader(sock)
        for i in range(count):
            status, headers, _ = reader.response()
            assert status == 200
            assert headers["x-request-id"] == f"bp{i}"
        sender.join(timeout=30)
        assert not sender.is_alive()


def test_requests_through_both_lanes_are_counted(server: Server, classifier: Artifact) -> None:
    def count() -> float:
        text = server.client.get("/metrics").text
        for line in text.splitlines():
            if (
                line.startswith("modelship_requests_total{")
                and 'handler="v2_infer"' in line
                and 'code="200"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    sock, reader = _connect(server)
    with sock:
        sock.sendall(_request("/v2/models/bc/infer", _v2(classifier.X[:1])))
        sock.sendall(_chunked("/v2/models/bc/infer", _v2(classifier.X[:1])))
        reader.response()
        reader.response()
    assert count() == before + 2
