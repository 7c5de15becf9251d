"""A small Prometheus HTTP API client: one PromQL query in, one typed answer out.

The seam the analysis needs is tiny (the lesson of Flagger's providers): run an instant query
and get back a number, "no values", or an error that says what went wrong, plus "is the server
there at all". Every failure is a value, never an exception, because to the rollout an error
is a verdict (Error) that counts toward a limit, not a crash.

Answers (the types live in :mod:`.results`, which the pure verdict and shadow modules
import without this client):

* :class:`Value` - the query returned exactly one sample (or a scalar). NaN and +/-Inf are
  kept as the floats they are; judging them is :mod:`.verdict`'s job (NaN never passes).
* :class:`NoValues` - the query ran and matched no series (no traffic yet, a typo in a label).
* :class:`QueryError` - Prometheus unreachable or timing out, an HTTP error, or a query it
  refused (with Prometheus' own error message), or an answer of the wrong shape.

Several series where one number is expected is refused (a ``QueryError`` of kind
``multiple-series``), not summed: summing silently is wrong for ratios and quantiles (three
pods at 99 % success do not make 297 %), so the user is told to aggregate in PromQL.
:meth:`PrometheusClient.query_vector` returns every series for the callers that want them
(class distributions in shadow analysis).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final

import httpx

from modelship_operator.analysis.access import Access, CredentialsError
from modelship_operator.analysis.results import (
    ErrorKind,
    NoValues,
    QueryError,
    QueryResult,
    Sample,
    Value,
    Vector,
    VectorResult,
)

DEFAULT_TIMEOUT: Final = 5.0
#: Longest error text kept (it ends up in status and Events).
MAX_MESSAGE: Final = 400


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _number(raw: Any) -> float:
    """A sample value as Prometheus writes it: a string, possibly NaN, +Inf or -Inf."""
    return float(raw)


def parse_response(status_code: int, body: bytes, promql: str) -> VectorResult | Value:
    """Turn an HTTP answer of ``/api/v1/query`` into a vector, a scalar value or an error."""
    try:
        payload = httpx.Response(status_code, content=body).json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        snippet = body[:200].decode("utf-8", "replace")
        return QueryError(
            "http", _clip(f"HTTP {status_code}, not Prometheus JSON: {snippet}"), promql
        )
    if payload.get("status") != "success":
        error_type = str(payload.get("errorType", ""))
        message = str(payload.get("error") or f"HTTP {status_code}")
        kind: ErrorKind = "bad-query" if error_type == "bad_data" else "execution"
        if not error_type:
            kind = "http"
        return QueryError(
            kind, _clip(f"{error_type}: {message}" if error_type else message), promql
        )
    data = payload.get("data") or {}
    result_type = data.get("resultType")
    result: Any = data.get("result")
    try:
        if result_type == "vector":
            samples = tuple(
                Sample(labels=dict(item.get("metric") or {}), value=_number(item["value"][1]))
                for item in result or ()
            )
            return Vector(samples)
        if result_type == "scalar":
            return Value(_number(result[1]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return QueryError("http", _clip(f"malformed result from Prometheus: {exc!r}"), promql)
    return QueryError(
        "unexpected-result",
        f"the query returned a {result_type}; it must return an instant vector or a scalar "
        "(a range selector like [5m] needs a function such as rate() or increase())",
        promql,
    )


def one_value(result: VectorResult | Value, promql: str) -> QueryResult:
    """Reduce a vector to the single number a check needs (refusing several series)."""
    if isinstance(result, (Value, QueryError)):
        return result
    samples = result.samples
    if not samples:
        return NoValues(promql)
    if len(samples) > 1:
        shown = ", ".join(_series_name(s.labels) for s in samples[:3])
        more = f" and {len(samples) - 3} more" if len(samples) > 3 else ""
        return QueryError(
            "multiple-series",
            f"the query returned {len(samples)} series ({shown}{more}); it must return one "
            "number: aggregate it, e.g. sum(...) or max(...)",
            promql,
        )
    return Value(samples[0].value, samples[0].labels)


def _series_name(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class PrometheusClient:
    """Async client of one Prometheus server (instant queries over ``/api/v1/query``).

    ``target`` is a base URL (a path prefix included) or an :class:`.access.Access` with
    the headers and credentials to send. ``client`` lets the caller share one
    ``httpx.AsyncClient`` (connection pooling across ModelDeployments); otherwise the
    client owns one and closes it in :meth:`aclose`.
    """

    def __init__(
        self,
        target: str | Access,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.access = target if isinstance(target, Access) else Access(url=target)
        self.url = self.access.url.rstrip("/")
        self.timeout = timeout
        self._owned = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def _post(self, promql: str, at: datetime | None) -> VectorResult | Value:
        form = {"query": promql}
        if at is not None:
            form["time"] = f"{at.timestamp():.3f}"
        try:
            headers = self.access.request_headers()
        except CredentialsError as exc:
            return QueryError("credentials", _clip(f"Prometheus credentials: {exc}"), promql)
        try:
            response = await self._client.post(
                f"{self.url}/api/v1/query", data=form, headers=headers, timeout=self.timeout
            )
        except httpx.TimeoutException as exc:
            return QueryError(
                "timeout",
                _clip(f"no answer from {self.url} in {self.timeout:g}s ({exc!r})"),
                promql,
            )
        except httpx.HTTPError as exc:
            return QueryError("unreachable", _clip(f"{self.url}: {exc!r}"), promql)
        if response.status_code in (401, 403):
            return QueryError("refused", self._refused(response), promql)
        return parse_response(response.status_code, response.content, promql)

    def _refused(self, response: httpx.Response) -> str:
        """Why Prometheus (or the proxy before it) refused us, naming what we sent."""
        reason = response.reason_phrase or (
            "Unauthorized" if response.status_code == 401 else "Forbidden"
        )
        body = " ".join(response.content[:200].decode("utf-8", "replace").split())
        return _clip(
            f"{self.url} refused the query: HTTP {response.status_code} {reason}"
            + (f" ({body})" if body and body.lower() != reason.lower() else "")
            + f"; the operator sent {self.access.credentials}: check the Prometheus "
            "credentials (chart value prometheus.auth, or MODELSHIP_OPERATOR_PROMETHEUS_"
            "BEARER_TOKEN_FILE / _BASIC_AUTH_*)"
        )

    async def query_vector(self, promql: str, at: datetime | None = None) -> VectorResult:
        """Every series the instant query returns at ``at`` (default: now)."""
        result = await self._post(promql, at)
        if isinstance(result, Value):
            return Vector((Sample({}, result.value),))
        return result

    async def query(self, promql: str, at: datetime | None = None) -> QueryResult:
        """The query's single value at ``at`` (default: now), no values, or an error."""
        return one_value(await self._post(promql, at), promql)

    async def is_online(self) -> bool:
        """Whether Prometheus answers a trivial query (the API works, not just the port)."""
        result = await self.query("vector(1)")
        return isinstance(result, Value) and result.value == 1
