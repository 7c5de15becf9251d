"""Models from S3, end to end on the local cluster: the test bed's SeaweedFS in the cluster
(``modelship_cluster.objectstore``) holds the artifacts, and the ModelDeployment reads them
with a read-only key from a Secret (spec.s3), as a team points modelship at its own bucket.

A canary from S3 is promoted under traffic; a serving pod deleted afterwards comes back with
the same verified artifact; each way a candidate's artifact can be wrong (no such key, a
bucket the key may not read, over spec.model.maxSize, a sha256 mismatch) is reported in the
Degraded condition with its cause while stable answers every request. (A bucket that does
not exist is refused as AccessDenied to a key scoped to one bucket, as S3 does; the
no-such-bucket message is covered against a real SeaweedFS in tests/storage.)
"""

from __future__ import annotations

import uuid
from typing import Any

from modelship_cluster import node, objectstore
from modelship_cluster.seaweedfs import Identity, put_object
from operator_harness import Env, until
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

SECRET = "model-store"


def in_s3(model: Stored, key: str, bucket: str = objectstore.BUCKET) -> Stored:
    """MODEL's artifact put in the cluster's object store (as the admin), as s3://BUCKET/KEY."""
    put_object(node.filer_url(), bucket, key, model.path.read_bytes())
    return Stored(model.version, f"s3://{bucket}/{key}", model.sha256, model.features,
                  model.labels, model.path)  # fmt: skip


def s3_spec(env: Env, ns: str, identity: Identity = objectstore.READER) -> dict[str, Any]:
    """A Secret with IDENTITY's key in NS, and the spec.s3 that names it."""
    env.apply(ns, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
        "stringData": {"AWS_ACCESS_KEY_ID": identity.access_key,
                       "AWS_SECRET_ACCESS_KEY": identity.secret_key},
    })  # fmt: skip
    return {"s3": {"secretName": SECRET, "endpoint": objectstore.URL}}


def test_stable_and_canary_from_s3_are_promoted_and_a_new_pod_loads_the_verified_artifact(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    tag = uuid.uuid4().hex[:8]
    v1 = in_s3(models["1.0.0"], f"{tag}/bc/1.0.0/model.skops")
    v2 = in_s3(models["2.0.0"], f"{tag}/bc/2.0.0/model.skops")
    base = deploy(env, ns, "bucket", v1, v2, spec=s3_spec(env, ns))
    with Recorder(env, ns, "bucket") as rec, traffic(base, "bucket", v1) as stats:
        promoted = wait_for(env, ns, "bucket", phase_is("Promoted"), "the S3 canary to be "
                            "promoted", 150, rec, stats)  # fmt: skip
    why = explain(env, ns, "bucket", rec, stats)
    assert stats.non_2xx == 0 and not stats.errors, why
    assert {v for v, _ in stats.answers} == {"stable", "canary"}, why
    current = promoted["rolledOut"]["current"]
    assert (current["uri"], current["sha256"]) == (v2.uri, v2.sha256), why

    # A pod that comes back (a node drain, an eviction) downloads the artifact again and
    # verifies the same hash before it serves.
    before = until(lambda: served_sha256(env, ns, "bucket", "stable") or None,
                   "a ready stable pod", 60)  # fmt: skip
    (old_pod,) = before
    env.core.delete_namespaced_pod(old_pod, ns)

    def replaced() -> dict[str, str] | None:
        found = served_sha256(env, ns, "bucket", "stable")
        return found if found and old_pod not in found else None

    after = until(replaced, "a new stable pod to load the artifact", 120,
                  lambda: explain(env, ns, "bucket"))  # fmt: skip
    assert set(after.values()) == set(before.values()) == {v2.sha256}, (before, after)


#: Candidates whose artifact cannot be served, and the words their Degraded message has.
def broken_candidates(
    tag: str, good: Stored, other: Stored
) -> list[tuple[str, dict[str, Any], str]]:
    private = in_s3(good, f"{tag}/private.skops", bucket="private")
    return [
        ("no such key", {"version": "2.0.1", "uri": f"s3://models/{tag}/absent.skops",
                         "sha256": good.sha256}, f"no such key '{tag}/absent.skops'"),
        ("access denied", {"version": "2.0.2", "uri": private.uri, "sha256": good.sha256},
         f"cannot load {private.uri}: access denied"),
        ("too large", {"version": "2.0.3", "uri": good.uri, "sha256": good.sha256,
                       "maxSize": "1Ki"}, "over the limit of 1024 bytes"),
        ("checksum mismatch", {"version": "2.0.4", "uri": good.uri, "sha256": other.sha256},
         "sha256 mismatch"),
    ]  # fmt: skip


def test_each_broken_s3_candidate_is_degraded_with_its_cause_while_stable_serves(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    tag = uuid.uuid4().hex[:8]
    v1 = in_s3(models["1.0.0"], f"{tag}/bc/1.0.0/model.skops")
    v2 = in_s3(models["2.0.0"], f"{tag}/bc/2.0.0/model.skops")
    spec = s3_spec(env, ns)
    base = deploy(env, ns, "broken", v1, None, spec=spec)
    seen: dict[str, str] = {}
    with Recorder(env, ns, "broken") as rec, traffic(base, "broken", v1, seconds=400) as stats:
        for case, model, words in broken_candidates(tag, v2, v1):
            env.apply(ns, model_deployment("broken", model, strategy(), **spec))

            def degraded(words: str = words) -> dict[str, Any] | None:
                cond = env.condition(ns, "broken", "Degraded") or {}
                found = cond.get("status") == "True" and words in cond.get("message", "")
                return cond if found else None

            cond = until(degraded, f"{case}: Degraded with {words!r}", 150,
                         lambda: explain(env, ns, "broken", rec, stats))  # fmt: skip
            assert cond["reason"] == "PodFailing", cond
            seen[case] = cond["message"]
    why = explain(env, ns, "broken", rec, stats) + f"\n--- messages: {seen}"
    # Stable answered everything; no broken candidate ever had a share of the traffic.
    assert stats.non_2xx == 0 and not stats.errors, why
    assert stats.total > 100, why
    assert {v for v, _ in stats.answers} == {"stable"}, why
    assert all(w == 0 for w in rec.canary_weights()), why
    status = (env.md(ns, "broken") or {})["status"]
    assert status["rolledOut"]["current"]["version"] == v1.version, why
