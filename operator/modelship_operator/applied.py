"""Write only what differs: when a child's server-side apply can be skipped. Pure, no I/O.

After applying a child the reconciler remembers the digest of what it rendered and the
child's fingerprint as the API answered (uid, generation — or resourceVersion for kinds
without one —, labels, annotations). The next reconcile skips the apply when it renders the
same object again *and* the watched child still has that fingerprint. Anything else applies:
a new rendering, a child someone edited (its generation or resourceVersion moved), labelled
or annotated, deleted and recreated (new uid), or not in the cache yet, and every child
after a restart (nothing is remembered). Status written by a child's controller (a
Deployment's ``status``) moves neither its generation nor its labels, so it costs nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ObjectKey = tuple[str, str, str]


@dataclass(frozen=True)
class Fingerprint:
    """What changes when anyone but a status writer changes a child."""

    uid: str
    generation: str
    labels: str
    annotations: str
    resource_version: str

    def same_object(self, other: Fingerprint) -> bool:
        return (self.uid, self.generation, self.labels, self.annotations) == (
            other.uid,
            other.generation,
            other.labels,
            other.annotations,
        )


@dataclass(frozen=True)
class Applied:
    """One child as this process last applied it."""

    owner: tuple[str, str]
    digest: str
    fingerprint: Fingerprint


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    """(namespace, kind, name) of a rendered or live object."""
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(obj.get("kind", "")), str(meta.get("name", "")))


def rendered_digest(obj: Mapping[str, Any]) -> str:
    """A stable digest of a rendered object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(live: Mapping[str, Any]) -> Fingerprint:
    meta = live.get("metadata") or {}
    version = str(meta.get("resourceVersion", ""))
    generation = meta.get("generation")
    return Fingerprint(
        uid=str(meta.get("uid", "")),
        generation=str(generation) if generation is not None else f"rv:{version}",
        labels=json.dumps(meta.get("labels") or {}, sort_keys=True),
        annotations=json.dumps(meta.get("annotations") or {}, sort_keys=True),
        resource_version=version,
    )


def unchanged(record: Applied | None, digest: str, live: Mapping[str, Any] | None) -> bool:
    """True when applying the object of ``digest`` again would change nothing."""
    if record is None or live is None or record.digest != digest:
        return False
    return record.fingerprint.same_object(fingerprint(live))
