"""What the spec asks of the rollout engine: the serving model, the candidate, the key."""

from __future__ import annotations

from typing import Any

from mdep_fixtures import SHA_CANARY, STABLE_MODEL, base_resource, rolling_out
from modelship_operator.rollout import Target, rollout_key, target
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ModelRef

CANDIDATE = {"version": "1.5.0", "uri": "file:///models/churn-1.5.0.skops", "sha256": SHA_CANARY}


def resource(body: dict[str, Any]) -> ModelDeployment:
    return ModelDeployment.from_api(body)


def test_the_first_apply_deploys_the_desired_model_directly() -> None:
    md = resource(base_resource())
    assert target(md) == Target(stable=md.spec.desired_model())


def test_the_serving_model_desired_means_no_rollout() -> None:
    body = base_resource()
    body["status"] = {"rolledOut": {"current": STABLE_MODEL}}
    assert target(resource(body)).candidate is None


def test_a_different_desired_model_is_the_candidate_against_the_serving_one() -> None:
    md = resource(rolling_out(base_resource(), CANDIDATE))
    goal = target(md)
    assert goal.stable == ModelRef(**STABLE_MODEL)
    assert goal.candidate is not None and goal.candidate.version == "1.5.0"
    assert goal.key == rollout_key(goal.stable, goal.candidate, md.spec.strategy)


def test_a_sha256_change_alone_is_a_new_model() -> None:
    md = resource(rolling_out(base_resource(), {**STABLE_MODEL, "sha256": "c" * 64}))
    assert target(md).candidate is not None


def rejected(strategy: dict[str, Any] | None = None, model: dict[str, Any] = CANDIDATE) -> Target:
    first = target(resource(rolling_out(base_resource(), CANDIDATE)))
    assert first.key is not None and first.candidate is not None
    body = rolling_out(base_resource(**({"strategy": strategy} if strategy else {})), model)
    body["status"] |= {
        "phase": "RolledBack",
        "rollout": {"key": first.key, "candidate": first.candidate.to_api(),
                    "startedAt": "2026-03-01T09:00:00Z"},
    }  # fmt: skip
    return target(resource(body))


def test_a_rejected_candidate_keeps_its_rollout_while_it_stays_desired() -> None:
    original = target(resource(rolling_out(base_resource(), CANDIDATE))).key
    assert rejected().key == original
    assert rejected(strategy={"steps": [5, 50]}).key == original  # a strategy edit alone


def test_a_new_model_after_a_rejection_is_a_new_rollout() -> None:
    original = target(resource(rolling_out(base_resource(), CANDIDATE))).key
    newer = rejected(model={**CANDIDATE, "version": "1.6.0", "sha256": "d" * 64})
    assert newer.key not in (None, original)
