"""Shadow agreement: does a mirrored copy's answer predict what the client's answer did?

Pure. The proxy calls :func:`compare` in a shadow copy's own task, after the client already
has its answer, with the primary response (what the client got) and the shadow's response
to the same request. The result feeds ``modelship_router_shadow_predictions_total`` (rows
that agree or disagree) or ``modelship_router_shadow_incomparable_total`` (why the two could
not be compared), which the operator's shadow analysis reads as an exact agreement rate.

Rows are the elements of V1's ``predictions`` or of each V2 ``outputs[].data`` (matched by
output name). Integers, strings, booleans and nulls must be equal; floats may differ by
``1e-6 * max(1, |a|)`` (the same model on two machines may round differently); lists and
objects are equal when every element is. When the two answers have different row counts
(or an output only one of them has), every row of the longer one disagrees: no row can be
paired reliably.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

# The result and reason label values are the metrics contract's.
from modelship_router.contract import (
    AGREE,
    DISAGREE,
    NO_PREDICTIONS,
    NOT_JSON,
    PRIMARY_ERROR,
    SHADOW_ERROR,
)
from modelship_router.contract import INCOMPARABLE_REASONS as REASONS

__all__ = ["AGREE", "DISAGREE", "NOT_JSON", "NO_PREDICTIONS", "PRIMARY_ERROR", "REASONS",
           "SHADOW_ERROR", "Comparison", "compare", "is_prediction"]  # fmt: skip

#: Relative tolerance for floats (absolute below 1).
FLOAT_TOLERANCE: Final = 1e-6


def is_prediction(url: bytes) -> bool:
    """Whether a request path asks for predictions: V1 ``/v1/models/<m>:predict`` or V2
    ``/v2/models/<m>[/versions/<v>]/infer`` (feedback, metadata and probes are not)."""
    path = url.partition(b"?")[0].rstrip(b"/")
    return path.endswith((b":predict", b"/infer"))


@dataclass(frozen=True, slots=True)
class Comparison:
    """Rows that agreed and disagreed, or why the answers could not be compared."""

    agree: int = 0
    disagree: int = 0
    incomparable: str | None = None


def compare(
    primary_status: int | None,
    primary_body: bytes,
    shadow_status: int | None,
    shadow_body: bytes,
) -> Comparison:
    """Compare the client's answer with the shadow's answer to the same request.

    A status of None means no answer (connection failure, timeout)."""
    if primary_status is None or not 200 <= primary_status < 300:
        return Comparison(incomparable=PRIMARY_ERROR)
    if shadow_status is None or not 200 <= shadow_status < 300:
        return Comparison(incomparable=SHADOW_ERROR)
    try:
        primary = json.loads(primary_body)
        shadow = json.loads(shadow_body)
    except (ValueError, UnicodeDecodeError):
        return Comparison(incomparable=NOT_JSON)
    a, b = _rows(primary), _rows(shadow)
    if a is None or b is None:
        return Comparison(incomparable=NO_PREDICTIONS)
    agree = disagree = 0
    for name in a.keys() | b.keys():
        left, right = a.get(name, []), b.get(name, [])
        if len(left) != len(right):
            disagree += max(len(left), len(right))
            continue
        same = sum(1 for x, y in zip(left, right, strict=True) if equal(x, y))
        agree += same
        disagree += len(left) - same
    return Comparison(agree, disagree)


def _rows(payload: Any) -> dict[str, list[Any]] | None:
    """Rows per output: V1 ``predictions`` as one output, V2 ``outputs`` by name."""
    if not isinstance(payload, dict):
        return None
    predictions = payload.get("predictions")
    if isinstance(predictions, list):
        return {"": predictions}
    outputs = payload.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return None
    rows: dict[str, list[Any]] = {}
    for i, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("data"), list):
            return None
        name = output.get("name")
        rows[name if isinstance(name, str) else f"#{i}"] = output["data"]
    return rows


def equal(a: Any, b: Any) -> bool:
    """Whether two predicted values are the same (floats within the tolerance)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= FLOAT_TOLERANCE * max(1.0, abs(a))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)
