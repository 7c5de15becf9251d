"""What a metrics query answers, as values the analysis judges (no I/O here).

* :class:`Value` - the query returned exactly one sample (or a scalar). NaN and +/-Inf are
  kept as the floats they are; judging them is :mod:`.verdict`'s job (NaN never passes).
* :class:`NoValues` - the query ran and matched no series (no traffic yet, a typo in a label).
* :class:`QueryError` - the backend unreachable or timing out, an HTTP error, a query it
  refused (with its own error message), or an answer of the wrong shape.
* :class:`Vector` - every series of an instant vector, for the callers that want them.

:class:`MetricsSource` is the seam: :class:`.prometheus.PrometheusClient` implements it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

ErrorKind = Literal[
    "unreachable",  # connection refused, DNS failure, TLS failure
    "timeout",  # no answer within the client's timeout
    "http",  # an HTTP error or a body that is not Prometheus' JSON
    "refused",  # HTTP 401 or 403: our credentials are missing, wrong or not allowed
    "credentials",  # a credentials file the operator cannot read
    "bad-query",  # Prometheus refused the query (errorType bad_data): fix the PromQL
    "execution",  # Prometheus accepted the query but failed running it
    "unexpected-result",  # a range vector or string where a number was expected
    "multiple-series",  # several series where one number was expected
]


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and value."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Value:
    """Exactly one number. ``labels`` are those of the series (empty for a scalar)."""

    value: float
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_nan(self) -> bool:
        return math.isnan(self.value)


@dataclass(frozen=True)
class NoValues:
    """The query ran and matched nothing."""

    query: str


@dataclass(frozen=True)
class QueryError:
    """The query could not be answered; ``message`` says why, in Prometheus' words if any."""

    kind: ErrorKind
    message: str
    query: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class Vector:
    """Every sample of an instant vector (possibly none)."""

    samples: tuple[Sample, ...]


QueryResult = Value | NoValues | QueryError
VectorResult = Vector | QueryError


class MetricsSource(Protocol):
    """What the analysis needs from a metrics backend."""

    async def query(self, promql: str, at: datetime | None = None) -> QueryResult: ...

    async def query_vector(self, promql: str, at: datetime | None = None) -> VectorResult: ...

    async def is_online(self) -> bool: ...
