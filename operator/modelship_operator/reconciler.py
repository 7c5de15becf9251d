"""One reconcile of a ModelDeployment and its I/O: read, analyse, plan, act, record, announce.

:meth:`Reconciler.reconcile` is the whole wiring of the pure core
(:mod:`modelship_operator.reconcile`) to the API; the work queue
(:mod:`modelship_operator.workqueue`) calls it, one at a time per resource:

1. read the resource as stored now (never a cached body: its status is the rollout's memory);
2. parse it (``ModelDeployment.from_api``); a spec the operator cannot use gets
   ``plan_invalid`` — a Degraded condition, nothing touched;
3. read the children and pods from the watch cache (:mod:`modelship_operator.cache`; listed
   by label without one), ``observe`` them; run the metric analysis when one
   is due (``analysis.runner.analyse_if_due`` against the Prometheus of ``spec.prometheus.url``
   or the operator's setting, over one shared HTTP client); ``plan``;
4. record the new status first (the rollout's decision: phase, step, traffic, counters,
   last analysis, history, handled action; what runs; the conditions but Degraded, which
   acting decides; ``observedGeneration`` stays as it was until step 6) *only if the
   resource is unchanged since step 1*
   (resourceVersion precondition: nothing decided from an old spec or an old status is
   written or acted on). A crash after this write is resumed from it by the next run, so
   a decision (a step, a promotion, a rollback) is acted on once and never re-decided;
5. server-side apply ``plan.apply`` (field manager of its own, ``force``), except a child
   rendered exactly as this process last applied it and unchanged since
   (:mod:`modelship_operator.applied`), then delete ``plan.delete``; API refusals (quota,
   admission, invalid objects) are failures;
6. ``settle`` Degraded from what acting met (nothing else is decided again) and patch it
   with ``observedGeneration`` (``status_patch``; nothing when nothing changed), with the
   same precondition: a status at the resource's generation says the children were
   applied, or Degraded says what was refused;
7. post the Events of the transitions recorded in status and not evented yet (this
   reconcile's, and any a crash left behind), each under its own deterministic name, then
   record ``lastEventedTransition`` (:mod:`modelship_operator.events`);
8. tell the queue when to run again: after ``plan.requeue_after`` (the next analysis, a
   scale-down) or ``resync_seconds``, whichever is sooner.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import httpx
from modelship_kube.errors import ApiError
from pydantic import ValidationError

from modelship_operator import kinds, scaletozero
from modelship_operator.analysis.access import access_for, http_client
from modelship_operator.analysis.prometheus import PrometheusClient
from modelship_operator.analysis.queries import label_scheme
from modelship_operator.analysis.results import QueryError, Value
from modelship_operator.analysis.runner import analyse_if_due
from modelship_operator.applied import (
    Applied,
    fingerprint,
    object_key,
    rendered_digest,
    unchanged,
)
from modelship_operator.cache import ChildCache, ObjectKey
from modelship_operator.conditions import Failure
from modelship_operator.events import event_name, evented, unevented
from modelship_operator.handover import HANDOVER_SUFFIX, handover
from modelship_operator.kube import Kube
from modelship_operator.metrics import OperatorMetrics
from modelship_operator.mlflow_registry import registry_for
from modelship_operator.observed import Observed, observe
from modelship_operator.reconcile import (
    Plan,
    describe_invalid,
    plan,
    plan_invalid,
    settle,
    status_patch,
)
from modelship_operator.render import apply_waves, router_name, variant_name
from modelship_operator.rollout import Analysis, RolloutState, analysis_delay
from modelship_operator.settings import OperatorSettings
from modelship_operator.sources import RegistryError, is_registry_uri, recorded
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ModelDeploymentStatus, RecordedTransition
from modelship_operator.workqueue import Outcome, Worker, error_reason

log = logging.getLogger(__name__)

COMPONENT: Final = "modelship-operator"
#: Seconds one Prometheus query may take; a slower one is an analysis Error (counted toward
#: maxConsecutiveErrors), never a stuck reconcile.
PROMETHEUS_TIMEOUT_SECONDS: Final = 5.0


#: Reason of the Degraded condition while a models:/ URI cannot be resolved.
RESOLVE_FAILED: Final = "ModelResolveFailed"
#: Seconds until a registry URI that could not be resolved is tried again.
RESOLVE_RETRY: Final = 15.0


def next_delay(settings: OperatorSettings, result: Plan, spread: float = 1.0) -> float:
    """When to reconcile again after a successful run. ``spread`` (up to 1) shortens the
    resync, so resources created together do not all resync in the same instant."""
    delay = settings.resync_seconds * spread
    if result.requeue_after is not None:
        delay = min(delay, max(result.requeue_after, 0.5))
    return delay


class Reconciler:
    """Reconciles one ModelDeployment at a time against the API."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        metrics: OperatorMetrics,
        identity: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        http: httpx.AsyncClient | None = None,
        cache: ChildCache | None = None,
    ) -> None:
        self.kube = kube
        #: What exists, from the watches; without it every reconcile lists.
        self.cache = cache
        #: What this process applied last, per child, to skip applies that change nothing.
        self.applied: dict[ObjectKey, Applied] = {}
        self.settings = settings
        self.metrics = metrics
        self.identity = identity
        self._clock = clock
        # One connection pool for every resource's Prometheus queries.
        self._http = http or http_client(settings, PROMETHEUS_TIMEOUT_SECONDS)
        self._owns_http = http is None

    async def close(self) -> None:
        """Release the Prometheus connection pool."""
        if self._owns_http:
            await self._http.aclose()

    async def reconcile(self, namespace: str, name: str, worker: Worker | None = None) -> Outcome:
        """Read, plan, act, write status, announce. Raises ApiError on transient failures."""
        worker = worker or Worker()
        body = await self.kube.get_model_deployment(namespace, name)
        if body is None:
            self.forget(namespace, name)
            return Outcome("gone")
        if body["metadata"].get("deletionTimestamp"):
            # Being deleted: the garbage collector removes the children; applying now
            # would only recreate them.
            return Outcome("deleting", self.settings.resync_seconds)
        now = self._clock()
        result_kind = "success"
        unresolved: str | None = None
        try:
            md = ModelDeployment.from_api(body)
        except ValidationError as exc:
            result = plan_invalid(body, describe_invalid(exc), now)
            status = result.status
            result_kind = "invalid"
        else:
            resolved, unresolved = await self._resolve(md)
            if resolved is None:
                result = plan_invalid(
                    body, unresolved or "", now, RESOLVE_FAILED, "cannot resolve {problem}"
                )
                if not await self._write_status(body, result.status, worker):
                    return Outcome("conflict")
                await self._announce(body, result.status, worker)
                return Outcome("refused", min(self.settings.resync_seconds, RESOLVE_RETRY))
            md = resolved
            if self.cache is not None:
                children = self.cache.children(namespace, md.name)
                pods = self.cache.pods(namespace, md.name)
            else:
                selector = kinds.selector(md.name)
                children, pods = await asyncio.gather(
                    self.kube.list_children(namespace, selector),
                    self.kube.list_pods(namespace, selector),
                )
            observed = observe(children, pods, routing_configmap=router_name(md.name))
            analysis = await self._analyse(md, now)
            idle = await self._idle(md, observed, now)
            result = plan(md, observed, self.settings, now, analysis=analysis, idle=idle)
            # The decision (and the transitions it announces) is recorded before anything
            # acts on it; observedGeneration only once acted on (below), so a status at the
            # resource's generation means its children were applied.
            decided = result.decided.model_copy(
                update={"observed_generation": md.status.observed_generation}
            )
            if not await self._write_status(body, decided, worker):
                return Outcome("conflict")
            failures = await self._act(result, namespace, name)
            failures += await self._scale(result, namespace, name)
            if unresolved is not None:
                failures.append(Failure(RESOLVE_FAILED, f"cannot resolve {unresolved}"))
            status = settle(result.decided, observed, failures, now)
            if failures:
                result_kind = "refused"
        if not await self._write_status(body, status, worker):
            return Outcome("conflict")
        await self._announce(body, status, worker)
        self.metrics.observe_status(namespace, name, status)
        delay = next_delay(self.settings, result, random.uniform(0.8, 1))
        if unresolved is not None:
            delay = min(delay, RESOLVE_RETRY)
        return Outcome(result_kind, delay)

    async def _resolve(self, md: ModelDeployment) -> tuple[ModelDeployment | None, str | None]:
        """``md`` with its models:/ URI resolved (the recorded artifact while the spec names
        the same one, else the registry's answer now), and why it could not be. When the
        registry fails while a model serves, that model stays desired (nothing new starts)
        and the reason is reported; when nothing serves, there is nothing to deploy."""
        model = md.spec.model
        if not is_registry_uri(model.uri):
            return md, None
        status = md.status
        rollout = status.rollout
        serving = status.rolled_out.current if status.rolled_out is not None else None
        found = recorded(
            model.uri,
            model.version,
            model.sha256,
            model.max_size,
            rollout.candidate if rollout is not None else None,
            serving,
        )
        if found is not None:
            return md.resolved_to(found), None
        tracking = registry_for(md, self.settings)
        if tracking is None:
            problem = (
                f"{model.uri}: no MLflow tracking server is set: set spec.mlflow.trackingUri "
                "or the operator's MODELSHIP_OPERATOR_MLFLOW_TRACKING_URI"
            )
        else:
            try:
                ref = await tracking.resolve_model(
                    model.uri, version=model.version, sha256=model.sha256, max_size=model.max_size
                )
            except RegistryError as exc:
                problem = str(exc)
            else:
                log.info(
                    "%s/%s: %s is version %s at %s",
                    md.namespace, md.name, model.uri, ref.registry_version, ref.uri,
                )  # fmt: skip
                return md.resolved_to(ref), None
        log.warning("%s/%s: cannot resolve %s", md.namespace, md.name, problem)
        if serving is None:
            return None, problem
        return md.resolved_to(serving), problem

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
            state = RolloutState.from_status(md.status)
            late = None if state is None else analysis_delay(md.spec.strategy, state, now)
            if late is not None:
                self.metrics.analysis_delay.observe(late)
            log.info(
                "analysis of %s/%s (%s, step %d): %s",
                md.namespace,
                md.name,
                analysis.stage,
                analysis.step,
                "; ".join(c.summary for c in analysis.checks) or analysis.verdict,
            )
        return analysis

    async def _idle(self, md: ModelDeployment, observed: Observed, now: datetime) -> bool | None:
        """Whether Prometheus says the router answered no request of ``md`` over
        scaleToZeroAfter; None when not asked (:func:`scaletozero.check_due`) or unknown."""
        stable = observed.deployment(variant_name(md.name, "stable"))
        if not scaletozero.check_due(md, stable, now):
            return None
        source = PrometheusClient(
            access_for(md, self.settings), timeout=PROMETHEUS_TIMEOUT_SECONDS, client=self._http
        )
        labels = label_scheme(self.settings.prometheus_namespace_label)
        answer = await source.query(scaletozero.idle_query(md, labels), now)
        if isinstance(answer, Value):
            return scaletozero.is_idle(answer.value)
        why = answer if isinstance(answer, QueryError) else "no series of its router"
        log.info("%s/%s: not scaled to zero, idleness unknown: %s", md.namespace, md.name, why)
        return None

    async def _scale(self, result: Plan, namespace: str, name: str) -> list[Failure]:
        """Set the replica counts the plan asks for (scale to zero); refusals are Failures."""
        failures: list[Failure] = []
        for action in result.scale:
            try:
                done = await self.kube.scale(namespace, action.name, action.replicas, action.to)
            except ApiError as exc:
                if exc.transient:
                    raise
                self.metrics.errors.labels(namespace, name, error_reason(exc)).inc()
                failures.append(
                    Failure("ScaleFailed", f"scaling {action.name} was refused: {exc.message}")
                )
                continue
            if done:
                log.info("%s/%s: scaled %s from %d to %d pods", namespace, name,
                         action.name, action.replicas, action.to)  # fmt: skip
            else:
                log.info("%s/%s: %s no longer runs %d pods: not scaled", namespace, name,
                         action.name, action.replicas)  # fmt: skip
        return failures

    async def _act(self, result: Plan, namespace: str, name: str) -> list[Failure]:
        """Apply (wave by wave, each wave's objects at once: :func:`render.apply_waves`),
        then delete; refusals become Failures, transient errors propagate (once the whole
        wave has been answered, so no apply is left running)."""
        failures: list[Failure] = []
        for wave in apply_waves(result.apply):
            outcomes = await asyncio.gather(
                *(self._apply(obj, namespace, name) for obj in wave), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            failures += [o for o in outcomes if isinstance(o, Failure)]
        for ref in result.delete:
            self.applied.pop((namespace, ref.kind, ref.name), None)
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

    async def _apply(self, obj: dict[str, Any], namespace: str, name: str) -> Failure | None:
        """Apply one child unless the cache shows it as last applied; a refusal is a Failure."""
        key = object_key(obj)
        digest = rendered_digest(obj)
        live = self.cache.get(key) if self.cache is not None else None
        if unchanged(self.applied.get(key), digest, live):
            return None
        self.applied.pop(key, None)
        manager = self.settings.field_manager
        try:
            keep = handover(obj, live, manager)
            if keep is not None:
                # First apply without replicas (an autoscaler takes over): keep the count.
                await self.kube.apply(keep, manager + HANDOVER_SUFFIX, force=True)
            answer = await self.kube.apply(obj, manager, force=True)
        except ApiError as exc:
            if exc.transient:
                raise
            self.metrics.errors.labels(namespace, name, error_reason(exc)).inc()
            what = f"{obj['kind']} {obj['metadata']['name']}"
            log.warning("reconcile %s/%s: %s refused: %s", namespace, name, what, exc)
            return Failure("ApplyFailed", f"{what} was refused: {exc.message}")
        self.applied[key] = Applied((namespace, name), digest, fingerprint(answer))
        return None

    def is_own(self, key: ObjectKey, resource_version: str) -> bool:
        """Whether ``resource_version`` of child ``key`` is what this process's apply wrote
        (its watch event is no news)."""
        record = self.applied.get(key)
        return record is not None and record.fingerprint.resource_version == resource_version

    def forget(self, namespace: str, name: str) -> None:
        """The ModelDeployment is gone: drop what was remembered of its children."""
        for key in [k for k, r in self.applied.items() if r.owner == (namespace, name)]:
            del self.applied[key]

    async def _write_status(
        self, body: dict[str, Any], status: ModelDeploymentStatus, worker: Worker
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

    async def _announce(
        self, body: dict[str, Any], status: ModelDeploymentStatus, worker: Worker
    ) -> None:
        """Post the Event of every recorded transition not evented yet, then record that.
        A transition whose Event could not be posted now is posted by the next reconcile."""
        posted = []
        for transition in unevented(status):
            if not await self._post_event(body, transition):
                break
            posted.append(transition.seq)
        marker = evented(status, posted)
        if marker is None:
            return
        try:
            await self._write_status(
                body, status.model_copy(update={"last_evented_transition": marker}), worker
            )
        except ApiError as exc:  # the next reconcile posts again; the names dedup
            log.warning("could not record the posted Events: %s", exc)

    async def _post_event(self, body: Mapping[str, Any], transition: RecordedTransition) -> bool:
        """Post one transition's Event; False if it should be tried again later. Posted
        before (AlreadyExists) or refused for good counts as done."""
        meta = body["metadata"]
        try:
            await self.kube.post_event(
                body,
                transition.type,
                transition.reason,
                transition.message,
                COMPONENT,
                self.identity,
                now=transition.at,
                name=event_name(meta["name"], meta.get("uid", ""), transition.seq),
            )
        except ApiError as exc:
            if exc.conflict:
                return True  # posted by an earlier attempt
            log.warning("could not post event %s: %s", transition.reason, exc)
            return not exc.transient
        return True


def _merged(body: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Status after a merge patch of its top-level fields (when the API returned none)."""
    status = dict(body.get("status") or {})
    for key, value in patch.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    return status
