"""The rollouts phase of ``bench/run_operator_scale.py``: K canary rollouts at once among the
N ModelDeployments, each analysed against a real Prometheus, and how late each analysis ran.

What stands in for what the bare API server lacks, and why:

* **Serving pods' metrics**: no pod runs (no node), so each rollout's stable and canary
  series (the serving contract's names and labels, 200s at 3 ms) are served by a
  prometheus-client registry on loopback (``tests/operator/analysis_prom.Target``) and
  scraped every second by a real Prometheus (``PrometheusProcess``). The operator queries
  that Prometheus exactly as on a cluster; every check has data and passes.
* **The Deployment controller and kubelet**: the benchmark marks the K rollouts'
  Deployments as rolled out and ready (``deployments/status``: every replica updated and
  ready, ``observedGeneration`` at the generation) once a second, so the canary enters
  its first step as when its pod got ready.

Measured: the K rollouts get a strategy of many steps (``STEPS``), an ``INTERVAL`` of 10 s
and ``promotion: Manual`` (they stay in analysis for the whole window) and a new model at
once; then, for ``seconds``, their status is listed every 0.5 s. Every new
``status.rollout.lastAnalysisTime`` is one analysis; its due time is an interval after the
later of the analysis before it and the start of its step (as the previous status said:
``rollout.next_analysis_at``). Lateness = run time - due time, both the operator's clock.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from analysis_prom import PrometheusProcess, Target

INTERVAL = 10
STEPS = list(range(5, 100, 5))  # 19 steps of INTERVAL: the rollouts outlast the window
CANDIDATE = "2.0.0"
LABEL = "bench.modelship.io/rollout"
#: Requests per second per variant in the series Prometheus scrapes.
RATE = 20


@dataclass
class RolloutsResult:
    rollouts: int
    seconds: float
    entered: int = 0
    analyses: int = 0
    within_2s: int = 0
    lateness_p50: float | None = None
    lateness_p99: float | None = None
    lateness_max: float | None = None
    reconcile_p50: float | None = None  # the operator's histogram over the window
    reconcile_p99: float | None = None
    delay_p99_bucket: float | None = None  # modelship_operator_analysis_delay_seconds
    errors: list[str] = field(default_factory=list)


def targets(names: list[str], namespace: str, stable_version: str) -> list[Target]:
    return [
        Target(
            name,
            labels={"namespace": namespace, "pod": f"{name}-pods"},
            metric_labels={
                "deployment": name,
                "model": name,
                "version": stable_version,
                "variant": "stable",
            },
        )
        for name in names
    ]


class Traffic:
    """RATE requests a second per variant into every target's counters, on a thread."""

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for target in self.targets:
                target.serve(RATE, seconds=0.003)
                target.serve(RATE, seconds=0.003, variant="canary", version=CANDIDATE)

    def __enter__(self) -> Traffic:
        for target in self.targets:  # every series at zero first: increase() has a start
            target.serve(0)
            target.serve(0, variant="canary", version=CANDIDATE)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def start_prometheus(workdir: Path, scraped: list[Target]) -> PrometheusProcess:
    for target in scraped:
        target.start()
    prom = PrometheusProcess(workdir, scraped)
    prom.start()
    prom.wait_value('count(up{job="pods"} == 1)', lambda v: v == len(scraped), timeout=120)
    return prom


def stop_prometheus(prom: PrometheusProcess) -> None:
    prom.stop()
    for target in prom.targets:
        target.stop()


def rollout_patch(name: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {LABEL: "true"}},
        "spec": {
            "model": {
                "version": CANDIDATE,
                "uri": f"file:///models/{name}-{CANDIDATE}.skops",
                "sha256": "b" * 64,
            },
            "strategy": {
                "type": "Canary",
                "steps": STEPS,
                "interval": f"{INTERVAL}s",
                "minSamples": 10,
                "progressDeadline": "10m",
                "promotion": "Manual",
            },
        },
    }


async def mark_ready(api: httpx.AsyncClient, deployments: str, names: list[str]) -> None:
    """What the Deployment controller and kubelet would report for the rollouts' pods."""
    selector = f"modelship.io/deployment in ({','.join(names)})"
    listed = await api.get(deployments, params={"labelSelector": selector})
    headers = {"content-type": "application/merge-patch+json"}
    for dep in listed.raise_for_status().json().get("items") or []:
        replicas = int(dep["spec"].get("replicas", 1))
        status = dep.get("status") or {}
        want = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        if all(status.get(k, 0) == v for k, v in want.items()):
            continue
        name = dep["metadata"]["name"]
        await api.patch(f"{deployments}/{name}/status", json={"status": want}, headers=headers)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None  # 3.11 reads the "Z"


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


@dataclass
class _Seen:
    last: datetime | None = None
    since: datetime | None = None  # the step's start, or the rollout's before it entered
    entered: bool = False


async def run(
    api: httpx.AsyncClient,
    mds: str,
    deployments: str,
    names: list[str],
    seconds: float,
    log: Any,
) -> RolloutsResult:
    result = RolloutsResult(rollouts=len(names), seconds=seconds)
    headers = {"content-type": "application/merge-patch+json"}
    # First stable serves (a rollout needs a model rolled out to compare with).
    loop = asyncio.get_running_loop()
    limit = loop.time() + 120
    while True:
        await mark_ready(api, deployments, names)
        got = await asyncio.gather(*(api.get(f"{mds}/{n}") for n in names))
        serving = [
            ((a.json().get("status") or {}).get("rolledOut") or {}).get("current") for a in got
        ]
        if all(serving):
            break
        if loop.time() > limit:
            result.errors.append(f"stable never served: {serving.count(None)} of {len(names)}")
            return result
        await asyncio.sleep(1)
    answers = await asyncio.gather(
        *(api.patch(f"{mds}/{n}", json=rollout_patch(n), headers=headers) for n in names)
    )
    for answer in answers:
        answer.raise_for_status()
    log(f"  {len(names)} rollouts started")
    seen = {n: _Seen() for n in names}
    late: list[float] = []
    interval = timedelta(seconds=INTERVAL)
    end = loop.time() + seconds
    next_ready = 0.0
    while loop.time() < end:
        if loop.time() >= next_ready:
            await mark_ready(api, deployments, names)
            next_ready = loop.time() + 1
        listed = await api.get(mds, params={"labelSelector": f"{LABEL}=true"})
        for md in listed.raise_for_status().json().get("items") or []:
            state = seen[md["metadata"]["name"]]
            progress = (md.get("status") or {}).get("rollout") or {}
            last = _time(progress.get("lastAnalysisTime"))
            if last is not None and last != state.last and state.entered and state.since:
                due = max(state.last or state.since, state.since) + interval
                late.append((last - due).total_seconds())
            step_start = _time(progress.get("stepStartedAt"))
            state.entered = state.entered or step_start is not None
            state.last, state.since = last, step_start or _time(progress.get("startedAt"))
        await asyncio.sleep(0.5)
    result.entered = sum(1 for s in seen.values() if s.entered)
    for name in [n for n, s in seen.items() if not s.entered][:3]:
        status = (await api.get(f"{mds}/{name}")).json().get("status") or {}
        said = {c.get("type"): c.get("message") for c in status.get("conditions") or []}
        result.errors.append(f"{name} never entered: {status.get('phase')}: {said}")
    result.analyses = len(late)
    result.within_2s = sum(1 for x in late if x <= 2.0)
    result.lateness_p50 = _quantile(late, 0.5)
    result.lateness_p99 = _quantile(late, 0.99)
    result.lateness_max = round(max(late), 3) if late else None
    return result
