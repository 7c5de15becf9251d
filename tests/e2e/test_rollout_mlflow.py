"""Models from the MLflow model registry, end to end on the local cluster: the test bed's
MLflow tracking server (``modelship_cluster.registry``: SQLite backend store, proxied
artifacts, on the pod network's gateway) holds versions registered here with mlflow's own
client, and ModelDeployments name them as ``models:/<name>/<version>`` or
``models:/<name>@<alias>``.

Stable comes from an alias and a canary from a version number; the canary is promoted under
traffic, and status records what each registry URI was resolved to. Moving the alias
afterwards changes nothing that runs (it was resolved when its rollout started), and a
serving pod deleted afterwards comes back with the same artifact, verified against the
sha256 the operator recorded when it resolved the version (the user pinned none). A registry URI
that names nothing, and a version saved with cloudpickle but not pinned, are each reported
in the Degraded condition with their cause while stable answers every request.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from modelship_cluster import registry
from modelship_serving.config import Settings
from modelship_serving.loading import load_model
from operator_harness import until
from rollout_harness import (
    ROLLOUT_MARKS,
    Recorder,
    Rollout,
    Stored,
    deploy,
    explain,
    model_deployment,
    phase_is,
    served_sha256,
    strategy,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS


@dataclass(frozen=True)
class Registered(Stored):
    """A model version in the registry: ``uri`` is its models:/ URI; unpinned (the spec's
    sha256 omitted) unless ``pinned``."""

    pinned: bool = False

    def ref(self, version: str | None = None) -> dict[str, str]:
        ref = {"version": version or self.version, "uri": self.uri}
        return ref | ({"sha256": self.sha256} if self.pinned else {})


@pytest.fixture(scope="module")
def tracking_uri(local_cluster: Any) -> str:
    proc = local_cluster.processes.get(registry.PROCESS)
    if proc is None or not proc.alive():
        pytest.skip("the test bed's MLflow registry is not running (MODELSHIP_MLFLOW=0?)")
    return str(local_cluster.registry_url)


def register(tracking_uri: str, name: str, model: Stored, serialization: str = "skops") -> str:
    """MODEL's estimator logged with mlflow.sklearn and registered as a new version of NAME;
    returns its version number."""
    import mlflow
    import mlflow.sklearn

    estimator = load_model(
        Settings(model_uri=model.path.as_uri(), model_sha256=model.sha256)
    ).estimator
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator, name="model", registered_model_name=name,
            serialization_format=serialization,
        )  # fmt: skip
    return str(info.registered_model_version)


def in_registry(model: Stored, uri: str, *, pinned: bool = False) -> Registered:
    return Registered(model.version, uri, model.sha256, model.features, model.labels,
                      model.path, pinned)  # fmt: skip


def registry_spec(tracking_uri: str) -> dict[str, Any]:
    return {"mlflow": {"trackingUri": tracking_uri}}


def test_stable_and_canary_from_the_registry_are_promoted_and_keep_what_was_resolved(
    rollout: Rollout, tracking_uri: str
) -> None:
    from mlflow import MlflowClient

    env, models, ns = rollout.env, rollout.models, rollout.ns
    name = f"bc-{uuid.uuid4().hex[:8]}"
    first = register(tracking_uri, name, models["1.0.0"])
    second = register(tracking_uri, name, models["2.0.0"])
    client = MlflowClient(tracking_uri)
    client.set_registered_model_alias(name, "champion", first)
    v1 = in_registry(models["1.0.0"], f"models:/{name}@champion")
    v2 = in_registry(models["2.0.0"], f"models:/{name}/{second}")
    spec = registry_spec(tracking_uri)
    base = deploy(env, ns, "registry", v1, v2, spec=spec)
    status = env.md(ns, "registry") or {}
    candidate = status["status"]["rollout"]["candidate"]
    assert candidate["resolvedFrom"] == v2.uri, candidate
    assert candidate["registryVersion"] == second, candidate
    assert "/api/2.0/mlflow-artifacts/artifacts/" in candidate["uri"], candidate
    # The operator read the version's MLmodel and hashed its skops file: every pod of the
    # version verifies those bytes.
    assert candidate["uri"].endswith("/model.skops"), candidate
    assert (candidate["format"], candidate["sha256Source"]) == ("skops", "operator"), candidate
    with Recorder(env, ns, "registry") as rec, traffic(base, "registry", v1) as stats:
        promoted = wait_for(env, ns, "registry", phase_is("Promoted"), "the registry canary "
                            "to be promoted", 150, rec, stats)  # fmt: skip
    why = explain(env, ns, "registry", rec, stats)
    assert stats.non_2xx == 0 and not stats.errors, why
    assert {v for v, _ in stats.answers} == {"stable", "canary"}, why
    current, previous = promoted["rolledOut"]["current"], promoted["rolledOut"]["previous"]
    assert (current["resolvedFrom"], current["registryVersion"]) == (v2.uri, second), why
    assert (previous["resolvedFrom"], previous["registryVersion"]) == (v1.uri, first), why

    # A pod that comes back loads the same artifact and verifies the same bytes.
    before = until(lambda: served_sha256(env, ns, "registry", "stable") or None,
                   "a ready stable pod", 60)  # fmt: skip
    (old_pod,) = before
    env.core.delete_namespaced_pod(old_pod, ns)

    def replaced() -> dict[str, str] | None:
        found = served_sha256(env, ns, "registry", "stable")
        return found if found and old_pod not in found else None

    after = until(replaced, "a new stable pod to load the artifact", 120,
                  lambda: explain(env, ns, "registry"))  # fmt: skip
    assert set(after.values()) == set(before.values()) == {current["sha256"]}, (before, after)


def test_a_moved_alias_changes_nothing_that_runs(rollout: Rollout, tracking_uri: str) -> None:
    from mlflow import MlflowClient

    env, models, ns = rollout.env, rollout.models, rollout.ns
    name = f"bc-{uuid.uuid4().hex[:8]}"
    first = register(tracking_uri, name, models["1.0.0"])
    second = register(tracking_uri, name, models["2.0.0"])
    client = MlflowClient(tracking_uri)
    client.set_registered_model_alias(name, "champion", first)
    v1 = in_registry(models["1.0.0"], f"models:/{name}@champion")
    deploy(env, ns, "alias", v1, None, spec=registry_spec(tracking_uri))
    served = until(lambda: served_sha256(env, ns, "alias", "stable") or None,
                   "a ready stable pod", 60)  # fmt: skip
    status = (env.md(ns, "alias") or {})["status"]
    assert status["rolledOut"]["current"]["registryVersion"] == first, status
    client.set_registered_model_alias(name, "champion", second)
    time.sleep(20)  # several reconciles (resyncs, status changes) with the alias moved
    status = (env.md(ns, "alias") or {})["status"]
    why = explain(env, ns, "alias")
    assert status["rolledOut"]["current"]["registryVersion"] == first, why
    assert status.get("rollout") is None and status.get("phase") in (None, "Idle"), why
    assert served_sha256(env, ns, "alias", "stable") == served, why


def test_registry_candidates_that_cannot_serve_are_degraded_with_their_cause(
    rollout: Rollout, tracking_uri: str
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    name = f"bc-{uuid.uuid4().hex[:8]}"
    first = register(tracking_uri, name, models["1.0.0"])
    pickled = register(tracking_uri, name, models["2.0.0"], serialization="cloudpickle")
    v1 = in_registry(models["1.0.0"], f"models:/{name}/{first}")
    spec = registry_spec(tracking_uri)
    base = deploy(env, ns, "broken", v1, None, spec=spec)
    cases = [
        ("no such model", {"version": "2.0.1", "uri": f"models:/{name}-absent/1"},
         "ModelResolveFailed", f"no version 1 of registered model '{name}-absent'"),
        ("no such alias", {"version": "2.0.2", "uri": f"models:/{name}@nobody"},
         "ModelResolveFailed", f"no alias 'nobody' of registered model '{name}'"),
        ("unpinned cloudpickle", {"version": "2.0.3", "uri": f"models:/{name}/{pickled}"},
         "PodFailing", "refusing to unpickle"),
    ]  # fmt: skip
    seen: dict[str, str] = {}
    with Recorder(env, ns, "broken") as rec, traffic(base, "broken", v1, seconds=300) as stats:
        for case, model, reason, words in cases:
            env.apply(ns, model_deployment("broken", model, strategy(), **spec))

            def degraded(words: str = words) -> dict[str, Any] | None:
                cond = env.condition(ns, "broken", "Degraded") or {}
                found = cond.get("status") == "True" and words in cond.get("message", "")
                return cond if found else None

            cond = until(degraded, f"{case}: Degraded with {words!r}", 150,
                         lambda: explain(env, ns, "broken", rec, stats))  # fmt: skip
            assert cond["reason"] == reason, cond
            seen[case] = cond["message"]
    why = explain(env, ns, "broken", rec, stats) + f"\n--- messages: {seen}"
    assert stats.non_2xx == 0 and not stats.errors, why
    assert stats.total > 100, why
    assert {v for v, _ in stats.answers} == {"stable"}, why
    assert all(w == 0 for w in rec.canary_weights()), why
    status = (env.md(ns, "broken") or {})["status"]
    assert status["rolledOut"]["current"]["registryVersion"] == first, why
