"""A variant scaled to zero: its requests are held until a pod is ready, then answered by
it; answered 503 with the reason after activationSeconds. Real router processes (file
mode, where a variant naming a Service has no upstreams, as a Deployment at 0 has none)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from router_harness import write_config


def asleep(activation: float, generation: int = 1, upstreams: list[str] | None = None) -> Any:
    """Routing with stable that may be scaled to zero: no upstream, or ``upstreams``."""
    stable: dict[str, Any] = {
        "name": "stable",
        "modelVersion": "1.0.0",
        "scaleTarget": "churn-stable",
    }
    stable |= {"upstreams": upstreams} if upstreams else {"service": "churn-stable"}
    return {
        "deployment": "churn",
        "generation": generation,
        "variants": [stable],
        "activationSeconds": activation,
    }


def activations(metrics: str, outcome: str) -> float:
    series = f'modelship_router_activations_total{{deployment="churn",outcome="{outcome}",'
    found = re.search(re.escape(series) + r'variant="stable"\} ([0-9.e+]+)', metrics)
    return float(found.group(1)) if found else 0.0


def test_requests_for_a_variant_scaled_to_zero_wait_for_its_first_pod(
    tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> None:
    upstream = spawn_upstream("s1")
    config = tmp_path / "routing.json"
    write_config(config, asleep(activation=30))
    router = spawn_router(config)
    # Ready with no pod of stable: clients must reach the router to wake it.
    assert router.ready()["ready"] is True
    assert httpx.get(f"{router.url}/readyz").status_code == 200
    answers: list[httpx.Response] = []
    sent = time.monotonic()

    def predict(row: int) -> None:
        url = f"{router.url}/v1/models/churn:predict"
        answers.append(httpx.post(url, json={"instances": [[row]]}, timeout=40))

    clients = [threading.Thread(target=predict, args=(i,)) for i in range(5)]
    for client in clients:
        client.start()
    time.sleep(1.5)
    assert answers == [], "answered before any pod of stable was ready"
    assert all(client.is_alive() for client in clients)

    # Its first pod becomes ready: every held request goes to it.
    write_config(config, asleep(activation=30, generation=2, upstreams=[upstream.address]))
    for client in clients:
        client.join(timeout=20)
    waited = time.monotonic() - sent
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert {a.headers["x-modelship-variant"] for a in answers} == {"stable"}
    assert upstream.stats()["requests"] == 5
    assert 1.5 <= waited < 20
    metrics = router.metrics()
    assert activations(metrics, "activated") == 5, metrics
    assert activations(metrics, "timeout") == 0
    # Once up, requests are not held at all.
    quick = time.monotonic()
    again = httpx.post(f"{router.url}/v1/models/churn:predict", json={"instances": [[9]]})
    assert again.status_code == 200 and time.monotonic() - quick < 1
    assert activations(router.metrics(), "activated") == 5


def test_no_pod_ready_within_the_activation_timeout_is_a_503_saying_why(
    tmp_path: Path, spawn_router: Any
) -> None:
    config = tmp_path / "routing.json"
    write_config(config, asleep(activation=1.5))
    router = spawn_router(config)
    sent = time.monotonic()
    answer = httpx.post(f"{router.url}/v1/models/churn:predict", json={"instances": [[1]]},
                        timeout=20)  # fmt: skip
    waited = time.monotonic() - sent
    assert answer.status_code == 503
    assert "stable is scaled to zero and no pod of it was ready" in answer.text
    assert 1.5 <= waited < 6
    assert activations(router.metrics(), "timeout") == 1
    assert "not scaled (the router runs without Kubernetes)" in router.log()
