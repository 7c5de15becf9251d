"""Events derived from the transitions recorded in status. Pure, no I/O.

Every Event the operator posts is first recorded in ``status.transitions``, in the same
status write as the change it announces, with a sequence number. Events are then posted
from the recorded transitions whose ``seq`` is above ``status.lastEventedTransition``, under
a name made of the resource, its uid and the ``seq`` (:func:`event_name`), and the marker
moves on. So:

* an operator killed between writing status and posting the Event leaves the transition
  recorded and not evented: the next reconcile (of any replica) posts it;
* an operator killed between posting and moving the marker posts it again under the same
  name: the API answers AlreadyExists, and nothing is posted twice;
* a status write refused (the resource changed) records nothing, so nothing is announced
  that did not happen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from modelship_operator.conditions import Event, timestamp
from modelship_operator.status import (
    TRANSITIONS_LIMIT,
    ModelDeploymentStatus,
    RecordedTransition,
)

#: Longest Kubernetes object name.
MAX_NAME: Final = 253


def last_seq(status: ModelDeploymentStatus) -> int:
    """The highest sequence number used so far (0: none)."""
    recorded = max((t.seq for t in status.transitions), default=0)
    return max(recorded, status.last_evented_transition or 0)


def record(
    status: ModelDeploymentStatus, events: Iterable[Event], now: datetime
) -> ModelDeploymentStatus:
    """``status`` with ``events`` recorded as its newest transitions (numbered on from the
    last), the oldest dropped beyond ``TRANSITIONS_LIMIT``."""
    seq = last_seq(status)
    new = []
    for event in events:
        seq += 1
        new.append(
            RecordedTransition(
                seq=seq,
                type=event.type,
                reason=event.reason[:128],
                message=event.message[:1024],
                at=timestamp(now),
            )
        )
    if not new:
        return status
    transitions = [*status.transitions, *new][-TRANSITIONS_LIMIT:]
    return status.model_copy(update={"transitions": transitions})


def recorded_since(
    before: ModelDeploymentStatus, after: ModelDeploymentStatus
) -> tuple[Event, ...]:
    """The Events of the transitions ``after`` recorded on top of ``before``."""
    since = last_seq(before)
    return tuple(as_event(t) for t in after.transitions if t.seq > since)


def unevented(status: ModelDeploymentStatus) -> tuple[RecordedTransition, ...]:
    """The recorded transitions whose Event has not been posted yet, oldest first."""
    marker = status.last_evented_transition or 0
    return tuple(t for t in status.transitions if t.seq > marker)


def as_event(transition: RecordedTransition) -> Event:
    return Event(transition.type, transition.reason, transition.message)


def event_name(name: str, uid: str, seq: int) -> str:
    """The Event's name: the same for every attempt to post it, different for a resource of
    the same name created again (its uid differs)."""
    suffix = f".{(uid or 'nouid')[:8]}.{seq}"
    return name[: MAX_NAME - len(suffix)] + suffix


def evented(status: ModelDeploymentStatus, posted: Sequence[int]) -> int | None:
    """The new ``lastEventedTransition`` once the Events ``posted`` (their seq) are out: the
    highest seq below which every unevented transition was posted (None: unchanged)."""
    marker = status.last_evented_transition
    done = set(posted)
    for transition in unevented(status):
        if transition.seq not in done:
            break
        marker = transition.seq
    return marker if marker != status.last_evented_transition else None
