"""Events survive a crash: one reconcile's I/O against an in-memory API, killed at each point
between writing status and recording that its Events were posted."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from mdep_fixtures import base_resource, rolling_out
from modelship_kube.errors import ApiError
from modelship_operator.events import event_name
from modelship_operator.metrics import OperatorMetrics
from modelship_operator.reconciler import Reconciler
from modelship_operator.rollout import Analysis, RolloutState, stage
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ModelDeploymentStatus
from test_reconcile import CANARY, SETTINGS, T0, listed
from test_reconcile_analysis import STRATEGY, ok


class Killed(BaseException):
    """The operator process dies here (nothing after it runs)."""


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class FakeApi:
    """The API server as the reconciler sees it: one ModelDeployment, its children (all
    pods ready), status patches with resourceVersion preconditions, named Events."""

    body: dict[str, Any]
    children: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: list[str] = field(default_factory=list)
    #: Called before each status patch and each Event post; True kills the operator there.
    kill: Callable[[str, Mapping[str, Any]], bool] = lambda what, data: False

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.body)

    async def list_children(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return listed(tuple(self.children.values()))

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []

    async def apply(
        self, obj: Mapping[str, Any], field_manager: str, force: bool = True
    ) -> dict[str, Any]:
        self.children[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(dict(obj))
        return dict(obj)

    async def delete(self, ref: Any, namespace: str) -> None:
        self.children.pop((ref.kind, ref.name), None)

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        if self.kill("status", patch):
            raise Killed
        meta = self.body["metadata"]
        if resource_version != meta["resourceVersion"]:
            raise ApiError("patch status", 409, "Conflict", "the object has been modified")
        self.body["status"] = merge(self.body.get("status") or {}, patch)
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(self.body)

    async def post_event(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        component: str,
        instance: str,
        now: datetime | None = None,
        name: str | None = None,
    ) -> None:
        if self.kill("event", {"reason": reason}):
            raise Killed
        assert name is not None
        self.posts.append(name)
        if name in self.events:
            raise ApiError(f"event {reason}", 409, "AlreadyExists", f'"{name}" already exists')
        self.events[name] = {"type": event_type, "reason": reason, "message": message}

    @property
    def status(self) -> ModelDeploymentStatus:
        return ModelDeploymentStatus.model_validate(self.body.get("status") or {})

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.events.values()]


class Operator(Reconciler):
    """A reconciler whose analysis (when the test gives one) is all Successful."""

    analyse_now = False

    async def _analyse(self, md: ModelDeployment, now: datetime) -> Analysis | None:
        state = RolloutState.from_status(md.status)
        if not self.analyse_now or state is None:
            return None
        return Analysis(state.key, stage(md.spec.strategy, state), state.step, now, (ok(),))


def operator(api: FakeApi, now: datetime, analyse: bool = False) -> Operator:
    """A freshly started operator process."""
    op = Operator(api, SETTINGS, OperatorMetrics(), "op-1", clock=lambda: now)  # type: ignore[arg-type]
    op.analyse_now = analyse
    return op


def run(api: FakeApi, now: datetime, analyse: bool = False) -> None:
    async def main() -> None:
        op = operator(api, now, analyse)
        try:
            await op.reconcile("ml", "churn")
        finally:
            await op.close()

    asyncio.run(main())


def rollout_at_first_step() -> FakeApi:
    """A canary that just entered its first step, every Event posted."""
    body = rolling_out(base_resource(strategy=dict(STRATEGY)), CANARY)
    body["metadata"]["resourceVersion"] = "1"
    api = FakeApi(body)
    run(api, T0)  # the rollout begins, the canary Deployment is made
    run(api, T0 + timedelta(seconds=2))  # its pod is ready: first step
    status = api.status
    assert status.phase == "Progressing" and status.traffic and status.traffic.canary == 10
    assert status.last_evented_transition == status.transitions[-1].seq
    return api


def named(api: FakeApi, seq: int) -> str:
    return event_name("churn", "uid-1", seq)


def test_every_recorded_transition_has_exactly_one_event_with_its_name() -> None:
    api = rollout_at_first_step()
    status = api.status
    assert [t.reason for t in status.transitions] == api.reasons()
    assert sorted(api.events) == sorted(named(api, t.seq) for t in status.transitions)
    assert len(api.posts) == len(api.events)


def test_killed_after_the_status_write_the_next_operator_posts_the_missing_event_once() -> None:
    api = rollout_at_first_step()
    before = set(api.events)
    api.kill = lambda what, data: what == "event" and data["reason"] == "StepAdvanced"
    with pytest.raises(Killed):
        run(api, T0 + timedelta(seconds=33), analyse=True)
    # The step is in status, its Event is not out.
    status = api.status
    assert status.step == 1
    advanced = status.transitions[-1]
    assert advanced.reason == "StepAdvanced"
    assert (status.last_evented_transition or 0) < advanced.seq
    assert set(api.events) == before

    api.kill = lambda what, data: False
    run(api, T0 + timedelta(seconds=34))  # a new operator, no analysis due
    assert set(api.events) - before == {named(api, advanced.seq)}
    assert api.reasons().count("StepAdvanced") == 1
    assert api.status.last_evented_transition == advanced.seq
    assert api.status.step == 1  # nothing decided twice

    posts = len(api.posts)
    run(api, T0 + timedelta(seconds=35))
    assert len(api.posts) == posts  # nothing left to post


def test_killed_after_posting_the_event_it_is_not_posted_twice() -> None:
    api = rollout_at_first_step()

    def before_the_marker(what: str, data: Mapping[str, Any]) -> bool:
        return what == "status" and set(data) == {"lastEventedTransition"}

    api.kill = before_the_marker
    with pytest.raises(Killed):
        run(api, T0 + timedelta(seconds=33), analyse=True)
    advanced = api.status.transitions[-1]
    assert advanced.reason == "StepAdvanced"
    assert (api.status.last_evented_transition or 0) < advanced.seq
    assert api.reasons().count("StepAdvanced") == 1

    api.kill = lambda what, data: False
    run(api, T0 + timedelta(seconds=34))
    assert api.posts.count(named(api, advanced.seq)) == 2  # tried again: AlreadyExists
    assert api.reasons().count("StepAdvanced") == 1
    assert api.status.last_evented_transition == advanced.seq


def test_killed_before_the_status_write_nothing_is_announced_and_the_step_is_decided_once() -> None:
    api = rollout_at_first_step()
    seqs = [t.seq for t in api.status.transitions]
    api.kill = lambda what, data: what == "status"
    with pytest.raises(Killed):
        run(api, T0 + timedelta(seconds=33), analyse=True)
    assert [t.seq for t in api.status.transitions] == seqs
    assert "StepAdvanced" not in api.reasons()

    api.kill = lambda what, data: False
    run(api, T0 + timedelta(seconds=34), analyse=True)
    assert api.status.step == 1
    assert api.reasons().count("StepAdvanced") == 1


def test_an_event_the_api_cannot_take_now_is_posted_by_the_next_reconcile() -> None:
    api = rollout_at_first_step()
    original = api.post_event
    failing = {"on": True}

    async def flaky(*args: Any, **kwargs: Any) -> None:
        if failing["on"]:
            raise ApiError("event", 503, "ServiceUnavailable", "etcd is busy")
        await original(*args, **kwargs)

    api.post_event = flaky  # type: ignore[method-assign]
    run(api, T0 + timedelta(seconds=33), analyse=True)
    advanced = api.status.transitions[-1]
    assert advanced.reason == "StepAdvanced" and "StepAdvanced" not in api.reasons()
    assert (api.status.last_evented_transition or 0) < advanced.seq

    failing["on"] = False
    run(api, T0 + timedelta(seconds=34))
    assert api.reasons().count("StepAdvanced") == 1
    assert api.status.last_evented_transition == advanced.seq


def test_a_refused_apply_settles_degraded_only_and_announces_it_once() -> None:
    body = base_resource()
    body["metadata"]["resourceVersion"] = "1"
    api = FakeApi(body)
    original = api.apply

    async def refuse_router(obj: Mapping[str, Any], manager: str, force: bool = True) -> Any:
        if obj["metadata"]["name"] == "churn-router" and obj["kind"] == "Deployment":
            raise ApiError("apply", 422, "Invalid", "spec.replicas: must be >= 0")
        return await original(obj, manager, force)

    api.apply = refuse_router  # type: ignore[method-assign]
    run(api, T0)
    degraded = api.status.condition("Degraded")
    assert degraded is not None and (degraded.status, degraded.reason) == ("True", "ApplyFailed")
    assert api.status.phase == "Idle"  # the decision is the same as without the refusal
    run(api, T0 + timedelta(seconds=5))  # still refused: no second Event
    assert api.reasons().count("ApplyFailed") == 1
    api.apply = original  # type: ignore[method-assign]
    run(api, T0 + timedelta(seconds=10))
    assert api.reasons().count("Recovered") == 1
    assert api.status.last_evented_transition == api.status.transitions[-1].seq
