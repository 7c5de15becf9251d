"""The router as a real process in front of real upstream servers (static config file)."""

from __future__ import annotations

import math
import re
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelship_router.config import RoutingConfig
from modelship_router.routing import build_table, decide
from router_harness import UpstreamServer, routing, write_config


def raw_exchange(port: int, data: bytes, expect_responses: int = 1) -> bytes:
    """Send raw bytes and read until the server closes or enough responses arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < expect_responses or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One stable and one canary upstream shared by the tests of this module."""
    log_dir = tmp_path_factory.mktemp("upstreams")
    stable = UpstreamServer("stable-1", log_dir)
    canary = UpstreamServer("canary-1", log_dir, UPSTREAM_MODEL_VERSION="2.0.0+build7")
    yield stable, canary
    stable.stop()
    canary.stop()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "routing.json"


def test_paths_bodies_and_attribution_headers(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 0))
    router = spawn_router(config_file)
    for path in ("/v1/models/churn:predict", "/v2/models/churn/infer"):
        resp = httpx.post(f"{router.url}{path}?verbose=1", json={"instances": [[1, 2]]})
        assert resp.status_code == 200
        echo = resp.json()
        assert (echo["upstream"], echo["method"], echo["path"]) == ("stable-1", "POST", path)
        assert echo["query"] == "verbose=1"
        assert echo["body"] == '{"instances":[[1,2]]}'
        assert echo["headers"]["content-type"] == "application/json"
        assert resp.headers["x-modelship-variant"] == "stable"
        assert resp.headers["x-model-version"] == "1.0.0"
        # A request id is generated, sent upstream and returned to the client.
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["x-request-id"])
        assert echo["headers"]["x-request-id"] == resp.headers["x-request-id"]
        assert echo["headers"]["x-forwarded-for"] == "127.0.0.1"


def test_request_id_and_upstream_model_version_pass_through(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 100))
    router = spawn_router(config_file)
    resp = httpx.get(f"{router.url}/anything", headers={"x-request-id": "req-42"})
    assert resp.status_code == 200
    assert resp.json()["headers"]["x-request-id"] == "req-42"
    assert resp.headers["x-request-id"] == "req-42"
    assert resp.headers["x-modelship-variant"] == "canary"
    # The canary upstream reports its own version: the router does not overwrite it.
    assert resp.headers["x-model-version"] == "2.0.0+build7"
    assert resp.headers.get_list("x-model-version") == ["2.0.0+build7"]


def test_weights_hold_over_real_http(upstreams: Any, config_file: Path, spawn_router: Any) -> None:
    """30 % canary over 1,000 requests stays within 5 sigma (+-72 requests)."""
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 30))
    router = spawn_router(config_file)
    n = 1000
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=router.url) as client:
        for _ in range(n):
            resp = client.get("/v1/models/churn")
            assert resp.status_code == 200
            variant = resp.headers["x-modelship-variant"]
            assert resp.json()["upstream"] == f"{variant}-1"  # the header tells the truth
            seen[variant] += 1
    assert abs(seen["canary"] - 0.3 * n) <= 5 * math.sqrt(n * 0.3 * 0.7), seen


def test_match_rules_override_weights(upstreams: Any, config_file: Path, spawn_router: Any) -> None:
    stable, canary = upstreams
    rules = [
        {"header": "x-group", "value": "beta", "variant": "canary"},
        {"cookie": "pin", "value": "stable", "variant": "stable"},
    ]
    write_config(
        config_file,
        routing([stable.address], [canary.address], 0, match=rules, sticky={"header": "x-user-id"}),
    )
    router = spawn_router(config_file)
    with httpx.Client(base_url=router.url) as client:
        for i in range(50):
            forced = client.get("/p", headers={"x-group": "beta", "x-user-id": f"u{i}"})
            assert forced.headers["x-modelship-variant"] == "canary"
            plain = client.get("/p", headers={"x-group": "alpha"})
            assert plain.headers["x-modelship-variant"] == "stable"
    write_config(
        config_file,
        routing([stable.address], [canary.address], 100, generation=2, match=rules),
    )
    router.wait_generation(2)
    with httpx.Client(base_url=router.url) as client:
        for _ in range(50):
            pinned = client.get("/p", headers={"cookie": "theme=dark; pin=stable"})
            assert pinned.headers["x-modelship-variant"] == "stable"
            assert client.get("/p").headers["x-modelship-variant"] == "canary"


def _assignments(url: str, keys: list[str]) -> dict[str, str]:
    with httpx.Client(base_url=url) as client:
        return {
            key: client.get("/p", headers={"x-user-id": key}).headers["x-modelship-variant"]
            for key in keys
        }


def test_sticky_across_routers_restarts_and_weight_increase(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    data = routing([stable.address], [canary.address], 10, sticky={"header": "x-user-id"})
    write_config(config_file, data)
    keys = [f"user-{i}" for i in range(300)]
    first = spawn_router(config_file)
    second = spawn_router(config_file)
    a = _assignments(first.url, keys)
    b = _assignments(second.url, keys)
    assert a == b
    # Exactly what the documented hash says (reproducible outside the router).
    table = build_table(RoutingConfig.model_validate(data))
    assert a == {k: decide(table, {"x-user-id": k}, 0).variant for k in keys}
    assert 0 < sum(v == "canary" for v in a.values()) < len(keys) / 2

    port = first.port
    first.stop()
    restarted = spawn_router(config_file, port=port)
    assert _assignments(restarted.url, keys) == a

    write_config(
        config_file,
        routing(
            [stable.address], [canary.address], 50, generation=2, sticky={"header": "x-user-id"}
        ),
    )
    restarted.wait_generation(2)
    second.wait_generation(2)
    after = _assignments(restarted.url, keys)
    assert after == _assignments(second.url, keys)
    assert not [k for k in keys if a[k] == "canary" and after[k] == "stable"]
    assert sum(v == "canary" for v in after.values()) > sum(v == "canary" for v in a.values())


def test_fallback_to_stable_when_variant_has_no_live_upstream(
    spawn_upstream: Any, config_file: Path, spawn_router: Any
) -> None:
    stable = spawn_upstream("stable-1")
    canary = spawn_upstream("canary-1")
    write_config(config_file, routing([stable.address], [canary.address], 100))
    router = spawn_router(config_file)
    assert httpx.get(f"{router.url}/p").headers["x-modelship-variant"] == "canary"
    canary.kill()
    with httpx.Client(base_url=router.url) as client:
        for _ in range(30):
            resp = client.post("/v1/models/churn:predict", json={"instances": [[0]]})
            assert resp.status_code == 200
            assert resp.headers["x-modelship-variant"] == "stable"
            assert resp.headers["x-model-version"] == "1.0.0"
            assert resp.json()["upstream"] == "stable-1"
    assert re.search(
        r'modelship_router_fallbacks_total\{deployment="churn",from_variant="canary"\} [1-9]',
        router.metrics(),
    )
    # Logged once when the variant starts falling back, not once per request.
    assert router.log().count("variant canary has no ready upstream") == 1


def test_connection_failure_is_retried_on_another_upstream(
    spawn_upstream: Any, config_file: Path, spawn_router: Any
) -> None:
    s1 = spawn_upstream("stable-1")
    s2 = spawn_upstream("stable-2")
    canary = spawn_upstream("canary-1")
    write_config(config_file, routing([s1.address, s2.address], [canary.address], 0))
    router = spawn_router(config_file, eject_seconds="0")  # no ejection: every pick may fail
    s1.kill()
    with httpx.Client(base_url=router.url) as client:
        for _ in range(20):
            resp = client.get("/p")
            assert resp.status_code == 200
            assert resp.json()["upstream"] == "stable-2"
    assert re.search(
        r'modelship_router_retries_total\{deployment="churn",variant="stable"\} [1-9]',
        router.metrics(),
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/models/churn:predict"), ("POST", "/v2/models/churn/infer"), ("GET", "/p")],
)
def test_a_prediction_cut_off_by_a_dying_upstream_is_answered_by_another(
    spawn_upstream: Any, config_file: Path, spawn_router: Any, method: str, path: str
) -> None:
    dying = spawn_upstream("stable-1", UPSTREAM_DIE_MID_ANSWER="1")
    healthy = spawn_upstream("stable-2")
    canary = spawn_upstream("canary-1")
    write_config(config_file, routing([dying.address, healthy.address], [canary.address], 0))
    router = spawn_router(config_file)
    with httpx.Client(base_url=router.url, timeout=10) as client:
        # Round robin sends one of the first two to the upstream that dies mid-answer.
        answers = [client.request(method, path, json={"instances": [[1]]}) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert {a.json()["upstream"] for a in answers} == {"stable-2"}
    assert dying.proc.wait(timeout=10) == -signal.SIGKILL  # it did die while answering
    assert re.search(
        r'modelship_router_retries_total\{deployment="churn",variant="stable"\} 1\.0',
        router.metrics(),
    )


def test_feedback_cut_off_by_a_dying_upstream_is_not_sent_twice(
    spawn_upstream: Any, config_file: Path, spawn_router: Any
) -> None:
    dying = spawn_upstream("stable-1", UPSTREAM_DIE_MID_ANSWER="1")
    healthy = spawn_upstream("stable-2")
    canary = spawn_upstream("canary-1")
    write_config(config_file, routing([dying.address, healthy.address], [canary.address], 0))
    router = spawn_router(config_file)
    feedback = {"id": "r1", "label": 1}
    with httpx.Client(base_url=router.url, timeout=10) as client:
        answers = [client.post("/v1/models/churn:feedback", json=feedback) for _ in range(2)]
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 502], [a.text for a in answers]
    cut = next(a for a in answers if a.status_code == 502)
    assert "closed mid-response" in cut.json()["error"]
    assert healthy.stats()["requests"] == 1  # the cut-off feedback was not repeated
    assert dying.proc.wait(timeout=10) == -signal.SIGKILL


def test_502_with_reason_when_stable_is_down(
    spawn_upstream: Any, config_file: Path, spawn_router: Any
) -> None:
    stable = spawn_upstream("stable-1")
    canary = spawn_upstream("canary-1")
    write_config(config_file, routing([stable.address], [canary.address], 0))
    router = spawn_router(config_file)
    stable.kill()
    resp = httpx.get(f"{router.url}/p")
    assert resp.status_code == 502
    assert "cannot connect" in resp.json()["error"]
    assert resp.headers["x-modelship-variant"] == "stable"


def test_upstream_timeout_is_504(upstreams: Any, config_file: Path, spawn_router: Any) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 0))
    router = spawn_router(config_file, upstream_timeout="0.5")
    resp = httpx.get(f"{router.url}/p", headers={"x-test-delay": "3"}, timeout=30)
    assert resp.status_code == 504
    assert resp.json() == {"error": "upstream timed out", "status": 504}
    # The router stays healthy for the next request.
    assert httpx.get(f"{router.url}/p").status_code == 200


def test_upstream_errors_are_relayed_verbatim(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 0))
    router = spawn_router(config_file)
    resp = httpx.get(f"{router.url}/p", headers={"x-test-status": "422"})
    assert resp.status_code == 422
    assert resp.json()["upstream"] == "stable-1"
    assert 'code="422"' in router.metrics()


def test_health_readiness_and_generation(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 25, generation=7))
    router = spawn_router(config_file)
    assert httpx.get(f"{router.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{router.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["generation"] == 7
    assert ready.json()["variants"]["canary"] == {"weight": 25.0, "upstreams": 1}
    assert 'modelship_router_config_generation{deployment="churn"} 7.0' in router.metrics()
    # No stable upstream (a Service cannot be resolved without Kubernetes): not ready.
    no_stable = routing([stable.address], [canary.address], 25, generation=8)
    no_stable["variants"][0] = {"name": "stable", "modelVersion": "1", "service": "churn-stable"}
    write_config(config_file, no_stable)
    router.wait_generation(8)
    not_ready = httpx.get(f"{router.url}/readyz")
    assert not_ready.status_code == 503
    assert "stable has no upstream" in not_ready.json()["reason"]


def test_invalid_config_change_keeps_the_previous_one(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 100, generation=3))
    router = spawn_router(config_file)
    bad = routing([stable.address], [canary.address], 100, generation=4)
    bad["variants"][1]["weight"] = 130
    write_config(config_file, bad)
    write_config(config_file.with_name("marker.json"), {})  # let the router notice
    import time

    deadline = time.monotonic() + 10
    while "refused" not in router.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "variants.1.weight" in router.log()
    assert router.ready()["generation"] == 3
    assert httpx.get(f"{router.url}/p").headers["x-modelship-variant"] == "canary"
    assert re.search(r"modelship_router_config_errors_total\{[^}]*\} 1\.0", router.metrics())


def test_bad_requests_get_4xx_with_reason(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 0))
    router = spawn_router(config_file, max_body_bytes="1000", max_header_bytes="4000")
    garbage = raw_exchange(router.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert b"malformed HTTP request" in garbage
    big = httpx.post(f"{router.url}/p", content=b"x" * 2000)
    assert big.status_code == 413
    assert big.json()["error"] == "request body is too large"
    huge_head = httpx.get(f"{router.url}/p", headers={"x-big": "y" * 5000})
    assert huge_head.status_code == 431
    upgrade = raw_exchange(
        router.port,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    assert upgrade.startswith(b"HTTP/1.1 501 ")
    # The router is unharmed, and counted what it refused.
    assert httpx.get(f"{router.url}/p").status_code == 200
    metrics = router.metrics()
    for code in (400, 413, 431, 501):
        assert f'code="{code}",deployment="churn",variant="none"}} 1.0' in metrics, code


def test_pipelined_requests_answered_in_order(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 0))
    router = spawn_router(config_file)
    requests = b"".join(
        b"GET /order/%d HTTP/1.1\r\nHost: t\r\nx-test-delay: %s\r\n\r\n" % (i, d)
        for i, d in ((1, b"0.3"), (2, b"0"), (3, b"0.1"))
    )
    data = raw_exchange(router.port, requests, expect_responses=3)
    paths = re.findall(rb'"path": "(/order/\d)"', data)
    assert paths == [b"/order/1", b"/order/2", b"/order/3"]


def test_chunked_upload_head_and_expect_continue(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 0))
    router = spawn_router(config_file)

    def chunks() -> Any:
        yield b'{"instances": '
        yield b"[[1, 2, 3]]}"

    resp = httpx.post(f"{router.url}/v1/models/m:predict", content=chunks())
    assert resp.status_code == 200
    assert resp.json()["body"] == '{"instances": [[1, 2, 3]]}'
    assert resp.json()["headers"]["content-length"] == "26"
    assert "transfer-encoding" not in resp.json()["headers"]

    head = httpx.head(f"{router.url}/p")
    assert head.status_code == 200
    assert head.headers["x-modelship-variant"] == "stable"
    assert head.content == b""

    expect = raw_exchange(
        router.port,
        b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}",
        expect_responses=2,
    )
    assert expect.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    # And on the same keep-alive connection afterwards, HEAD did not break the pool.
    assert httpx.get(f"{router.url}/p").status_code == 200


def test_large_and_chunked_responses_are_relayed_whole(
    upstreams: Any, config_file: Path, spawn_router: Any
) -> None:
    stable, canary = upstreams
    write_config(config_file, routing([stable.address], [canary.address], 0))
    router = spawn_router(config_file)
    direct = httpx.get(f"{stable.url}/_stream?parts=50&size=100000")
    assert direct.headers.get("transfer-encoding") == "chunked"
    resp = httpx.get(f"{router.url}/_stream?parts=50&size=100000", timeout=30)
    assert resp.status_code == 200
    assert resp.content == b"x" * 5_000_000
    assert resp.headers["content-length"] == "5000000"
    assert "transfer-encoding" not in resp.headers
    assert resp.headers["x-modelship-variant"] == "stable"
    big_upload = httpx.post(f"{router.url}/p", content=b"y" * 3_000_000, timeout=30)
    assert big_upload.status_code == 200
    assert len(big_upload.json()["body"]) == 3_000_000
