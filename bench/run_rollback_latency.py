"""Rollback latency: from a breach being visible in Prometheus to canary weight 0 at the router.

On the local cluster (started if it is not up), with the operator installed from manifests/:
a ModelDeployment whose canary is the genuinely broken wine model of the rollout tests (its
label map lost a class, so every input of that class fails with HTTP 500), at 50 % with
``promotion: Manual`` so the analysis keeps running at the step, ``maxFailedChecks: 1``.
Each round:

1. ``retry`` (the ``modelship.io/action`` annotation) starts the rollout again; the client
   sends only rows of the classes the canary answers, so every analysis passes;
2. after a random 1 to ``interval`` seconds the client also sends rows of the lost class:
   the canary starts failing a quarter of its requests;
3. the script evaluates the operator's own success-rate query (and request count) against
   Prometheus every 100 ms: the first instant it shows the canary below 99 % with at least
   ``minSamples`` requests is *breach visible*;
4. it polls the router's ``/readyz`` (the configuration the router has applied) every 50 ms:
   the first answer with canary weight 0 is *weight 0 at the router*.

Reported per round: breach to the operator's analysis (``status.rollout.lastAnalysisTime``,
the wait for the analysis timer), breach to weight 0, and the median over the rounds, as a
ratio of the analysis interval and against the goal of one interval plus 2 s. The expected
shape is uniform over [0, interval] plus the cost of one reconcile and the router's reload.

Everything runs on this machine: the cluster's processes share both cores (the control
plane, pods and Prometheus cannot be pinned from here), the pod network is a host-local
bridge. Bounded: ``--rounds`` rounds of at most ``--round-timeout`` seconds each.

Usage: python bench/run_rollback_latency.py [--rounds 7] [--interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

NAME = "rollback-bench"
NAMESPACE = "modelship-bench-rollback"
MIN_SAMPLES = 10


def say(message: str) -> None:
    print(f"[bench:rollback] {message}", flush=True)


class Client:
    """Bounded traffic through the router on its own thread; the rows it draws from can be
    switched while it runs."""

    def __init__(self, url: str, rows: np.ndarray, rate: float, max_seconds: float) -> None:
        self.url = f"{url}/v1/models/{NAME}:predict"
        self.rows = rows
        self.rate = rate
        self.max_seconds = max_seconds
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _run(self) -> None:
        rng = random.Random(1)
        deadline = time.monotonic() + self.max_seconds
        pending: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=10) as http:

            async def one(row: list[float]) -> None:
                try:
                    response = await http.post(self.url, json={"instances": [row]})
                except httpx.HTTPError:
                    self.codes[0] = self.codes.get(0, 0) + 1
                    return
                self.codes[response.status_code] = self.codes.get(response.status_code, 0) + 1

            while not self._stop.is_set() and time.monotonic() < deadline:
                rows = self.rows
                task = asyncio.create_task(one(rows[rng.randrange(len(rows))].tolist()))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(1.0 / self.rate)
            if pending:
                await asyncio.wait(pending, timeout=10)


def breach_queries(interval: float) -> tuple[str, str]:
    """The operator's own success-rate and request-count queries for the canary."""
    from modelship_operator.analysis.queries import Scope, requests_query, success_rate_query

    scope = Scope(NAMESPACE, NAME, "canary", timedelta(seconds=interval), "2.0.0")
    return success_rate_query(scope), requests_query(scope)


def prom_value(http: httpx.Client, prometheus: str, query: str) -> float | None:
    answer = http.post(f"{prometheus}/api/v1/query", data={"query": query}).json()
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def router_weight(http: httpx.Client, url: str) -> float | None:
    try:
        detail = http.get(f"{url}/readyz").json()
    except (httpx.HTTPError, ValueError):
        return None
    variant = (detail.get("variants") or {}).get("canary")
    return None if variant is None else float(variant["weight"])


def kubectl(env: Any, *args: str, input: str | None = None) -> str:
    return str(env.kubectl(*args, input=input).stdout)


def status(env: Any) -> dict[str, Any]:
    body = env.md(NAMESPACE, NAME) or {}
    return dict(body.get("status") or {})


def wait(what: str, check: Any, limit: float, period: float = 0.1) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(period)
    raise SystemExit(f"timed out waiting for {what}")


def one_round(
    env: Any, client: Client, rows: dict[str, np.ndarray], router: str, prometheus: str,
    interval: float, number: int,
) -> dict[str, float]:  # fmt: skip
    queries = breach_queries(interval)
    client.rows = rows["answered"]
    with httpx.Client(timeout=2) as http:
        # Start from a clean window: no failure of the previous round left in it.
        wait("the canary's window to be clean",
             lambda: not (0 <= (prom_value(http, prometheus, queries[0]) or math.nan) < 99),
             3 * interval + 10, 0.2)  # fmt: skip
        kubectl(env, "-n", NAMESPACE, "annotate", "--overwrite", "modeldeployment", NAME,
                f"modelship.io/action=retry/bench-{number}-{time.time_ns()}")  # fmt: skip
        wait("the canary to enter at 50 %", lambda: router_weight(http, router) == 50.0, 90)
        # The breach starts at a random moment of the analysis period.
        time.sleep(random.uniform(0.5, interval))
        client.rows = rows["all"]
        switched = time.monotonic()
        breach = wait(
            "the breach to be visible in Prometheus",
            lambda: (
                (rate := prom_value(http, prometheus, queries[0])) is not None
                and rate < 99
                and (prom_value(http, prometheus, queries[1]) or 0) >= MIN_SAMPLES
                and time.monotonic()
            ),
            30,
        )
        breach_wall = datetime.now(UTC)
        zero = wait(
            "canary weight 0 at the router",
            lambda: router_weight(http, router) == 0.0 and time.monotonic(),
            60,
            0.05,
        )
    done = status(env)
    if done.get("phase") != "RolledBack":
        raise SystemExit(f"round {number}: expected RolledBack, got {done.get('phase')}")
    analysed = datetime.fromisoformat(done["rollout"]["lastAnalysisTime"].replace("Z", "+00:00"))
    return {
        "visible_after_switch": breach - switched,
        "to_analysis": (analysed - breach_wall).total_seconds(),
        "to_weight_0": zero - breach,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--interval", type=float, default=5.0, help="analysis interval, s")
    parser.add_argument("--rate", type=float, default=30.0, help="client requests per second")
    parser.add_argument("--round-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    from kubernetes import config
    from modelship_cluster.cluster import Cluster
    from modelship_cluster.node import prometheus_url
    from operator_harness import Env, Operator, label_restricted, router_url
    from rollout_harness import model_deployment, train_models

    cluster = Cluster()
    if not cluster.is_up():
        say("starting the local cluster")
        cluster.up()
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    from modelship_cluster import binaries

    kubectl_path = binaries.toolset().kubectl

    def run_kubectl(
        *a: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(kubectl_path), f"--kubeconfig={cluster.kubeconfig}", *a]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(a)}: {result.stderr}")
        return result

    env = Env(api, run_kubectl, cluster.root / "node")
    say("installing the operator from manifests/")
    operator = Operator(env)
    operator.install()
    # A namespace left terminating by an earlier run must be gone before it is made again.
    wait("the previous run's namespace to be gone", lambda: run_kubectl(
        "get", "namespace", NAMESPACE, check=False).returncode != 0, 120, 1.0)  # fmt: skip
    run_kubectl("create", "namespace", NAMESPACE)
    label_restricted(env, NAMESPACE)
    results: list[dict[str, float]] = []
    stored: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stored = train_models(cluster, Path(tmp), only={"wine-1.0.0", "wine-2.0.0"})
        v1, broken = stored["wine-1.0.0"], stored["wine-2.0.0"]
        strategy = {
            "type": "Canary", "steps": [50], "interval": f"{args.interval:g}s",
            "minSamples": MIN_SAMPLES, "maxFailedChecks": 1, "promotion": "Manual",
            "scaleDownDelay": "1h", "progressDeadline": "1h",
            "metrics": [{"name": "success-rate", "min": 99}],
        }  # fmt: skip
        body = model_deployment(NAME, v1, broken, strategy)
        run_kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(body))
        say("waiting for the stable, canary and router pods")
        try:
            wait("Ready", lambda: any(c["type"] == "Ready" and c["status"] == "True"
                 for c in status(env).get("conditions", [])), 180, 0.5)  # fmt: skip
        except SystemExit:
            print(env.describe(NAMESPACE, NAME), flush=True)
            raise
        router = router_url(env, NAMESPACE, NAME)
        # Rows the broken canary answers (classes it kept) and all rows.
        rows = {"answered": v1.features[v1.labels < 2], "all": v1.features}
        prometheus = prometheus_url()
        # The first rollout begins at once; end it so every round starts from retry.
        with Client(router, rows["answered"], args.rate, 60) as client:
            client.rows = rows["all"]
            wait("the first rollout to roll back", lambda: status(env).get("phase")
                 == "RolledBack", 120, 0.5)  # fmt: skip
        budget = args.rounds * args.round_timeout
        with Client(router, rows["answered"], args.rate, budget) as client:
            for number in range(1, args.rounds + 1):
                result = one_round(env, client, rows, router, prometheus, args.interval, number)
                results.append(result)
                say(f"round {number}: breach -> analysis {result['to_analysis']:.2f}s, "
                    f"-> weight 0 at the router {result['to_weight_0']:.2f}s")  # fmt: skip
            codes = dict(client.codes)
    finally:
        run_kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        operator.uninstall()
        for model in stored.values():
            model.path.unlink(missing_ok=True)
        api.close()

    goal = args.interval + 2.0
    print()
    print(f"Rollback latency, {args.rounds} rollbacks, analysis interval {args.interval:g} s, "
          f"client {args.rate:g} req/s (answers: {json.dumps(codes)})")  # fmt: skip
    print("Not pinned: the local cluster's processes share both cores; host-local pod network.")
    print()
    header = (
        "round",
        "breach -> analysis (s)",
        "analysis -> weight 0 at the router (s)",
        "breach -> weight 0 at the router (s)",
    )
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|")
    rows = [
        (r["to_analysis"], r["to_weight_0"] - r["to_analysis"], r["to_weight_0"]) for r in results
    ]
    for i, row in enumerate(rows, 1):
        print(f"| {i} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    columns = list(zip(*rows, strict=True))
    print("| median | " + " | ".join(f"{statistics.median(c):.2f}" for c in columns) + " |")
    print("| max | " + " | ".join(f"{max(c):.2f}" for c in columns) + " |")
    to_zero = [r["to_weight_0"] for r in results]
    median = statistics.median(to_zero)
    print()
    print(f"median / interval = {median / args.interval:.2f}; goal: under interval + 2 s "
          f"= {goal:g} s -> {'met' if max(to_zero) < goal else 'NOT met'} for every round "
          f"(median {median:.2f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
