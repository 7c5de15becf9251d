"""Models on a PersistentVolume, end to end on the local cluster's real node: a static
hostPath PersistentVolume (what a local or NFS volume is to a team) bound to a claim in the
namespace; stable and canary come from pvc://claim/path URIs, each pod mounting the claim
read-only, and the canary is promoted under traffic."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import Env, until
from rollout_harness import (
    ROLLOUT_MARKS,
    Recorder,
    Rollout,
    Stored,
    deploy,
    explain,
    phase_is,
    served_sha256,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS

CLAIM = "team-models"
STORAGE_CLASS = "modelship-testbed-local"


@pytest.fixture
def volume(rollout: Rollout, local_cluster: Any) -> Iterator[Path]:
    """A folder on the node, as a PersistentVolume bound to claim CLAIM in the namespace."""
    env, ns = rollout.env, rollout.ns
    name = f"models-{uuid.uuid4().hex[:8]}"
    folder = Path(local_cluster.root) / "volumes" / name
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)  # the serving user (non-root) reads what the team put there
    env.apply(None, {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": str(folder), "type": "Directory"},
            "claimRef": {"namespace": ns, "name": CLAIM},
        },
    })  # fmt: skip
    env.apply(ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": STORAGE_CLASS,
                 "volumeName": name, "resources": {"requests": {"storage": "1Gi"}}},
    })  # fmt: skip
    until(lambda: bound(env, ns), f"claim {CLAIM} to bind to {name}", 60)
    yield folder
    env.core.delete_persistent_volume(name)
    shutil.rmtree(folder, ignore_errors=True)


def bound(env: Env, ns: str) -> bool:
    claim = env.core.read_namespaced_persistent_volume_claim(CLAIM, ns)
    return bool(claim.status.phase == "Bound")


def on_volume(model: Stored, folder: Path, path: str) -> Stored:
    target = folder / path
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    for part in target.relative_to(folder).parents:
        (folder / part).chmod(0o755)
    shutil.copyfile(model.path, target)
    target.chmod(0o644)
    return Stored(model.version, f"pvc://{CLAIM}/{path}", model.sha256, model.features,
                  model.labels, model.path)  # fmt: skip


def test_stable_and_canary_from_a_persistent_volume_are_promoted(
    rollout: Rollout, volume: Path
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1 = on_volume(models["1.0.0"], volume, "bc/1.0.0/model.skops")
    v2 = on_volume(models["2.0.0"], volume, "bc/2.0.0/model.skops")
    base = deploy(env, ns, "volume", v1, v2)
    with Recorder(env, ns, "volume") as rec, traffic(base, "volume", v1) as stats:
        promoted = wait_for(env, ns, "volume", phase_is("Promoted"), "the canary to be promoted",
                            150, rec, stats)  # fmt: skip
    why = explain(env, ns, "volume", rec, stats)
    assert stats.non_2xx == 0 and not stats.errors, why
    assert {v for v, _ in stats.answers} == {"stable", "canary"}, why
    assert promoted["rolledOut"]["current"]["uri"] == v2.uri, why
    loaded = until(lambda: served_sha256(env, ns, "volume", "stable") or None,
                   "a ready stable pod", 60)  # fmt: skip
    assert set(loaded.values()) == {v2.sha256}, why
    # Every serving pod mounts the claim read-only: a model server cannot change the models.
    for pod in env.pods(ns, "modelship.io/deployment=volume,app.kubernetes.io/component=serving"):
        (claim,) = [v for v in pod.spec.volumes if v.persistent_volume_claim]
        assert claim.persistent_volume_claim.claim_name == CLAIM
        assert claim.persistent_volume_claim.read_only is True
        mounts = [m for c in pod.spec.containers for m in c.volume_mounts if m.name == claim.name]
        assert mounts and all(m.read_only for m in mounts), why
