"""Fuzz through the router: 10,000 generated requests, router in front of a real model server.

The same generated inputs as the serving fuzz (arbitrary JSON, near-valid V1/V2 payloads,
binary-extension requests, raw bytes, odd paths, methods and request ids), plus malformed
HTTP/1.1 framing sent on raw sockets, go to a real ``modelship-router`` process whose two
variants are real ``modelship-serve`` processes on loopback. Every answer must be < 500 (a
5xx for client input is a defect, in the router or in the server), every 4xx must carry a
reason, and after all of it the router still answers and has counted no 5xx of its own.

Counts: 8,500 requests from the hypothesis strategies below plus 1,500 raw-socket requests
(``REQUESTS`` adds them up); the figure is printed at the end of the module.
"""

from __future__ import annotations

import json
import random
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import test_fuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_harness import RouterProcess, routing, write_config
from serving_helpers import Artifact, Server, start_server, stop_server

pytestmark = pytest.mark.slow

#: Examples per hypothesis test; the raw-socket test sends RAW_REQUESTS more.
EXAMPLES = {"v1": 2000, "v2": 2000, "feedback": 1000, "binary": 1000, "raw": 1500, "paths": 1000}
RAW_REQUESTS = 1500
REQUESTS = sum(EXAMPLES.values()) + RAW_REQUESTS
TALLY: Counter[str] = Counter()


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,
        database=None,
    )


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, named_forest: Artifact
) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("fuzz-router")
    servers: list[Server] = [
        start_server(tmp, named_forest, name="iris"),
        start_server(tmp, named_forest, name="iris"),
    ]
    config = tmp / "routing.json"
    hosts = [server.base.removeprefix("http://") for server in servers]
    write_config(config, routing([hosts[0]], [hosts[1]], canary_weight=50))
    proc = RouterProcess(config, tmp)
    proc.wait_generation(1)
    client = httpx.Client(base_url=proc.url, timeout=30)
    try:
        yield client
        # After everything: the router is alive, ready, and answered no 5xx itself.
        assert proc.proc.poll() is None, proc.log()
        assert client.get("/readyz").status_code == 200
        five_xx = [
            line
            for line in proc.metrics().splitlines()
            if line.startswith("modelship_router_requests_total")
            and 'code="5' in line
            and not line.rstrip().endswith(" 0.0")
        ]
        assert not five_xx, five_xx
        assert "Traceback" not in proc.log(), proc.log()[-4000:]
        print(f"\nrouter fuzz: {sum(TALLY.values())} requests, by status class: {dict(TALLY)}")
    finally:
        client.close()
        proc.stop()
        for server in servers:
            stop_server(server)


def check(response: httpx.Response) -> None:
    TALLY[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), response.text[:500]


def post(client: httpx.Client, path: str, body: Any, **headers: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    check(client.post(path, content=content, headers=headers))


@fuzz(EXAMPLES["v1"])
@given(body=st.one_of(test_fuzz.v1_bodies, test_fuzz.json_values))
def test_v1_predict_through_the_router_never_5xx(router: httpx.Client, body: Any) -> None:
    post(router, "/v1/models/iris:predict", body)


@fuzz(EXAMPLES["v2"])
@given(body=st.one_of(test_fuzz.v2_bodies, test_fuzz.json_values))
def test_v2_infer_through_the_router_never_5xx(router: httpx.Client, body: Any) -> None:
    post(router, "/v2/models/iris/infer", body)


@fuzz(EXAMPLES["feedback"])
@given(body=test_fuzz.feedback_bodies)
def test_feedback_through_the_router_never_5xx(router: httpx.Client, body: Any) -> None:
    post(router, "/v1/models/iris:feedback", body)


@fuzz(EXAMPLES["binary"])
@given(request=test_fuzz.binary_requests)
def test_binary_through_the_router_never_5xx(
    router: httpx.Client, request: tuple[Any, bytes, Any]
) -> None:
    header, blob, declared = request
    text = json.dumps(header).encode()
    length = len(text) if declared is None else declared
    post(
        router,
        "/v2/models/iris/infer",
        text + blob,
        **{"Inference-Header-Content-Length": str(length)},
    )


@fuzz(EXAMPLES["raw"])
@given(
    body=st.binary(max_size=300),
    path=st.sampled_from(
        ["/v1/models/iris:predict", "/v2/models/iris/infer", "/v1/models/iris:feedback"]
    ),
)
def test_raw_bytes_through_the_router_never_5xx(
    router: httpx.Client, body: bytes, path: str
) -> None:
    post(router, path, body)


@fuzz(EXAMPLES["paths"])
@given(
    path=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#"),
        max_size=40,
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    headers=st.dictionaries(
        st.sampled_from(
            ["x-request-id", "x-user-id", "cookie", "x-model-version", "accept", "x-forwarded-for"]
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
            str.strip
        ),
        max_size=4,
    ),
)
def test_paths_methods_and_headers_through_the_router_never_5xx(
    router: httpx.Client, path: str, method: str, headers: dict[str, str]
) -> None:
    try:
        url = httpx.URL("/" + path.lstrip("/"))
    except httpx.InvalidURL:
        return  # not a URL httpx can send; the raw-socket test covers odd request lines
    response = router.request(
        method, url, content=b'{"instances": [[1, 2, 3, 4]]}', headers=headers
    )
    TALLY[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])


# --- malformed HTTP/1.1 framing on raw sockets ----------------------------------------------

_METHODS = [b"GET", b"POST", b"PUT", b"BREW", b"", b"G\x00T", b"post"]
_TARGETS = [b"/v2/models/iris/infer", b"/v1/models/iris:predict", b"*", b"", b"http://x/",
            b"/%zz", b"/" + b"a" * 9000, b"/v2/models/iris/infer?x=1&&="]  # fmt: skip
_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b"", b"HTTP/1.1 extra"]
_HEADERS = [
    b"Content-Length: 5",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999",
    b"Content-Length: 5\r\nContent-Length: 7",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3",
    b"Host:",
    b"Bad Header: x",
    b": empty-name",
    b"X-Long: " + b"v" * 20000,
    b"x-request-id: \x7f\x01",
    b"Expect: 100-continue",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Inference-Header-Content-Length: 9",
]
_BODIES = [b"", b"{}", b'{"instances": [[1,2,3,4]]}', b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n",
           b"zz\r\n", b"\x00" * 64, b'{"inputs": [{"name": "x"']  # fmt: skip


def raw_request(rng: random.Random) -> bytes:
    line = b" ".join(
        part for part in (rng.choice(_METHODS), rng.choice(_TARGETS), rng.choice(_VERSIONS))
    )
    headers = [b"Host: router"] if rng.random() < 0.8 else []
    headers += rng.sample(_HEADERS, rng.randint(0, 3))
    ending = rng.choice([b"\r\n\r\n", b"\n\n", b"\r\n"])
    return line + b"\r\n" + b"\r\n".join(headers) + ending + rng.choice(_BODIES)


def status_of(answer: bytes) -> int | None:
    """The status code of the first response in ``answer`` (None if there is none)."""
    if not answer.startswith(b"HTTP/1."):
        return None
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def test_malformed_http_framing_through_the_router_never_5xx(router: httpx.Client) -> None:
    """Broken request lines, conflicting lengths, bad chunking, huge heads: each answered
    with a 4xx (or the connection closed when nothing is parseable), never a 5xx."""
    host, port = str(router.base_url.host), int(router.base_url.port or 80)
    rng = random.Random(20261203)
    answered = Counter[str]()
    for _ in range(RAW_REQUESTS):
        request = raw_request(rng)
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = status_of(answer)
        answered["closed" if status is None else f"{status // 100}xx"] += 1
        TALLY["closed" if status is None else f"{status // 100}xx"] += 1
        assert status is None or status < 500, (request[:300], answer[:300])
    # Most malformed requests are answered with a reason rather than a silent close.
    assert answered["4xx"] > RAW_REQUESTS // 2, answered
    assert router.get("/healthz").status_code == 200
