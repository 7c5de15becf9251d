"""The Prometheus client against a real Prometheus scraping a real metrics server."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analysis_prom import PrometheusProcess, Target, free_port, start_all
from modelship_operator.analysis.prometheus import PrometheusClient, parse_response
from modelship_operator.analysis.results import (
    NoValues,
    QueryError,
    QueryResult,
    Value,
    Vector,
)

LABELS = {"namespace": "ml"}


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusProcess, Target]]:
    target = Target(
        "stable",
        labels={**LABELS, "pod": "churn-stable-0"},
        metric_labels={
            "deployment": "churn",
            "model": "churn",
            "version": "1.4.0",
            "variant": "stable",
        },
    )
    target.serve(10, code=200)
    target.serve(3, code=503)
    target.predict_classes({"yes": 5, "no": 8})
    for p in start_all(tmp_path_factory.mktemp("prom"), [target]):
        yield p, target


def ask(url: str, promql: str, **kwargs: Any) -> QueryResult:
    async def run() -> QueryResult:
        async with PrometheusClient(url, **kwargs) as client:
            return await client.query(promql)

    return asyncio.run(run())


def test_one_series_is_a_value_with_its_labels(prom: tuple[PrometheusProcess, Target]) -> None:
    p, _ = prom
    result = ask(p.url, 'modelship_requests_total{code="503"}')
    assert isinstance(result, Value)
    assert result.value == 3
    assert result.labels["namespace"] == "ml"
    assert result.labels["variant"] == "stable"


def test_aggregated_query_and_scalar(prom: tuple[PrometheusProcess, Target]) -> None:
    p, _ = prom
    total = ask(p.url, 'sum(modelship_requests_total{namespace="ml"})')
    assert isinstance(total, Value) and total.value == 13
    scalar = ask(p.url, "scalar(sum(modelship_requests_total)) * 2")
    assert isinstance(scalar, Value) and scalar.value == 26 and scalar.labels == {}


def test_no_matching_series_is_no_values(prom: tuple[PrometheusProcess, Target]) -> None:
    p, _ = prom
    result = ask(p.url, 'sum(modelship_requests_total{variant="canary"})')
    assert isinstance(result, NoValues)
    assert "canary" in result.query


def test_several_series_are_refused_with_advice(prom: tuple[PrometheusProcess, Target]) -> None:
    p, _ = prom
    result = ask(p.url, "modelship_requests_total")
    assert isinstance(result, QueryError)
    assert result.kind == "multiple-series"
    assert "2 series" in result.message and "sum(" in result.message


def test_vector_query_returns_every_series(prom: tuple[PrometheusProcess, Target]) -> None:
    p, _ = prom

    async def run() -> Any:
        async with PrometheusClient(p.url) as client:
            return await client.query_vector("sum by (class) (modelship_predictions_total)")

    result = asyncio.run(run())
    assert isinstance(result, Vector)
    assert {s.labels["class"]: s.value for s in result.samples} == {"yes": 5, "no": 8}


@pytest.mark.parametrize(
    ("promql", "check"),
    [
        ("vector(0) / vector(0)", math.isnan),
        ("vector(1) / vector(0)", lambda v: v == math.inf),
        ("vector(-1) / vector(0)", lambda v: v == -math.inf),
        ("0 / 0", math.isnan),
    ],
)
def test_nan_and_inf_are_kept(
    prom: tuple[PrometheusProcess, Target], promql: str, check: Any
) -> None:
    p, _ = prom
    result = ask(p.url, promql)
    assert isinstance(result, Value)
    assert check(result.value)


def test_bad_query_carries_prometheus_message(prom: tuple[PrometheusProcess, Target]) -> None:
    p, _ = prom
    result = ask(p.url, "sum(rate(modelship_requests_total[1m]")
    assert isinstance(result, QueryError)
    assert result.kind == "bad-query"
    assert "parse error" in result.message


def test_range_vector_is_refused(prom: tuple[PrometheusProcess, Target]) -> None:
    p, _ = prom
    result = ask(p.url, "sum(modelship_requests_total)[1m:1s]")
    assert isinstance(result, QueryError)
    assert result.kind == "unexpected-result"
    assert "matrix" in result.message


def test_wrong_path_is_an_http_error(prom: tuple[PrometheusProcess, Target]) -> None:
    p, target = prom
    not_prometheus = ask(f"http://127.0.0.1:{target.port}", "vector(1)")
    assert isinstance(not_prometheus, QueryError) and not_prometheus.kind == "http"
    missing = ask(f"{p.url}/nope", "vector(1)")
    assert isinstance(missing, QueryError) and missing.kind == "http"
    assert "404" in missing.message


def test_evaluation_time_before_the_data_is_no_values(
    prom: tuple[PrometheusProcess, Target],
) -> None:
    from datetime import UTC, datetime, timedelta

    p, _ = prom

    async def run() -> QueryResult:
        async with PrometheusClient(p.url) as client:
            return await client.query(
                "sum(modelship_requests_total)", at=datetime.now(UTC) - timedelta(hours=2)
            )

    assert isinstance(asyncio.run(run()), NoValues)


def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshake; nobody ever reads
        port = listener.getsockname()[1]
        result = ask(f"http://127.0.0.1:{port}", "vector(1)", timeout=0.5)
    assert isinstance(result, QueryError)
    assert result.kind == "timeout"


def test_stopped_prometheus_is_offline_and_an_error(tmp_path: Path) -> None:
    target = Target(
        "t", labels=LABELS, metric_labels={"model": "m", "version": "1", "variant": "stable"}
    )
    runner = start_all(tmp_path, [target])
    p = next(runner)
    try:

        async def before() -> tuple[bool, QueryResult]:
            async with PrometheusClient(p.url) as client:
                return await client.is_online(), await client.query("vector(1)")

        online, value = asyncio.run(before())
        assert online and isinstance(value, Value)
        p.stop()

        async def after() -> tuple[bool, QueryResult]:
            async with PrometheusClient(p.url) as client:
                return await client.is_online(), await client.query("vector(1)")

        online, error = asyncio.run(after())
        assert not online
        assert isinstance(error, QueryError) and error.kind == "unreachable"
        assert f"127.0.0.1:{p.port}" in error.message
    finally:
        next(runner, None)


def test_nothing_listening_is_unreachable() -> None:
    result = ask(f"http://127.0.0.1:{free_port()}", "vector(1)")
    assert isinstance(result, QueryError) and result.kind == "unreachable"


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (200, b'{"status":"success","data":{"resultType":"string","result":[1,"x"]}}',
         "unexpected-result", "string"),
        (200, b'{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}',
         "http", "malformed"),
        (422, b'{"status":"error","errorType":"execution","error":"many-to-many matching"}',
         "execution", "many-to-many"),
        (503, b"<html>bad gateway</html>", "http", "HTTP 503"),
        (502, b'{"status":"error"}', "http", "HTTP 502"),
    ],
)  # fmt: skip
def test_answers_prometheus_rarely_gives(status: int, body: bytes, kind: str, words: str) -> None:
    """Shapes a real Prometheus does not produce on demand (a proxy in front, a newer API)."""
    result = parse_response(status, body, "q")
    assert isinstance(result, QueryError)
    assert result.kind == kind
    assert words in result.message
