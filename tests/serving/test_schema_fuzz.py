"""Schema-driven fuzz: requests generated from the server's own OpenAPI document (schemathesis)
against a real server process. Whatever a client sends, the answer is never a 5xx.

This complements test_fuzz.py (hand-written hypothesis strategies for near-valid bodies): here
every documented operation is exercised with bodies, paths and parameters derived from the
published schema, both conforming and not (negative mode), so a route added later is fuzzed
without writing a strategy for it.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from serving_helpers import Server

SERVED = {"name": "bc", "version": "1.4.0"}  # classifier_server's model


def served(case: schemathesis.Case) -> schemathesis.Case:
    """Point the path at the served model and version: random names only ever meet a 404, and
    the bodies are what this fuzz is for."""
    for key, value in SERVED.items():
        if case.path_parameters and key in case.path_parameters:
            case.path_parameters[key] = value
    return case


def test_no_generated_request_gets_a_5xx(classifier_server: Server) -> None:
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
        ).map(served)

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
