"""Replica affinity for feedback: the pod that served a prediction gets its ground truth.

A serving pod keeps its predictions in memory (``modelship_serving.feedback``), so the
label for a request id is only useful on the pod that predicted it. The router therefore
adds ``x-modelship-replica: <token>`` to every response, naming the upstream (pod) that
answered, and a request that carries that header back is sent to that same upstream
when it is among the chosen variant's current upstreams.

Why this design:

- The token is a pure function of the upstream's address (a hash, so pod IPs are not
  shown to clients), not a lookup in router memory: any router replica, and a router
  that restarted since the prediction, decodes it against its current upstream list.
  No shared state, nothing to expire, nothing lost on restart.
- It works with request ids the client chose itself (``x-request-id``), which the router
  cannot rewrite to encode a pod in them.
- The serving pod stays the only place that joins labels; a token whose pod is gone (or
  is ejected) falls back to the normal choice among the variant's pods, which does not
  know the request id and counts it as ``unknown`` in
  ``modelship_feedback_unjoined_total`` — unjoinable feedback is counted, never lost
  silently.

Clients send feedback with the ``x-modelship-variant`` and ``x-modelship-replica``
headers of the prediction's response, one feedback request per (variant, replica).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Protocol, TypeVar

#: Response header naming the replica that served; as a request header it selects it.
REPLICA_HEADER: Final = "x-modelship-replica"


class _Tokened(Protocol):
    @property
    def token(self) -> str: ...


T = TypeVar("T", bound=_Tokened)


def replica_token(address: str) -> str:
    """The opaque, stable token of the upstream at ``address`` (``host:port``)."""
    return hashlib.sha256(address.encode()).hexdigest()[:16]


def find_replica(upstreams: Sequence[T], token: str) -> T | None:
    """The upstream whose token is ``token``, or None if no current upstream has it."""
    for upstream in upstreams:
        if upstream.token == token:
            return upstream
    return None
