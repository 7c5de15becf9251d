"""After SIGTERM the router keeps answering for drain_seconds with readiness false, so
clients kube-proxy still sends to a terminating pod are answered, not refused."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
from router_harness import routing, write_config


def router_draining_for(
    seconds: int, tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> Any:
    """A router process with DRAIN_SECONDS=seconds in front of one real upstream."""
    upstream = spawn_upstream("s1")
    config = tmp_path / "routing.json"
    write_config(config, routing([upstream.address], [upstream.address]))
    return spawn_router(config, drain_seconds=str(seconds))


def test_sigterm_drains_then_stops_answering_every_client_meanwhile(
    tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> None:
    router = router_draining_for(3, tmp_path, spawn_upstream, spawn_router)
    with httpx.Client(base_url=router.url, timeout=5) as kept:
        assert kept.get("/readyz").status_code == 200
        # a keep-alive connection opened before the signal
        assert kept.post("/v1/models/churn:predict", json={"instances": [[1]]}).status_code == 200

        signalled = time.monotonic()
        router.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = httpx.get(f"{router.url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"

        # New connections during the drain are accepted and answered, and told to close.
        answered = 0
        while time.monotonic() - signalled < 2.5:
            fresh = httpx.post(
                f"{router.url}/v1/models/churn:predict", json={"instances": [[2]]}, timeout=5
            )
            assert fresh.status_code == 200, fresh.text
            assert fresh.headers["connection"] == "close"
            answered += 1
            time.sleep(0.1)
        assert answered >= 10
        # The connection from before the signal is answered too, and closed after.
        late = kept.post("/v1/models/churn:predict", json={"instances": [[3]]})
        assert late.status_code == 200 and late.headers["connection"] == "close"

    assert router.proc.wait(timeout=15) == 0, router.log()
    waited = time.monotonic() - signalled
    assert 3 <= waited < 13, waited
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", router.port)) != 0  # no longer listening
    assert "draining: answering for 3s more" in router.log()


def test_a_second_signal_ends_the_drain(
    tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> None:
    router = router_draining_for(60, tmp_path, spawn_upstream, spawn_router)
    router.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert httpx.get(f"{router.url}/readyz", timeout=5).status_code == 503
    signalled = time.monotonic()
    router.proc.send_signal(signal.SIGTERM)
    assert router.proc.wait(timeout=15) == 0, router.log()
    assert time.monotonic() - signalled < 12
