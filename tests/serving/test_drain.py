"""SIGTERM: readiness turns false first, in-flight requests finish, then the process exits 0."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx
from serving_helpers import Artifact, start_server, stop_server


def test_sigterm_drains_in_flight_requests(tmp_path: Path, classifier: Artifact) -> None:
    server = start_server(tmp_path, classifier, "--drain-seconds", "2", name="bc")
    host, port = server.base.removeprefix("http://").split(":")
    rows = classifier.X[:2].tolist()
    body = json.dumps({"instances": rows}).encode()
    try:
        # An in-flight request for real: the client has sent half of its body when SIGTERM lands.
        slow = socket.create_connection((host, int(port)))
        slow.sendall(
            b"POST /v1/models/bc:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nx-request-id: in-flight-1\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)

        # 1. Readiness turns false while the server still answers (endpoints need time to update).
        deadline = time.monotonic() + 10
        while server.client.get("/v2/health/ready").status_code != 503:
            assert time.monotonic() < deadline, "readiness never turned false"
            time.sleep(0.02)
        ready = httpx.get(f"{server.base}/v2/health/ready")
        assert "shutting down" in ready.json()["error"]
        during = httpx.post(f"{server.base}/v1/models/bc:predict", json={"instances": rows})
        assert during.status_code == 200

        # 2. After the drain delay the listener closes: new connections are refused ...
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "listener never closed"
            time.sleep(0.05)
        assert server.process.poll() is None, "exited with a request still in flight"

        # 3. ... but the in-flight request completes with a real answer.
        slow.sendall(body[len(body) // 2 :])
        response = b""
        slow.settimeout(10)
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = slow.recv(65536)
            if not chunk:
                break
            response += chunk
        slow.close()
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), response
        assert b"x-request-id: in-flight-1" in head
        expected = classifier.estimator.predict(classifier.X[:2]).tolist()
        assert json.loads(payload)["predictions"] == expected

        # 4. Then the process exits cleanly.
        assert server.process.wait(timeout=20) == 0
    finally:
        stop_server(server)


def test_sigterm_turns_grpc_readiness_false_and_exits_cleanly(
    tmp_path: Path, classifier: Artifact
) -> None:
    import numpy as np
    import tritonclient.grpc as triton

    server = start_server(tmp_path, classifier, "--drain-seconds", "2", name="bc")
    client = triton.InferenceServerClient(server.grpc_target)
    rows = triton.InferInput("input-0", [2, 30], "FP64")
    rows.set_data_from_numpy(classifier.X[:2])
    try:
        assert client.is_server_ready() and client.is_model_ready("bc")
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while client.is_server_ready():
            assert time.monotonic() < deadline, "gRPC readiness never turned false"
            time.sleep(0.02)
        assert not client.is_model_ready("bc")
        # Still answering while endpoints drop the pod, as over HTTP.
        answer = client.infer("bc", [rows]).as_numpy("predict")
        np.testing.assert_array_equal(answer, classifier.estimator.predict(classifier.X[:2]))  # type: ignore[attr-defined]
        assert server.process.wait(timeout=30) == 0
    finally:
        client.close()
        stop_server(server)
