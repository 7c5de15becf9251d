"""The operator's reconcile with a models:/ URI against a real MLflow server (the API server
is the in-memory stand-in of the operator's tests): what it resolves, what status records,
and that a moved alias or a failing registry changes nothing that runs."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1] / "operator"))

from mdep_fixtures import SHA_CANARY, base_resource
from modelship_serving.artifacts import sha256_file
from registry_helpers import Registered
from test_reconcile import T0
from test_reconciler_events import FakeApi, run


def serving_env(api: FakeApi, variant: str) -> dict[str, str]:
    deployment = api.children[("Deployment", f"churn-{variant}")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def stored(registered: Registered, env: dict[str, str]) -> Path:
    """The file a serving env names, as the tracking server stored it."""
    path = env["MODELSHIP_MODEL_URI"].split("/api/2.0/mlflow-artifacts/artifacts/", 1)[1]
    return registered.server.state / "artifacts" / path


def resource(registered: Registered, model: dict[str, Any]) -> dict[str, Any]:
    body = base_resource(model=model, mlflow={"trackingUri": registered.server.uri})
    body["metadata"]["resourceVersion"] = "1"
    return body


def test_an_alias_is_resolved_once_and_what_it_resolved_to_keeps_serving(
    registered: Registered,
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(registered.server.uri)
    client.set_registered_model_alias("iris", "deployed", "1")
    api = FakeApi(resource(registered, {"version": "1.0.0", "uri": "models:/iris@deployed"}))
    run(api, T0)
    env = serving_env(api, "stable")
    # The operator read the version's MLmodel and hashed its skops file: every pod of the
    # version is pinned to those bytes.
    files = f"{registered.server.uri}/api/2.0/mlflow-artifacts/artifacts/"
    assert env["MODELSHIP_MODEL_URI"].startswith(files)
    assert env["MODELSHIP_MODEL_URI"].endswith("/model.skops")
    assert env["MODELSHIP_MODEL_FORMAT"] == "skops"
    assert env["MODELSHIP_MODEL_SHA256"] == sha256_file(stored(registered, env))
    run(api, T0 + timedelta(seconds=2))  # stable runs everywhere: recorded as rolled out
    current = api.status.rolled_out.current if api.status.rolled_out else None
    assert current is not None
    assert (current.resolved_from, current.registry_version) == ("models:/iris@deployed", "1")
    assert (current.sha256, current.sha256_source) == (env["MODELSHIP_MODEL_SHA256"], "operator")
    assert current.uri == env["MODELSHIP_MODEL_URI"]

    client.set_registered_model_alias("iris", "deployed", "2")
    run(api, T0 + timedelta(seconds=30))
    assert serving_env(api, "stable") == env
    assert api.status.rollout is None
    assert api.status.rolled_out and api.status.rolled_out.current == current

    # A new version label is a new model: the alias is resolved again and rolled out.
    api.body["spec"]["model"] = {"version": "2.0.0", "uri": "models:/iris@deployed",
                                 "sha256": SHA_CANARY}  # fmt: skip
    run(api, T0 + timedelta(seconds=40))
    rollout = api.status.rollout
    assert rollout is not None and rollout.candidate is not None
    assert rollout.candidate.registry_version == "2"
    assert rollout.candidate.sha256 == SHA_CANARY
    canary = serving_env(api, "canary")
    assert canary["MODELSHIP_MODEL_URI"] == rollout.candidate.uri != env["MODELSHIP_MODEL_URI"]
    assert canary["MODELSHIP_MODEL_URI"].endswith("/model.pkl")  # version 2 is cloudpickled
    assert (canary["MODELSHIP_MODEL_FORMAT"], canary["MODELSHIP_MODEL_SHA256"]) == (
        "pickle",
        SHA_CANARY,
    )
    assert serving_env(api, "stable") == env


def test_a_uri_the_registry_cannot_resolve_is_degraded_while_stable_keeps_its_model(
    registered: Registered,
) -> None:
    api = FakeApi(resource(registered, {"version": "1.0.0", "uri": "models:/iris/1"}))
    run(api, T0)
    run(api, T0 + timedelta(seconds=2))
    stable = serving_env(api, "stable")
    api.body["spec"]["model"] = {"version": "3.0.0", "uri": "models:/iris-absent/1"}
    run(api, T0 + timedelta(seconds=10))
    degraded = {c.type: c for c in api.status.conditions}["Degraded"]
    assert (degraded.status, degraded.reason) == ("True", "ModelResolveFailed")
    assert "cannot resolve models:/iris-absent/1: no version 1 of registered model" in (
        degraded.message
    )
    assert serving_env(api, "stable") == stable
    assert ("Deployment", "churn-canary") not in api.children
    assert api.status.rollout is None


def test_with_nothing_serving_an_unresolvable_uri_deploys_nothing(
    registered: Registered,
) -> None:
    api = FakeApi(resource(registered, {"version": "1.0.0", "uri": "models:/iris@nobody"}))
    run(api, T0)
    assert api.children == {}
    degraded = {c.type: c for c in api.status.conditions}["Degraded"]
    assert degraded.reason == "ModelResolveFailed"
    assert "no alias 'nobody' of registered model 'iris'" in degraded.message
    assert "ModelResolveFailed" in api.reasons()


def test_an_unpinned_pickled_version_is_rendered_unpinned_so_the_server_refuses_it(
    registered: Registered,
) -> None:
    api = FakeApi(resource(registered, {"version": "2.0.0", "uri": "models:/iris/2"}))
    run(api, T0)
    env = serving_env(api, "stable")
    assert env["MODELSHIP_MODEL_FORMAT"] == "pickle"
    assert env["MODELSHIP_MODEL_URI"].endswith("/model.pkl")
    assert "MODELSHIP_MODEL_SHA256" not in env
