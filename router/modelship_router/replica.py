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

Unit affinity. A request with a sticky key carries a *unit* (``routing.sticky_unit``,
forwarded as ``x-modelship-unit``). Within its variant it goes to the upstream that wins
rendezvous (highest-random-weight) hashing of the unit over the variant's usable upstreams,
so one user's predictions (and the feedback it sends without a replica token) land on one
pod, which counts the user once. The weight of an upstream for a unit is::

    int.from_bytes(sha256(f"{unit}\x00{token}".encode()).digest()[:8], "big")

``token`` being the upstream's replica token: every router replica agrees without shared
state. An ejected upstream's users move to their second choice until it is back, and a
pod that joins or leaves only moves the users it wins or had won.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Protocol, TypeVar

#: Response header naming the replica that served; as a request header it selects it.
REPLICA_HEADER: Final = "x-modelship-replica"
#: Request header the router adds with a sticky request's unit (a client's is dropped).
UNIT_HEADER: Final = "x-modelship-unit"


class _Tokened(Protocol):
    @property
    def token(self) -> str: ...


class _Ejectable(_Tokened, Protocol):
    @property
    def down_until(self) -> float: ...


T = TypeVar("T", bound=_Tokened)
E = TypeVar("E", bound=_Ejectable)


def replica_token(address: str) -> str:
    """The opaque, stable token of the upstream at ``address`` (``host:port``)."""
    return hashlib.sha256(address.encode()).hexdigest()[:16]


def find_replica(upstreams: Sequence[T], token: str) -> T | None:
    """The upstream whose token is ``token``, or None if no current upstream has it."""
    for upstream in upstreams:
        if upstream.token == token:
            return upstream
    return None


def rendezvous_weight(unit: str, token: str) -> int:
    """The weight of the upstream with replica token ``token`` for ``unit``."""
    return int.from_bytes(hashlib.sha256(f"{unit}\x00{token}".encode()).digest()[:8], "big")


def rendezvous(upstreams: Sequence[E], unit: str, now: float, exclude: object = None) -> E | None:
    """The usable upstream (not ejected at ``now``, not ``exclude``) of highest weight for
    ``unit``; None if none is usable. Ties (2**-64) go to the first in ``upstreams``."""
    prefix = unit.encode() + b"\x00"
    sha256 = hashlib.sha256
    best: E | None = None
    best_weight = b""
    for upstream in upstreams:
        if upstream.down_until > now or upstream is exclude:
            continue
        # Big-endian bytes of one length order as the integers of rendezvous_weight.
        weight = sha256(prefix + upstream.token.encode()).digest()[:8]
        if weight > best_weight:
            best, best_weight = upstream, weight
    return best
