"""How the analysis reaches Prometheus: the URL, extra headers and credentials of one
ModelDeployment's queries, and the HTTP client that trusts the configured CA.

Credentials are the operator's (``MODELSHIP_OPERATOR_PROMETHEUS_BEARER_TOKEN_FILE`` or basic
auth, mounted from a Secret by the chart) and go only to the operator's own Prometheus URL:
a ModelDeployment that sets ``spec.prometheus.url`` gets its queries sent there without them,
so nobody who can write a resource can have the operator hand its token to a server of their
choosing. The files are read at every query: a rotated Secret takes effect without a
restart. A path prefix (``https://mimir.example/prometheus``) is part of the URL.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment

DEFAULT_TIMEOUT: Final = 5.0


class CredentialsError(Exception):
    """A credentials file cannot be read (its message says which and why)."""


@dataclass(frozen=True)
class Access:
    """Where one resource's queries go and what they carry."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    bearer_token_file: Path | None = None
    basic_auth: tuple[str, Path] | None = None  # (user, password file)

    @property
    def credentials(self) -> str:
        """What credentials the queries carry, for messages (never the secret itself)."""
        if self.bearer_token_file is not None:
            return f"the bearer token in {self.bearer_token_file}"
        if self.basic_auth is not None:
            return f"basic auth as {self.basic_auth[0]!r} (password in {self.basic_auth[1]})"
        return "no credentials"

    def request_headers(self) -> dict[str, str]:
        """The headers of one query; raises CredentialsError when a file cannot be read."""
        headers = dict(self.headers)
        if self.bearer_token_file is not None:
            headers["Authorization"] = f"Bearer {_read(self.bearer_token_file)}"
        elif self.basic_auth is not None:
            user, password_file = self.basic_auth
            pair = f"{user}:{_read(password_file)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers


def _read(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not value:
        raise CredentialsError(f"{path} is empty")
    return value


def access_for(md: ModelDeployment, settings: OperatorSettings) -> Access:
    """The access of MD's queries: its own URL (no credentials) or the operator's (with
    them); the operator's headers, then the resource's (which win)."""
    prometheus = md.spec.prometheus
    headers = {**settings.prometheus_headers, **prometheus.headers}
    own_url = prometheus.url
    if own_url and own_url.rstrip("/") != settings.prometheus_url.rstrip("/"):
        return Access(url=own_url, headers=headers)
    basic = None
    if settings.prometheus_basic_auth_username and settings.prometheus_basic_auth_password_file:
        basic = (
            settings.prometheus_basic_auth_username,
            settings.prometheus_basic_auth_password_file,
        )
    return Access(
        url=settings.prometheus_url,
        headers=headers,
        bearer_token_file=settings.prometheus_bearer_token_file,
        basic_auth=basic,
    )


def http_client(settings: OperatorSettings, timeout: float = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """The client every resource's queries share: system CAs plus the configured one."""
    verify: ssl.SSLContext | bool = True
    if settings.prometheus_ca_file is not None:
        verify = ssl.create_default_context()
        verify.load_verify_locations(cafile=str(settings.prometheus_ca_file))
    return httpx.AsyncClient(timeout=timeout, verify=verify)
