"""The kopf wiring: watch events in, one reconcile at a time per ModelDeployment, API out.

kopf watches ModelDeployments (and the Deployments the operator made) and calls the two
``on.event`` handlers below for every change, including the initial listing when the
operator starts (that is the "resume"). The handlers only *poke* a per-resource worker;
the worker runs :meth:`Reconciler.reconcile`, which is the whole wiring of the pure core:

1. read the resource as stored now (never a cached body: its status is the rollout's memory);
2. parse it (``ModelDeployment.from_api``); a spec the operator cannot use gets
   ``plan_invalid`` — a Degraded condition, nothing touched;
3. list the children and pods by label, ``observe`` them; run the metric analysis when one
   is due (``analysis.runner.analyse_if_due`` against the Prometheus of ``spec.prometheus.url``
   or the operator's setting, over one shared HTTP client); ``plan``;
4. record the new status first (the rollout's decision: phase, step, traffic, counters,
   last analysis, history, handled action; what runs; the conditions but Degraded, which
   acting decides) *only if the resource is unchanged since step 1*
   (resourceVersion precondition: nothing decided from an old spec or an old status is
   written or acted on). A crash after this write is resumed from it by the next run, so
   a decision (a step, a promotion, a rollback) is acted on once and never re-decided;
5. server-side apply ``plan.apply`` (field manager of its own, ``force``), then delete
   ``plan.delete``; API refusals (quota, admission, invalid objects) are re-planned as
   failures, which gives the same decisions plus Degraded;
6. patch Degraded (``status_patch``; nothing when acting met no refusal and Degraded is
   unchanged), with the same precondition, then post the plan's Events;
7. run again after ``plan.requeue_after`` (the next analysis, a scale-down) or
   ``resync_seconds``, whichever is sooner, or at once when the resource or one of its
   Deployments changes.

Why a worker per resource rather than kopf's create/update/resume handlers and a timer:
the resource stays untouched by kopf (no finalizer, so deleting it never waits for the
operator; no progress annotations, so GitOps tools see no drift); reconciles of one
resource never overlap (kopf runs timers beside change handlers); and the next run can be
as soon as the plan asks. Transient API errors (no answer, 409, 429, 5xx) and bugs are
retried with exponential back-off (1 s doubling to 60 s); API refusals back off the same
way while showing in status. Nothing a user does can crash the operator or make it spin.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import kopf
from modelship_kube import credentials
from modelship_kube.errors import ApiError
from pydantic import ValidationError

from modelship_operator import kinds
from modelship_operator.analysis.access import access_for, http_client
from modelship_operator.analysis.prometheus import PrometheusClient
from modelship_operator.analysis.queries import label_scheme
from modelship_operator.analysis.runner import analyse_if_due
from modelship_operator.analysis.stepper import Analysis
from modelship_operator.conditions import Event, Failure
from modelship_operator.kube import Kube
from modelship_operator.metrics import OperatorMetrics
from modelship_operator.observed import observe
from modelship_operator.reconcile import (
    Plan,
    before_acting,
    describe_invalid,
    plan,
    plan_invalid,
    status_patch,
)
from modelship_operator.render import router_name
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import GROUP, PLURAL, VERSION, ModelDeployment
from modelship_operator.status import ModelDeploymentStatus

log = logging.getLogger(__name__)

COMPONENT: Final = "modelship-operator"
#: Pause after a poke before reconciling, so a burst of watch events makes one reconcile.
DEBOUNCE_SECONDS: Final = 0.2
MAX_BACKOFF_SECONDS: Final = 60.0
#: Consecutive status conflicts after which the worker backs off like after an error.
MAX_CONFLICTS: Final = 3
#: Seconds one Prometheus query may take; a slower one is an analysis Error (counted toward
#: maxConsecutiveErrors), never a stuck reconcile.
PROMETHEUS_TIMEOUT_SECONDS: Final = 5.0
Key = tuple[str, str]


def backoff_delay(failures: int, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """Seconds to wait after ``failures`` consecutive failures: 1, 2, 4, ... up to ``cap``."""
    if failures <= 0:
        return 0.0
    return float(min(cap, 2 ** min(failures - 1, 16)))


def next_delay(settings: OperatorSettings, result: Plan) -> float:
    """When to reconcile again after a successful run."""
    delay = settings.resync_seconds
    if result.requeue_after is not None:
        delay = min(delay, max(result.requeue_after, 0.5))
    return delay


def error_reason(exc: ApiError) -> str:
    """A short label for an API failure: the API's reason, else the HTTP status."""
    if exc.status == 0:
        return "Unavailable"
    return exc.reason or f"HTTP{exc.status}"


@dataclass
class Outcome:
    """What one reconcile did, for the worker and the metrics."""

    result: str  # success | invalid | refused | conflict | deleting | gone
    delay: float = 0.0


@dataclass
class _Worker:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: bool = False
    failures: int = 0
    conflicts: int = 0
    #: resourceVersions of this operator's recent status writes (their watch events are no
    #: news).
    own_versions: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class Reconciler:
    """Runs reconciles, one worker per ModelDeployment."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        metrics: OperatorMetrics,
        identity: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self.identity = identity
        self._clock = clock
        self._workers: dict[Key, _Worker] = {}
        # One connection pool for every resource's Prometheus queries.
        self._http = http or http_client(settings, PROMETHEUS_TIMEOUT_SECONDS)
        self._owns_http = http is None
        self._closed = False

    # --- scheduling ------------------------------------------------------------------------

    def poke(
        self, namespace: str, name: str, *, resource_version: str | None = None, urgent: bool
    ) -> None:
        """Something about ``namespace/name`` changed: reconcile it soon.

        ``urgent`` (the resource itself changed) also cuts an error back-off short; a
        change of a child does not. A watch event of the operator's own status write is
        ignored.
        """
        if self._closed:
            return
        key = (namespace, name)
        worker = self._workers.get(key)
        if worker is None:
            worker = _Worker()
            self._workers[key] = worker
            worker.task = asyncio.create_task(self._run(key, worker), name=f"reconcile {key}")
            self.metrics.managed.set(len(self._workers))
            return
        if resource_version is not None and resource_version in worker.own_versions:
            return
        worker.urgent = worker.urgent or urgent
        worker.wake.set()

    def forget(self, namespace: str, name: str) -> None:
        """The resource is gone: stop its worker and drop its metrics."""
        worker = self._workers.pop((namespace, name), None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()
        self.metrics.forget(namespace, name)
        self.metrics.managed.set(len(self._workers))

    async def close(self) -> None:
        """Stop every reconcile now and accept no more (leadership is ending)."""
        self._closed = True
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        self._workers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_http:
            await self._http.aclose()

    async def _run(self, key: Key, worker: _Worker) -> None:
        await asyncio.sleep(DEBOUNCE_SECONDS)
        while True:
            worker.wake.clear()
            worker.urgent = False
            delay = await self._attempt(key, worker)
            if delay is None:  # gone
                if self._workers.get(key) is worker:
                    self.forget(*key)
                return
            await self._wait(worker, delay)

    async def _attempt(self, key: Key, worker: _Worker) -> float | None:
        """One reconcile, with the bookkeeping; the delay before the next (None: gone)."""
        namespace, name = key
        try:
            with self.metrics.duration.time():
                outcome = await self.reconcile(namespace, name, worker)
        except asyncio.CancelledError:
            raise
        except ApiError as exc:
            worker.failures += 1
            self.metrics.reconciles.labels(namespace, name, "error").inc()
            self.metrics.errors.labels(namespace, name, error_reason(exc)).inc()
            delay = backoff_delay(worker.failures)
            log.warning("reconcile %s/%s: %s (retrying in %.0fs)", namespace, name, exc, delay)
            return delay * random.uniform(1.0, 1.1)
        except Exception:  # a bug must not stop other resources, nor spin on this one
            worker.failures += 1
            self.metrics.reconciles.labels(namespace, name, "error").inc()
            self.metrics.errors.labels(namespace, name, "InternalError").inc()
            delay = backoff_delay(worker.failures)
            log.exception("reconcile %s/%s failed (retrying in %.0fs)", namespace, name, delay)
            return delay
        if outcome.result == "gone":
            return None
        self.metrics.reconciles.labels(namespace, name, outcome.result).inc()
        if outcome.result == "conflict":
            worker.conflicts += 1
            if worker.conflicts <= MAX_CONFLICTS:
                return 0.0  # the resource changed meanwhile: plan again from the new one
            return backoff_delay(worker.conflicts - MAX_CONFLICTS)
        worker.conflicts = 0
        if outcome.result == "refused":  # shown in status; retried with back-off
            worker.failures += 1
            return backoff_delay(worker.failures)
        worker.failures = 0
        return outcome.delay

    async def _wait(self, worker: _Worker, delay: float) -> None:
        """Sleep ``delay`` unless poked; while failing, only an urgent poke cuts it short."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(worker.wake.wait(), remaining)
            except TimeoutError:
                break
            if worker.failures == 0 or worker.urgent:
                await asyncio.sleep(DEBOUNCE_SECONDS)
                break
            worker.wake.clear()

    # --- one reconcile ---------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str, worker: _Worker | None = None) -> Outcome:
        """Read, plan, act, write status, announce. Raises ApiError on transient failures."""
        worker = worker or _Worker()
        body = await self.kube.get_model_deployment(namespace, name)
        if body is None:
            return Outcome("gone")
        if body["metadata"].get("deletionTimestamp"):
            # Being deleted: the garbage collector removes the children; applying now
            # would only recreate them.
            return Outcome("deleting", self.settings.resync_seconds)
        now = self._clock()
        result_kind = "success"
        try:
            md = ModelDeployment.from_api(body)
        except ValidationError as exc:
            result = plan_invalid(body, describe_invalid(exc), now)
            result_kind = "invalid"
        else:
            selector = kinds.selector(md.name)
            children, pods = await asyncio.gather(
                self.kube.list_children(namespace, selector),
                self.kube.list_pods(namespace, selector),
            )
            observed = observe(children, pods, routing_configmap=router_name(md.name))
            analysis = await self._analyse(md, now)
            result = plan(md, observed, self.settings, now, analysis=analysis)
            # The decision is recorded before anything acts on it.
            decided = before_acting(result.status, md.status)
            if not await self._write_status(body, decided, worker):
                return Outcome("conflict")
            failures = await self._act(result, namespace, name)
            if failures:
                result = plan(md, observed, self.settings, now, failures, analysis=analysis)
                result_kind = "refused"
        if not await self._write_status(body, result.status, worker):
            return Outcome("conflict")
        for event in result.events:
            await self._post_event(body, event)
        self.metrics.observe_status(namespace, name, result.status)
        return Outcome(result_kind, next_delay(self.settings, result))

    async def _analyse(self, md: ModelDeployment, now: datetime) -> Analysis | None:
        """This reconcile's metric analysis, or None when none is due. Prometheus failures
        are Error verdicts inside the analysis, never exceptions."""
        source = PrometheusClient(
            access_for(md, self.settings), timeout=PROMETHEUS_TIMEOUT_SECONDS, client=self._http
        )
        labels = label_scheme(self.settings.prometheus_namespace_label)
        analysis = await analyse_if_due(md, source, now, labels)
        if analysis is not None:
            self.metrics.analyses.labels(md.namespace, md.name, analysis.verdict).inc()
            log.info(
                "analysis of %s/%s (%s, step %d): %s",
                md.namespace,
                md.name,
                analysis.stage,
                analysis.step,
                "; ".join(c.summary for c in analysis.checks) or analysis.verdict,
            )
        return analysis

    async def _act(self, result: Plan, namespace: str, name: str) -> list[Failure]:
        """Apply then delete; refusals become Failures, transient errors propagate."""
        failures: list[Failure] = []
        for obj in result.apply:
            try:
                await self.kube.apply(obj, self.settings.field_manager, force=True)
            except ApiError as exc:
                if exc.transient:
                    raise
                self.metrics.errors.labels(namespace, name, error_reason(exc)).inc()
                what = f"{obj['kind']} {obj['metadata']['name']}"
                failures.append(Failure("ApplyFailed", f"{what} was refused: {exc.message}"))
                log.warning("reconcile %s/%s: %s refused: %s", namespace, name, what, exc)
        for ref in result.delete:
            try:
                await self.kube.delete(ref, namespace)
            except ApiError as exc:
                if exc.transient:
                    raise
                self.metrics.errors.labels(namespace, name, error_reason(exc)).inc()
                what = f"{ref.kind} {ref.name}"
                failures.append(Failure("DeleteFailed", f"deleting {what} failed: {exc.message}"))
            else:
                log.info("deleted %s %s/%s (no longer in the spec)", ref.kind, namespace, ref.name)
        return failures

    async def _write_status(
        self, body: dict[str, Any], status: ModelDeploymentStatus, worker: _Worker
    ) -> bool:
        """Patch status to ``status`` if it changed; False when the resource changed since
        it was read. ``body`` is updated to what was written, so a second write patches on
        top of the first."""
        meta = body["metadata"]
        patch = status_patch(body.get("status"), status.to_api())
        if not patch:
            return True
        try:
            answer = await self.kube.patch_status(
                meta["namespace"], meta["name"], patch, meta["resourceVersion"]
            )
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        version = answer.get("metadata", {}).get("resourceVersion")
        if version:
            meta["resourceVersion"] = version
            worker.own_versions = [*worker.own_versions[-3:], version]
        written = answer.get("status")
        body["status"] = written if isinstance(written, dict) else _merged(body, patch)
        return True

    async def _post_event(self, body: Mapping[str, Any], event: Event) -> None:
        """Events are a courtesy: a failure to post one is logged, never retried."""
        try:
            await self.kube.post_event(
                body, event.type, event.reason, event.message, COMPONENT, self.identity
            )
        except ApiError as exc:
            log.warning("could not post event %s: %s", event.reason, exc)


def _merged(body: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Status after a merge patch of its top-level fields (when the API returned none)."""
    status = dict(body.get("status") or {})
    for key, value in patch.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    return status


# --- kopf -------------------------------------------------------------------------------------


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf without CRD scanning, peering or log-to-Event posting; child Deployments are
    watched with a server-side label selector."""
    config = kopf.OperatorSettings()
    config.scanning.disabled = True  # no CRD listing, so no permission for it
    config.peering.standalone = True  # the Lease decides who acts
    config.posting.enabled = False  # the operator posts its own Events
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.networking.request_timeout = 60
    config.watching.label_selectors["apps", "deployments"] = (
        f"{kinds.LABEL_MANAGED_BY}={kinds.MANAGED_BY},{kinds.LABEL_DEPLOYMENT}"
    )
    return config


def connection_info(
    found: credentials.Credentials, authorization: str | None
) -> kopf.ConnectionInfo:
    """kopf's connection settings from the same credentials the operator's client uses."""
    scheme, _sep, token = (authorization or "").strip().partition(" ")
    tls = found.tls
    return kopf.ConnectionInfo(
        server=found.server,
        ca_path=str(tls.ca_file) if tls.ca_file else None,
        ca_data=tls.ca_data if not tls.ca_file else None,
        insecure=tls.insecure,
        scheme=scheme if token else None,
        token=token or None,
        certificate_path=str(tls.cert_file) if tls.cert_file else None,
        certificate_data=tls.cert_data if not tls.cert_file else None,
        private_key_path=str(tls.key_file) if tls.key_file else None,
        private_key_data=tls.key_data if not tls.key_file else None,
        default_namespace=found.namespace,
    )


def build_registry(reconciler: Reconciler, kubeconfig: str | None = None) -> kopf.OperatorRegistry:
    """The handlers, on a registry of their own (nothing global)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # Loaded afresh at every login: kopf logs in again on a 401, so a rotated
        # service-account token is picked up.
        found = credentials.load(kubeconfig)
        return connection_info(found, await found.authorization())

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def model_deployment_changed(
        *, event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        if namespace is None:  # a namespaced resource always has one
            return
        if event.get("type") == "DELETED":
            reconciler.forget(namespace, name)
            return
        version = body.get("metadata", {}).get("resourceVersion")
        reconciler.poke(namespace, name, resource_version=version, urgent=True)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={kinds.LABEL_MANAGED_BY: kinds.MANAGED_BY, kinds.LABEL_DEPLOYMENT: kopf.PRESENT},
        registry=registry,
    )
    async def child_changed(
        *, event: kopf.RawEvent, namespace: str | None, labels: Mapping[str, str], **_: Any
    ) -> None:
        if event.get("type") is None or namespace is None:
            return  # the initial listing: the owners are being listed (and poked) too
        reconciler.poke(namespace, labels[kinds.LABEL_DEPLOYMENT], urgent=False)

    return registry
