"""Feedback joins its prediction with 3 real serving processes per variant behind a real
router, across a router restart: the response's x-modelship-replica sends the label back
to the pod that predicted it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from replica_servers import REPLICAS, replicas_per_variant
from router_harness import RouterProcess, routing, write_config
from serving_helpers import Server
from sklearn.datasets import load_breast_cancer

PREDICTIONS = 300


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, list[Server]]]:
    with replicas_per_variant(tmp_path) as started:
        yield started


def test_feedback_joins_with_three_replicas_per_variant_across_a_router_restart(
    tmp_path: Path, servers: dict[str, list[Server]], spawn_router: Any
) -> None:
    def address(server: Server) -> str:
        return server.base.removeprefix("http://")

    config = tmp_path / "routing.json"
    match = [
        {"header": "x-modelship-variant", "value": v, "variant": v} for v in ("stable", "canary")
    ]
    write_config(
        config,
        routing(
            [address(s) for s in servers["stable"]],
            [address(s) for s in servers["canary"]],
            canary_weight=50,
            match=match,
        ),
    )
    X, y = load_breast_cancer(return_X_y=True)
    router: RouterProcess = spawn_router(config)
    served: list[tuple[str, str, str, int]] = []
    with httpx.Client(base_url=router.url, timeout=30) as client:
        for i in range(PREDICTIONS):
            request_id = f"req-{i}"
            response = client.post(
                "/v1/models/bc:predict",
                json={"instances": [X[i % len(X)].tolist()]},
                headers={"x-request-id": request_id},
            )
            assert response.status_code == 200, response.text
            served.append(
                (
                    request_id,
                    response.headers["x-modelship-variant"],
                    response.headers["x-modelship-replica"],
                    int(y[i % len(y)]),
                )
            )
    # Predictions were spread over every replica of both variants.
    assert len({replica for _, _, replica, _ in served}) == 2 * REPLICAS
    router.stop()
    restarted: RouterProcess = spawn_router(config)  # no memory of the predictions
    joined = Counter[str]()
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        for request_id, variant, replica, label in served:
            response = client.post(
                "/v1/models/bc:feedback",
                json={"feedback": [{"request_id": request_id, "label": label}]},
                headers={"x-modelship-variant": variant, "x-modelship-replica": replica},
            )
            assert response.status_code == 200, response.text
            joined["joined" if response.json()["matched"] == 1 else "not joined"] += 1
    share = joined["joined"] / PREDICTIONS
    print(f"feedback joined: {joined['joined']}/{PREDICTIONS} ({share:.1%})")
    assert share >= 0.99
    # Feedback without the replica header reaches some pod of the variant; most do not
    # know the request id, and say so (counted unjoined with reason unknown).
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        unknown = client.post(
            "/v1/models/bc:feedback",
            json={"feedback": [{"request_id": "never-predicted", "label": 1}]},
            headers={"x-modelship-variant": "stable"},
        ).json()
    assert unknown["matched"] == 0 and unknown["unknown_request_ids"] == ["never-predicted"]
    scraped = "".join(s.client.get("/metrics").text for s in servers["stable"])
    assert "modelship_feedback_unjoined_total{" in scraped and 'reason="unknown"' in scraped
