"""Events derived from the transitions recorded in status: numbering, bound, marker, names."""

from __future__ import annotations

from datetime import UTC, datetime

from modelship_operator.conditions import Event
from modelship_operator.events import (
    event_name,
    evented,
    last_seq,
    record,
    recorded_since,
    unevented,
)
from modelship_operator.status import TRANSITIONS_LIMIT, ModelDeploymentStatus

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_events_are_recorded_with_increasing_sequence_numbers_and_bounded() -> None:
    status = ModelDeploymentStatus()
    assert record(status, [], T0) is status
    one = record(status, [Event("Normal", "Idle", "x")], T0)
    two = record(one, [Event("Normal", "A", "a"), Event("Warning", "B", "b" * 2000)], T0)
    assert [(t.seq, t.reason) for t in two.transitions] == [(1, "Idle"), (2, "A"), (3, "B")]
    assert len(two.transitions[-1].message) == 1024
    assert [e.reason for e in recorded_since(one, two)] == ["A", "B"]
    assert [t.seq for t in unevented(two)] == [1, 2, 3]
    many = record(two, [Event("Normal", f"E{i}", "") for i in range(40)], T0)
    assert len(many.transitions) == TRANSITIONS_LIMIT
    assert many.transitions[-1].seq == 43 == last_seq(many)
    # Numbering goes on from the marker even when the list is empty.
    emptied = ModelDeploymentStatus(last_evented_transition=43)
    assert record(emptied, [Event("Normal", "X", "")], T0).transitions[0].seq == 44


def test_the_evented_marker_moves_only_past_posted_transitions() -> None:
    status = record(
        ModelDeploymentStatus(last_evented_transition=0),
        [Event("Normal", r, "") for r in "ABC"],
        T0,
    )
    assert evented(status, []) is None
    assert evented(status, [1, 3]) == 1  # 2 not out: it and what follows are tried again
    assert evented(status, [1, 2, 3]) == 3
    done = status.model_copy(update={"last_evented_transition": 3})
    assert unevented(done) == ()
    assert evented(done, []) is None


def test_event_names_are_deterministic_per_resource_and_sequence() -> None:
    assert event_name("churn", "0f3c9a2e-1111", 7) == "churn.0f3c9a2e.7"
    assert event_name("churn", "0f3c9a2e-1111", 7) != event_name("churn", "9d9d9d9d-2", 7)
    long = event_name("x" * 300, "0f3c9a2e", 123456)
    assert len(long) == 253 and long.endswith(".0f3c9a2e.123456")
