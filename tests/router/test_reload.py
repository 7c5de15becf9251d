"""Live configuration: weight changes and dying upstreams under load lose no request."""

from __future__ import annotations

import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from router_harness import routing, write_config

WORKERS = 4
MAX_REQUESTS = 50_000  # a bound in case the load outlives the test's changes


class Load:
    """Bounded closed-loop load: WORKERS clients, each sending one request at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.variants: Counter[str] = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, args=(i,)) for i in range(WORKERS)]

    def _work(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self.stop.is_set() and sum(self.statuses.values()) < MAX_REQUESTS:
                i += 1
                try:
                    resp = client.post(
                        "/v1/models/churn:predict",
                        json={"instances": [[worker, i]]},
                        headers={"x-user-id": f"w{worker}-{i % 97}"},
                    )
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.failures.append(repr(exc))
                    continue
                with self.lock:
                    self.statuses[resp.status_code] += 1
                    self.variants[resp.headers.get("x-modelship-variant", "?")] += 1
                    if resp.status_code >= 300:
                        self.failures.append(resp.text)

    def total(self) -> int:
        with self.lock:
            return sum(self.statuses.values())

    def wait_for_more(self, count: int) -> None:
        """Let at least ``count`` more requests complete (bounded by a timeout)."""
        target = self.total() + count
        for _ in range(1000):
            if self.total() >= target:
                return
            self.stop.wait(0.01)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_twenty_weight_changes_and_killed_upstreams_lose_nothing(
    tmp_path: Path, spawn_upstream: Any, spawn_router: Any
) -> None:
    stables = [spawn_upstream("stable-1"), spawn_upstream("stable-2")]
    canaries = [spawn_upstream("canary-1"), spawn_upstream("canary-2")]
    stable_addresses = [s.address for s in stables]
    canary_addresses = [c.address for c in canaries]
    config = tmp_path / "routing.yaml"
    sticky = {"header": "x-user-id"}
    write_config(config, routing(stable_addresses, canary_addresses, 0, sticky=sticky))
    router = spawn_router(config)
    weights = [5, 10, 25, 50, 75, 100, 60, 30, 0, 90, 45, 15, 100, 35, 70, 20, 80, 40, 95, 50]
    assert len(weights) == 20
    kills = {6: canaries[0], 12: stables[0], 16: canaries[1]}
    with Load(router.url) as load:
        load.wait_for_more(50)
        for generation, weight in enumerate(weights, start=2):
            write_config(
                config,
                routing(
                    stable_addresses,
                    canary_addresses,
                    weight,
                    generation=generation,
                    sticky=sticky,
                ),
            )
            router.wait_generation(generation)
            if generation in kills:
                kills[generation].kill()  # SIGKILL with requests in flight
            load.wait_for_more(40)
    assert not load.failures, load.failures[:5]
    assert set(load.statuses) == {200}
    assert load.total() >= 20 * 40
    # Both variants served while alive; after the last canary died, stable took over.
    assert load.variants["canary"] > 0 and load.variants["stable"] > 0
    metrics = router.metrics()
    assert re.search(r"modelship_router_retries_total\{[^}]*\} [1-9]", metrics)
    assert re.search(
        r'modelship_router_fallbacks_total\{deployment="churn",from_variant="canary"\} [1-9]',
        metrics,
    )
    assert 'modelship_router_config_generation{deployment="churn"} 21.0' in metrics
    assert 'code="5' not in metrics
