"""Users, not requests: with a sticky key, a real router sends each user's requests to one
of 3 real serving processes of its variant, and the pods' unit counters add up to the
users each variant got (and the users whose first feedback row was right)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from replica_servers import replicas_per_variant
from router_harness import RouterProcess, routing, write_config
from serving_helpers import Server
from sklearn.datasets import load_breast_cancer

USERS = 50
PREDICTIONS = 10


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, list[Server]]]:
    with replicas_per_variant(tmp_path) as started:
        yield started


def scraped(group: list[Server], name: str) -> float:
    """``name`` summed over the pods of one variant."""
    total = 0.0
    for server in group:
        for line in server.client.get("/metrics").text.splitlines():
            if re.match(rf"{name}\{{", line):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_each_user_is_one_pod_and_counts_once(
    tmp_path: Path, servers: dict[str, list[Server]], spawn_router: Any
) -> None:
    def address(server: Server) -> str:
        return server.base.removeprefix("http://")

    config = tmp_path / "routing.json"
    write_config(
        config,
        routing(
            [address(s) for s in servers["stable"]],
            [address(s) for s in servers["canary"]],
            canary_weight=50,
            sticky={"header": "x-user-id"},
        ),
    )
    X, y = load_breast_cancer(return_X_y=True)
    router: RouterProcess = spawn_router(config)
    users = Counter[str]()  # users per variant
    right_first = Counter[str]()  # of them, those whose first feedback row is right
    pods: set[str] = set()
    with httpx.Client(base_url=router.url, timeout=30) as client:
        for user in range(USERS):
            key = {"x-user-id": f"user-{user}"}
            # Some users' labels are flipped, so both outcomes of a first row occur.
            flip = user % 3 == 0
            served: list[tuple[str, str, str, int, int]] = []
            for j in range(PREDICTIONS):
                i = (user * PREDICTIONS + j) % len(X)
                response = client.post(
                    "/v1/models/bc:predict",
                    json={"instances": [X[i].tolist()]},
                    headers={**key, "x-request-id": f"u{user}-{j}"},
                )
                assert response.status_code == 200, response.text
                label = int(y[i]) ^ int(flip)
                predicted = response.json()["predictions"][0]
                served.append(
                    (
                        f"u{user}-{j}",
                        response.headers["x-modelship-variant"],
                        response.headers["x-modelship-replica"],
                        label,
                        predicted,
                    )
                )
            # All of one user's predictions on one pod.
            assert len({(variant, replica) for _, variant, replica, _, _ in served}) == 1
            variant, replica = served[0][1], served[0][2]
            pods.add(replica)
            users[variant] += 1
            right_first[variant] += int(served[0][3] == served[0][4])
            for request_id, _, _, label, _ in served:
                response = client.post(
                    "/v1/models/bc:feedback",
                    json={"feedback": [{"request_id": request_id, "label": label}]},
                    headers={**key, "x-modelship-replica": replica},
                )
                assert response.status_code == 200, response.text
                assert response.json()["matched"] == 1
    # Users were spread over both variants and more than one pod of each.
    assert users["stable"] > 0 and users["canary"] > 0 and len(pods) > 2
    for variant, group in servers.items():
        rows = scraped(group, "modelship_feedback_total")
        counted = scraped(group, "modelship_feedback_units_total")
        correct = scraped(group, "modelship_feedback_units_correct_total")
        print(f"{variant}: {users[variant]} users, {rows:.0f} rows, {counted:.0f} units")
        assert rows == users[variant] * PREDICTIONS
        assert counted == users[variant]
        assert correct == right_first[variant]
