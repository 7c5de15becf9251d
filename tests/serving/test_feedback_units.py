"""Feedback counted per unit (the router's x-modelship-unit): the bounded set of counted
units, the scoring rules, and the two counters of a real server over every lane."""

from __future__ import annotations

import httpx
import numpy as np
import tritonclient.grpc as triton
from modelship_serving import contract as c
from modelship_serving.access import unit_from, unit_of
from modelship_serving.feedback import (
    MAX_COUNTED_UNITS,
    CountedUnits,
    PredictionStore,
    Stored,
    score_feedback,
)
from serving_helpers import Artifact, Server
from test_server import metric

UNIT_A = "0123456789abcdef"
UNIT_B = "fedcba9876543210"


def items(*pairs: tuple[str, list[object]]) -> dict[str, object]:
    return {"feedback": [{"request_id": rid, "labels": labels} for rid, labels in pairs]}


# --- pure ---------------------------------------------------------------------------------


def test_counted_units_are_bounded_and_forget_the_one_seen_longest_ago() -> None:
    assert MAX_COUNTED_UNITS == 100_000 and CountedUnits()._limit == MAX_COUNTED_UNITS
    units = CountedUnits(limit=3)
    assert [units.first(u) for u in ("a", "b", "c")] == [True, True, True]
    assert not units.first("a")  # seen again: now the most recent
    assert units.first("d")  # over the bound: "b" is forgotten
    assert len(units) == 3 and "b" not in units and "a" in units
    assert units.first("b")  # a forgotten unit counts again


def test_a_unit_counts_once_on_its_first_joined_feedback() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("a1", [1, 0], unit=UNIT_A)
    store.put("a2", [0], unit=UNIT_A)
    store.put("b1", [1], unit=UNIT_B)
    store.put("loose", [1])  # no unit: a unit of its own
    assert store.take("a2") == Stored([0], False, None, UNIT_A)
    store.put("a2", [0], unit=UNIT_A)
    counted = CountedUnits()
    # a1's first row is wrong (its second is right): the unit is counted, not as correct.
    first = score_feedback(items(("a1", [0, 0]), ("a2", [0])), store, False, (), None, counted)
    assert (first.units, first.units_correct) == (1, 0)
    assert (first.rows, first.correct) == (3, 2)
    second = score_feedback(items(("b1", [1]), ("loose", [1])), store, False, (), None, counted)
    assert (second.units, second.units_correct) == (2, 2)
    assert UNIT_A in counted and UNIT_B in counted and len(counted) == 2
    # Unjoined and mismatched feedback counts no unit.
    store.put("c1", [1, 1], unit="c")
    third = score_feedback(items(("c1", [1]), ("nope", [1])), store, False, (), None, counted)
    assert third.units == 0 and "c" not in counted


def test_pinned_rows_never_count_as_units() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("tester", [1], pinned=True, unit=UNIT_A)
    store.put("tester-loose", [1], pinned=True)
    store.put("user", [1], unit=UNIT_A)
    counted = CountedUnits()
    pinned = score_feedback(
        items(("tester", [1]), ("tester-loose", [1])), store, False, (), None, counted
    )
    assert (pinned.units, pinned.units_correct, pinned.pinned_rows) == (0, 0, 2)
    assert UNIT_A not in counted
    # The same unit's own unpinned feedback still counts it.
    user = score_feedback(items(("user", [1])), store, False, (), None, counted)
    assert (user.units, user.units_correct) == (1, 1)


def test_regressors_count_units_but_never_correct() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("r1", [10.0], unit=UNIT_A)
    store.put("r2", [20.0], unit=UNIT_A)
    store.put("r3", [30.0])
    result = score_feedback(
        items(("r1", [10.0]), ("r2", [20.0]), ("r3", [30.0])), store, True, (), None, CountedUnits()
    )
    assert (result.units, result.units_correct) == (2, 0)


def test_without_a_counted_set_no_units() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("a", [1], unit=UNIT_A)
    assert score_feedback(items(("a", [1])), store, False).units == 0


def test_the_unit_header_absent_empty_or_oversized_is_no_unit() -> None:
    assert c.UNIT_HEADER == "x-modelship-unit" and c.MAX_UNIT_LENGTH == 64
    assert unit_of([(b"x-other", b"1")]) is None
    assert unit_of([(b"x-modelship-unit", b"")]) is None
    assert unit_of([(b"x-modelship-unit", b"u" * 64)]) == "u" * 64
    assert unit_of([(b"x-modelship-unit", b"u" * 65)]) is None
    assert unit_of([(b"x-a", b"1"), (b"x-modelship-unit", UNIT_A.encode())]) == UNIT_A
    assert unit_from(UNIT_B) == UNIT_B and unit_from(None) is None
    assert {c.FEEDBACK_UNITS, c.FEEDBACK_UNITS_CORRECT} <= c.COUNTERS


# --- a real server ------------------------------------------------------------------------

LABELS = {"model": "bc", "version": "1.4.0", "variant": "canary"}


def units(server: Server) -> tuple[float, float]:
    return (
        metric(server, "modelship_feedback_units_total", **LABELS),
        metric(server, "modelship_feedback_units_correct_total", **LABELS),
    )


def post(server: Server, path: str, body: dict[str, object], **headers: str) -> httpx.Response:
    response = server.client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_units_over_every_lane_of_a_real_server(
    classifier_server: Server, classifier: Artifact
) -> None:
    server = classifier_server
    text = server.client.get("/metrics").text
    # Exported at zero from the start, with the base labels only.
    for name in ("modelship_feedback_units_total", "modelship_feedback_units_correct_total"):
        assert any(line.startswith(name + "{") for line in text.splitlines()), name
    X, y = classifier.X, classifier.y
    predicted = classifier.estimator.predict(X[:10])  # type: ignore[attr-defined]
    before = units(server)
    row, batch = {"instances": X[:1].tolist()}, {"instances": X[:5].tolist()}
    v2 = {"inputs": [{"name": "x", "shape": [3, 30], "datatype": "FP64",
                      "data": X[:3].ravel().tolist()}]}  # fmt: skip
    # Unit A: the protocol lane (one row), then the ASGI lane (a batch): one unit.
    post(server, "/v1/models/bc:predict", row, **{"x-request-id": "ua-1", c.UNIT_HEADER: UNIT_A})
    post(server, "/v1/models/bc:predict", batch, **{"x-request-id": "ua-2", c.UNIT_HEADER: UNIT_A})
    # Unit B over V2, and unit C over gRPC metadata.
    post(server, "/v2/models/bc/infer", v2, **{"x-request-id": "ub-1", c.UNIT_HEADER: UNIT_B})
    with triton.InferenceServerClient(server.grpc_target) as grpc_client:
        tensor = triton.InferInput("input-0", [2, 30], "FP64")
        tensor.set_data_from_numpy(X[:2])
        for rid in ("uc-1", "uc-2"):
            grpc_client.infer(
                "bc", [tensor], headers={"x-request-id": rid, c.UNIT_HEADER: "c" * 16}
            )
    # An oversized unit is no unit: the request is a unit of its own, as one without.
    post(server, "/v1/models/bc:predict", row, **{"x-request-id": "big", c.UNIT_HEADER: "x" * 65})
    post(server, "/v1/models/bc:predict", row, **{"x-request-id": "none"})
    wrong = int(1 - y[0])
    answer = post(
        server,
        "/v1/models/bc:feedback",
        {
            "feedback": [
                {"request_id": "ua-1", "labels": y[:1].tolist()},
                {"request_id": "ua-2", "labels": y[:5].tolist()},
                {"request_id": "ub-1", "labels": [wrong, *y[1:3].tolist()]},
                {"request_id": "uc-1", "labels": y[:2].tolist()},
                {"request_id": "uc-2", "labels": y[:2].tolist()},
                {"request_id": "big", "labels": y[:1].tolist()},
                {"request_id": "none", "labels": y[:1].tolist()},
            ]
        },
    ).json()
    assert answer["matched"] == 7
    first_right = int(predicted[0] == y[0])
    # A, B (first row wrong), C, and two units of their own.
    expected = (5, first_right * 4 + int(predicted[0] == wrong))
    after = units(server)
    assert (after[0] - before[0], after[1] - before[1]) == expected
    # Feedback for unit A again (a new prediction): not counted twice.
    post(server, "/v1/models/bc:predict", row, **{"x-request-id": "ua-3", c.UNIT_HEADER: UNIT_A})
    post(
        server,
        "/v1/models/bc:feedback",
        {"feedback": [{"request_id": "ua-3", "labels": y[:1].tolist()}]},
    )
    assert units(server) == after
    # A pinned request with a new unit never counts.
    post(
        server,
        "/v1/models/bc:predict",
        row,
        **{"x-request-id": "pin", c.UNIT_HEADER: "d" * 16, "x-modelship-pinned": "1"},
    )
    post(
        server,
        "/v1/models/bc:feedback",
        {"feedback": [{"request_id": "pin", "labels": y[:1].tolist()}]},
    )
    assert units(server) == after
    assert np.isfinite(after).all()
