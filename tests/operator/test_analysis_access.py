"""Prometheus access as in production: credentials, headers, CA, path prefix.

The settings and the rule of where credentials go are unit-tested; the queries run against a
real Prometheus that requires basic auth through its own ``--web.config.file`` and serves its
API under a path prefix, and against the same Prometheus behind a bearer-token gateway (a
small reverse proxy standing in for the token-checking front of a managed or multi-tenant
Prometheus: Mimir, Cortex, Thanos, an OAuth proxy).
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from analysis_prom import PrometheusProcess, Target, free_port, start_all
from mdep_fixtures import SHA_CANARY, base_resource, rolling_out
from modelship_operator.analysis.access import Access, CredentialsError, access_for
from modelship_operator.analysis.prometheus import PrometheusClient
from modelship_operator.analysis.results import QueryError, QueryResult, Value
from modelship_operator.analysis.runner import analyse
from modelship_operator.rollout import RolloutState, target
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from pydantic import ValidationError

USER, PASSWORD = "analysis", "s3cret-analysis"
#: bcrypt of PASSWORD (cost 4, made once with Python's crypt module, METHOD_BLOWFISH).
PASSWORD_BCRYPT = "$2b$04$V/DWKWb659qwyd3ysclihePX7UivhjHy5r4OiDzd.7JCx6Y5rQ76W"
PREFIX = "/prometheus"
TOKEN, TENANT = "t0ken-for-analysis", "team-a"
QUERY = 'sum(modelship_requests_total{namespace="ml"})'


# --- where credentials go (pure) -----------------------------------------------------------


def md_with(**prometheus: Any) -> ModelDeployment:
    return ModelDeployment.from_api(base_resource(prometheus=prometheus))


OPERATOR_URL = "http://prometheus.monitoring.svc:9090"


def settings(**fields: Any) -> OperatorSettings:
    return OperatorSettings(prometheus_url=OPERATOR_URL, **fields)


def test_the_operators_credentials_go_to_its_own_prometheus_only(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    s = settings(prometheus_bearer_token_file=token)
    default = access_for(md_with(), s)
    assert default.url == OPERATOR_URL and default.bearer_token_file == token
    # The same server named by the resource: still the operator's (credentials included).
    same = access_for(md_with(url=OPERATOR_URL + "/"), s)
    assert same.bearer_token_file == token
    # Any other server a resource names gets no credentials of the operator's.
    other = access_for(md_with(url="http://prometheus.team-a:9090"), s)
    assert other.url == "http://prometheus.team-a:9090"
    assert other.bearer_token_file is None and other.basic_auth is None
    assert "Authorization" not in other.request_headers()


def test_headers_are_the_operators_then_the_resources() -> None:
    s = settings(prometheus_headers={"X-Scope-OrgID": "platform", "X-Extra": "1"})
    access = access_for(md_with(headers={"X-Scope-OrgID": TENANT}), s)
    assert access.request_headers() == {"X-Scope-OrgID": TENANT, "X-Extra": "1"}


def test_token_and_password_files_are_read_at_every_query(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    access = Access(url=OPERATOR_URL, bearer_token_file=token)
    assert access.request_headers()["Authorization"] == f"Bearer {TOKEN}"
    token.write_text("rotated")
    assert access.request_headers()["Authorization"] == "Bearer rotated"
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    basic = Access(url=OPERATOR_URL, basic_auth=(USER, password))
    assert basic.request_headers()["Authorization"] == "Basic YW5hbHlzaXM6czNjcmV0LWFuYWx5c2lz"
    assert PASSWORD not in basic.credentials and USER in basic.credentials


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_credentials_file_is_an_error_naming_it(
    tmp_path: Path, content: str | None
) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    with pytest.raises(CredentialsError, match=str(token)):
        Access(url=OPERATOR_URL, bearer_token_file=token).request_headers()


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"prometheus_basic_auth_username": USER}, "needs both"),
        ({"prometheus_basic_auth_password_file": "/p"}, "needs both"),
        (
            {
                "prometheus_bearer_token_file": "/t",
                "prometheus_basic_auth_username": USER,
                "prometheus_basic_auth_password_file": "/p",
            },
            "not both",
        ),
        ({"prometheus_headers": {"Authorization": "Bearer x"}}, "bearer token file or basic"),
        ({"prometheus_headers": {"Bad Header": "x"}}, "not an HTTP header name"),
        ({"prometheus_headers": {"X-A": "a\r\nX-B: b"}}, "line break"),
    ],
)
def test_settings_refuse_half_or_conflicting_credentials(
    fields: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        settings(**fields)


def test_a_resource_cannot_set_authorization_or_bad_headers() -> None:
    for headers, complaint in (
        ({"Authorization": "Basic eA=="}, "set by the operator itself"),
        ({"X Tenant": "a"}, "not an HTTP header name"),
    ):
        with pytest.raises(ValidationError, match=complaint):
            md_with(headers=headers)


# --- against a real Prometheus that requires credentials -------------------------------------


class TokenGateway:
    """A reverse proxy that answers 401 unless the request carries ``Bearer TOKEN`` and the
    tenant header, then forwards to Prometheus (what a gateway in front of a managed or
    multi-tenant Prometheus does); it records the tenant of each forwarded request."""

    def __init__(self, upstream: PrometheusProcess) -> None:
        self.port = free_port()
        self.tenants: list[str] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401, b"invalid bearer token\n")
                    return
                tenant = self.headers.get("X-Scope-OrgID")
                if tenant != TENANT:
                    self._answer(403, b"no access to tenant\n")
                    return
                gateway.tenants.append(tenant)
                request = urllib.request.Request(
                    upstream.url + self.path.removeprefix(PREFIX),
                    data=body,
                    headers={
                        "Content-Type": self.headers.get("Content-Type", ""),
                        "Authorization": upstream.auth_header or "",
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as answer:
                        self._answer(answer.status, answer.read())
                except urllib.error.HTTPError as error:
                    self._answer(error.code, error.read())

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def __enter__(self) -> TokenGateway:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    pods = Target(
        "pods",
        labels={"namespace": "ml", "pod": "churn-0"},
        metric_labels={"deployment": "churn", "model": "churn", "version": "1.4.0",
                       "variant": "stable"},
    )  # fmt: skip
    pods.serve(7)
    workdir = tmp_path_factory.mktemp("prom-auth")
    yield from start_all(
        workdir, [pods], basic_auth=(USER, PASSWORD, PASSWORD_BCRYPT), route_prefix=PREFIX
    )


def ask(access: Access, promql: str = QUERY) -> QueryResult:
    async def run() -> QueryResult:
        async with PrometheusClient(access, timeout=5) as client:
            return await client.query(promql)

    return asyncio.run(run())


def basic(tmp_path: Path, url: str, password: str) -> Access:
    path = tmp_path / "password"
    path.write_text(password)
    return Access(url=url, basic_auth=(USER, path))


def test_basic_auth_and_a_path_prefix_reach_the_api(
    prom: PrometheusProcess, tmp_path: Path
) -> None:
    assert prom.url.endswith(PREFIX)
    result = ask(basic(tmp_path, prom.url, PASSWORD))
    assert isinstance(result, Value) and result.value == 7


def test_a_wrong_password_is_a_refusal_that_names_the_credentials(
    prom: PrometheusProcess, tmp_path: Path
) -> None:
    result = ask(basic(tmp_path, prom.url, "Xyzzy-bad-pw"))
    assert isinstance(result, QueryError) and result.kind == "refused"
    assert "HTTP 401" in result.message
    assert f"basic auth as {USER!r}" in result.message
    assert "Xyzzy" not in result.message  # never the secret itself
    nothing = ask(Access(url=prom.url))
    assert isinstance(nothing, QueryError) and nothing.kind == "refused"
    assert "no credentials" in nothing.message


def test_an_unreadable_password_file_is_an_error_before_any_request(
    prom: PrometheusProcess, tmp_path: Path
) -> None:
    result = ask(Access(url=prom.url, basic_auth=(USER, tmp_path / "missing")))
    assert isinstance(result, QueryError) and result.kind == "credentials"
    assert str(tmp_path / "missing") in result.message


def test_a_bearer_token_and_tenant_header_through_a_gateway(
    prom: PrometheusProcess, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    with TokenGateway(prom) as gateway:
        token.write_text(TOKEN)
        good = ask(Access(url=gateway.url, headers={"X-Scope-OrgID": TENANT},
                          bearer_token_file=token))  # fmt: skip
        assert isinstance(good, Value) and good.value == 7
        assert gateway.tenants == [TENANT]
        other_tenant = ask(Access(url=gateway.url, headers={"X-Scope-OrgID": "team-b"},
                                  bearer_token_file=token))  # fmt: skip
        assert isinstance(other_tenant, QueryError) and other_tenant.kind == "refused"
        assert "HTTP 403" in other_tenant.message and "no access to tenant" in other_tenant.message
        token.write_text("expired")
        expired = ask(Access(url=gateway.url, headers={"X-Scope-OrgID": TENANT},
                             bearer_token_file=token))  # fmt: skip
        assert isinstance(expired, QueryError) and expired.kind == "refused"
        assert f"the bearer token in {token}" in expired.message
        assert "invalid bearer token" in expired.message


def test_a_refused_analysis_is_an_error_verdict_naming_it_never_a_pass(
    prom: PrometheusProcess, tmp_path: Path
) -> None:
    """What the rollout sees: every check Error with the refusal as its reason (the rollout
    decision pauses the rollout with it after maxConsecutiveErrors; it never promotes on it)."""
    body = base_resource(strategy={"interval": "10s", "minSamples": 1})
    candidate = {"version": "1.5.0", "uri": "file:///models/x.skops", "sha256": SHA_CANARY}
    md = ModelDeployment.from_api(rolling_out(body, candidate))
    key = target(md).key
    assert key is not None
    now = datetime.now(UTC)
    state = RolloutState.begin(key, None, now - timedelta(seconds=30))

    async def run() -> Any:
        async with PrometheusClient(basic(tmp_path, prom.url, "wrong"), timeout=5) as client:
            return await analyse(md, state, client, now)

    analysis = asyncio.run(run())
    assert analysis.checks
    assert {c.verdict for c in analysis.checks} == {"Error"}
    assert all("refused the query: HTTP 401" in c.summary for c in analysis.checks)
