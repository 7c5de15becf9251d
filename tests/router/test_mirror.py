"""Shadow traffic: copies reach the mirror; its slowness or errors never reach the client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from router_harness import routing, write_config

MIRROR_ALL = {"variant": "canary", "percent": 100}


def wait_until(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def mirror_count(metrics: str, outcome: str) -> float:
    prefix = (
        "modelship_router_mirror_requests_total"
        f'{{deployment="churn",outcome="{outcome}",variant="canary"}} '
    )
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def test_slow_mirror_does_not_delay_clients(
    tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> None:
    stable = spawn_upstream("stable-1")
    # The shadow takes a minute per request: if any client waited for it, the client's
    # 10-second timeout below would fire.
    shadow = spawn_upstream("canary-1", UPSTREAM_DELAY="60")
    config = tmp_path / "routing.json"
    write_config(config, routing([stable.address], [shadow.address], 0, mirror=MIRROR_ALL))
    router = spawn_router(config, mirror_timeout="120", mirror_max_in_flight="20")
    n = 30
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for i in range(n):
            resp = client.post("/v1/models/churn:predict", json={"instances": [[i]]})
            assert resp.status_code == 200
            assert resp.headers["x-modelship-variant"] == "stable"
            assert resp.json()["upstream"] == "stable-1"
    # The first 20 copies are in flight at the shadow, marked as copies; the other 10
    # were dropped at the in-flight limit instead of piling up.
    assert wait_until(lambda: shadow.stats() == {"requests": 20, "mirrored": 20})
    assert mirror_count(router.metrics(), "dropped") == n - 20
    assert stable.stats()["requests"] == n
    shadow.kill()  # do not wait a minute for its requests to finish


def test_failing_or_dead_mirror_leaves_status_unchanged(
    tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> None:
    stable = spawn_upstream("stable-1")
    shadow = spawn_upstream("canary-1", UPSTREAM_STATUS="500")
    config = tmp_path / "routing.json"
    write_config(config, routing([stable.address], [shadow.address], 0, mirror=MIRROR_ALL))
    router = spawn_router(config)
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for _ in range(20):
            assert client.get("/v2/models/churn/ready").status_code == 200
        assert wait_until(lambda: mirror_count(router.metrics(), "http_5xx") == 20)
        shadow.kill()
        for _ in range(20):
            resp = client.get("/v2/models/churn/ready")
            assert resp.status_code == 200
            assert resp.headers["x-modelship-variant"] == "stable"
    metrics = router.metrics()
    assert wait_until(
        lambda: (
            mirror_count(router.metrics(), "error") + mirror_count(router.metrics(), "dropped")
            == 20
        )
    )
    assert mirror_count(metrics, "ok") == 0
    # Mirror failures are not client failures, retries or fallbacks.
    assert 'code="200",deployment="churn",variant="stable"} 40.0' in metrics
    assert "modelship_router_retries_total{" not in metrics


def test_partial_mirror_and_no_copy_of_the_shadows_own_requests(
    tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> None:
    stable = spawn_upstream("stable-1")
    shadow = spawn_upstream("canary-1")
    config = tmp_path / "routing.json"
    mirror = {"variant": "canary", "percent": 50}
    write_config(config, routing([stable.address], [shadow.address], 0, mirror=mirror))
    router = spawn_router(config)
    n = 400
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for _ in range(n):
            assert client.get("/p").status_code == 200
    assert wait_until(lambda: mirror_count(router.metrics(), "ok") == shadow.stats()["mirrored"])
    copies = shadow.stats()["mirrored"]
    assert abs(copies - n / 2) <= 5 * (n * 0.25) ** 0.5  # 5 sigma: 150..250
    # Requests the shadow serves itself are not copied to it a second time.
    write_config(
        config, routing([stable.address], [shadow.address], 100, generation=2, mirror=mirror)
    )
    router.wait_generation(2)
    before = shadow.stats()
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for _ in range(20):
            assert client.get("/p").headers["x-modelship-variant"] == "canary"
    after = shadow.stats()
    assert after["requests"] - before["requests"] == 20
    assert after["mirrored"] == before["mirrored"]
