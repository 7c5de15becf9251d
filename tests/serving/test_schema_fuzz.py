"""Schema-driven fuzz: requests generated from the server's own OpenAPI document (schemathesis)
against a real server process. Whatever a client sends, the answer is never a 5xx.

This complements test_fuzz.py (hand-written hypothesis strategies for near-valid bodies): here
every documented operation is exercised with bodies, paths and parameters derived from the
published schema, both conforming and not (negative mode), so a route added later is fuzzed
without writing a strategy for it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from serving_helpers import Server

# The served model and version of each server: the numeric classifier and a tabular pipeline.
SERVED = {
    "classifier_server": {"name": "bc", "version": "1.4.0"},
    "churn_server": {"name": "churn", "version": "0"},
}


def served(model: dict[str, str]) -> Callable[[schemathesis.Case], schemathesis.Case]:
    """Point the path at the served model and version: random names only ever meet a 404, and
    the bodies are what this fuzz is for."""

    def point(case: schemathesis.Case) -> schemathesis.Case:
        for key, value in model.items():
            if case.path_parameters and key in case.path_parameters:
                case.path_parameters[key] = value
        return case

    return point


@pytest.mark.parametrize("fixture", sorted(SERVED))
def test_no_generated_request_gets_a_5xx(fixture: str, request: pytest.FixtureRequest) -> None:
    classifier_server: Server = request.getfixturevalue(fixture)
    schema = schemathesis.openapi.from_url(f"{classifier_server.base}/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/models/{name}:predict",
        "/v2/models/{name}/infer",
    }
    seen: set[str] = set()

    for operation in operations:
        strategy = (
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
            | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        ).map(served(SERVED[fixture]))

        @given(case=strategy)
        @settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=classifier_server.base, timeout=30)
            seen.add(f"{case.method} {case.path}")
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            if 400 <= response.status_code < 500:
                assert response.json().get("error"), response.text[:300]

        call()
    assert len(seen) == len(operations)
