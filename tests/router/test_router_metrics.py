"""The metrics a user scrapes from GET /metrics, with the labels the docs promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from router_harness import routing, write_config


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(found: dict[str, Any], name: str, **labels: str) -> float:
    return sum(
        v for lab, v in found.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def test_every_documented_metric_with_its_labels(
    tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> None:
    s1, s2 = spawn_upstream("stable-1"), spawn_upstream("stable-2")
    canary = spawn_upstream("canary-1")
    shadow_ok = {"variant": "canary", "percent": 100}
    config = tmp_path / "routing.json"
    write_config(
        config,
        routing([s1.address, s2.address], [canary.address], 0, generation=5, mirror=shadow_ok),
    )
    router = spawn_router(config)
    with httpx.Client(base_url=router.url) as client:
        for _ in range(10):
            assert client.get("/p").status_code == 200
        assert client.get("/p", headers={"x-test-status": "503"}).status_code == 503
        s1.kill()  # stable retries on stable-2
        for _ in range(4):
            assert client.get("/p").status_code == 200
        write_config(config, routing([s1.address, s2.address], [canary.address], 100, generation=6))
        router.wait_generation(6)
        canary.kill()  # canary falls back to stable
        for _ in range(4):
            assert client.get("/p").headers["x-modelship-variant"] == "stable"

    found = samples(router.metrics())
    d = {"deployment": "churn"}
    assert value(found, "modelship_router_requests_total", variant="stable", code="200", **d) == 18
    assert value(found, "modelship_router_requests_total", variant="stable", code="503", **d) == 1
    assert value(found, "modelship_router_upstream_duration_seconds_count", variant="stable") == 19
    buckets = [lab["le"] for lab, _ in found["modelship_router_upstream_duration_seconds_bucket"]]
    assert "0.001" in buckets and "+Inf" in buckets
    assert value(found, "modelship_router_retries_total", variant="stable", **d) >= 1
    assert value(found, "modelship_router_fallbacks_total", from_variant="canary", **d) >= 1
    # The shadow saw every request before generation 6, the 503 one included.
    mirror = "modelship_router_mirror_requests_total"
    assert value(found, mirror, variant="canary", outcome="ok") == 14
    assert value(found, mirror, variant="canary", outcome="http_5xx") == 1
    assert value(found, "modelship_router_config_generation", **d) == 6
    assert value(found, "modelship_router_upstreams", variant="stable", **d) == 2
    assert value(found, "modelship_router_config_errors_total", **d) == 0
    assert not [name for name in found if name.endswith("_created")]
    # Every series carries the deployment label, so one Prometheus can scrape many routers.
    for name, series in found.items():
        if name.startswith("modelship_router_"):
            assert all(lab.get("deployment") == "churn" for lab, _ in series), name
