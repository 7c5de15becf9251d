"""The operator's own Prometheus metrics and its HTTP endpoints (/metrics, /healthz, /readyz).

Per-resource series carry ``modeldeployment`` and ``modeldeployment_namespace`` labels
(not ``namespace``: Prometheus' pod discovery adds ``namespace`` for the operator pod itself,
and a clash would rename one of them). Series of a deleted ModelDeployment are removed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelship_operator.status import PHASES, ModelDeploymentStatus

CONDITIONS: Final = ("Ready", "Progressing", "Degraded")
RESOURCE: Final = ("modeldeployment_namespace", "modeldeployment")


class OperatorMetrics:
    """Every series the operator exports, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "modelship_operator_reconciles_total",
            "Reconciles of a ModelDeployment, by result: success, invalid (spec the operator "
            "cannot use), refused (the API refused a child), conflict (changed meanwhile), error",
            [*RESOURCE, "result"],
            registry=r,
        )
        self.errors = Counter(
            "modelship_operator_reconcile_errors_total",
            "Failed API calls during reconciles, by reason (the API's reason, e.g. Forbidden, "
            "Invalid, or Unavailable when there was no answer)",
            [*RESOURCE, "reason"],
            registry=r,
        )
        self.duration = Histogram(
            "modelship_operator_reconcile_duration_seconds",
            "Time one reconcile takes (read, plan, apply, write status)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.phase = Gauge(
            "modelship_operator_phase",
            "1 for the ModelDeployment's current status.phase, 0 for the others",
            [*RESOURCE, "phase"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "modelship_operator_canary_weight_percent",
            "Percent of traffic the router sends to the canary (status.traffic.canary)",
            list(RESOURCE),
            registry=r,
        )
        self.condition = Gauge(
            "modelship_operator_condition",
            "1 when the condition's status is True, else 0",
            [*RESOURCE, "condition"],
            registry=r,
        )
        self.analyses = Counter(
            "modelship_operator_analyses_total",
            "Metric analyses of a rollout, by overall verdict: Successful, Failed, "
            "Inconclusive, Error",
            [*RESOURCE, "verdict"],
            registry=r,
        )
        self.analysis_delay = Histogram(
            "modelship_operator_analysis_delay_seconds",
            "How long after it was due (an interval after the later of the step's start and "
            "the last analysis) an analysis ran: a busy operator or API shows here first",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.leader = Gauge(
            "modelship_operator_leader",
            "1 while this replica holds the leader Lease and acts; 0 while it stands by",
            registry=r,
        )
        self.managed = Gauge(
            "modelship_operator_model_deployments",
            "ModelDeployments this replica currently reconciles",
            registry=r,
        )

    def observe_status(self, namespace: str, name: str, status: ModelDeploymentStatus) -> None:
        """Export a ModelDeployment's phase, canary weight and conditions."""
        for phase in PHASES:
            self.phase.labels(namespace, name, phase).set(1 if status.phase == phase else 0)
        weight = status.traffic.canary if status.traffic is not None else 0
        self.canary_weight.labels(namespace, name).set(weight)
        for kind in CONDITIONS:
            condition = status.condition(kind)
            value = 1 if condition is not None and condition.status == "True" else 0
            self.condition.labels(namespace, name, kind).set(value)

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a ModelDeployment that is gone."""
        for metric in (
            self.reconciles,
            self.errors,
            self.analyses,
            self.phase,
            self.canary_weight,
        ):
            _remove_matching(metric, namespace, name)
        _remove_matching(self.condition, namespace, name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _remove_matching(metric: Counter | Gauge, namespace: str, name: str) -> None:
    # prometheus_client has no "remove by partial labels": walk the children it holds.
    for labels in list(metric._metrics):
        if labels[:2] == (namespace, name):
            metric.remove(*labels)


#: See :attr:`HealthState.stuck_after`.
STUCK_SECONDS: Final = 300.0


class Progress(Protocol):
    """What health needs of the work queue."""

    busy: int
    last_progress: float


class HealthState:
    """What /healthz and /readyz report: set by the process as it goes."""

    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.started = False
        self.leader = False
        self.stale_after = stale_after
        self._clock = clock
        self.last_beat = clock()
        #: The leader's work queue (its ``busy`` count and ``last_progress`` time).
        self.queue: Progress | None = None
        #: Seconds with reconciles waiting and none finishing after which the process counts
        #: as stuck: far above any slow reconcile (every API call times out in 15 s).
        self.stuck_after = STUCK_SECONDS

    def beat(self) -> None:
        """The event loop turned (called by a periodic task)."""
        self.last_beat = self._clock()

    def alive(self) -> tuple[bool, str]:
        """Alive unless the event loop stalled: restarting helps with a hung process, not
        with an unreachable API server, so API errors never fail liveness."""
        silent = self._clock() - self.last_beat
        if silent > self.stale_after:
            return False, f"the event loop made no progress for {silent:.0f}s"
        queue = self.queue
        if self.leader and queue is not None and queue.busy > 0:
            idle = self._clock() - queue.last_progress
            if idle > self.stuck_after:
                return False, f"{queue.busy} reconciles waiting, none finished for {idle:.0f}s"
        return True, "ok"


def http_app(metrics: OperatorMetrics, health: HealthState) -> web.Application:
    """GET /metrics, /healthz (liveness), /readyz."""

    async def get_metrics(_: web.Request) -> web.Response:
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        return web.Response(body=metrics.exposition(), headers=headers)

    async def get_healthz(_: web.Request) -> web.Response:
        ok, detail = health.alive()
        body = {"status": "ok" if ok else "failing", "detail": detail, "leader": health.leader}
        return web.Response(
            status=200 if ok else 503, text=json.dumps(body), content_type="application/json"
        )

    async def get_readyz(_: web.Request) -> web.Response:
        ok = health.started and health.alive()[0]
        body = {"ready": ok, "leader": health.leader}
        return web.Response(
            status=200 if ok else 503, text=json.dumps(body), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    return app


async def serve_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app``; the runner's cleanup() stops it."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    await asyncio.sleep(0)
    return runner
