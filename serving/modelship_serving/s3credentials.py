"""Where the S3 credentials come from, in the AWS SDKs' order: an access key in the
environment, else a web identity token exchanged for temporary credentials (IRSA-style
AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), else none (anonymous requests)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from .errors import ModelLoadError
from .retries import TransientError, with_retries
from .sigv4 import Credentials

_STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


def static_credentials(env: Mapping[str, str]) -> Credentials | None:
    """AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), or None if unset."""
    key_id = env.get("AWS_ACCESS_KEY_ID", "").strip()
    secret = env.get("AWS_SECRET_ACCESS_KEY", "").strip()
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        missing = "AWS_ACCESS_KEY_ID" if not key_id else "AWS_SECRET_ACCESS_KEY"
        raise ModelLoadError(
            f"S3 credentials are incomplete: {missing} is not set (an access key needs both "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    token = env.get("AWS_SESSION_TOKEN", "").strip() or None
    return Credentials(key_id, secret, token)


def sts_endpoint(env: Mapping[str, str], region: str) -> str:
    explicit = env.get("AWS_ENDPOINT_URL_STS", "").strip()
    return explicit or f"https://sts.{region}.amazonaws.com"


def parse_assume_role_response(body: str) -> Credentials:
    """The Credentials element of an AssumeRoleWithWebIdentity response."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ModelLoadError(f"STS answered something that is not XML: {exc}") from exc
    found = root.find(f".//{_STS_NS}Credentials")
    if found is None:
        found = root.find(".//Credentials")
    if found is None:
        raise ModelLoadError("STS answered without credentials")

    def field(name: str) -> str:
        element = found.find(f"{_STS_NS}{name}")
        if element is None:
            element = found.find(name)
        if element is None or not element.text:
            raise ModelLoadError(f"STS answered credentials without {name}")
        return element.text

    return Credentials(field("AccessKeyId"), field("SecretAccessKey"), field("SessionToken"))


def web_identity_credentials(
    env: Mapping[str, str], region: str, timeout: float, attempts: int
) -> Credentials | None:
    """Temporary credentials for AWS_ROLE_ARN from the token in AWS_WEB_IDENTITY_TOKEN_FILE."""
    import httpx

    role = env.get("AWS_ROLE_ARN", "").strip()
    token_file = env.get("AWS_WEB_IDENTITY_TOKEN_FILE", "").strip()
    if not role and not token_file:
        return None
    if not role or not token_file:
        missing = "AWS_ROLE_ARN" if not role else "AWS_WEB_IDENTITY_TOKEN_FILE"
        raise ModelLoadError(f"S3 web identity is incomplete: {missing} is not set")
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise ModelLoadError(f"cannot read the web identity token {token_file}: {exc}") from exc
    params = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": role,
        "RoleSessionName": env.get("AWS_ROLE_SESSION_NAME", "").strip() or "modelship-serving",
        "WebIdentityToken": token,
    }
    url = sts_endpoint(env, region)

    def call() -> Credentials:
        try:
            response = httpx.post(url, data=params, timeout=timeout)
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach {url}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"STS answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise ModelLoadError(
                f"STS refused AssumeRoleWithWebIdentity for {role}: HTTP "
                f"{response.status_code}: {response.text[:300]}"
            )
        return parse_assume_role_response(response.text)

    return with_retries(f"assuming {role} with a web identity at {url}", call, attempts)


def resolve_credentials(
    region: str, timeout: float, attempts: int, env: Mapping[str, str] | None = None
) -> Credentials | None:
    """The credentials to sign with, or None to send anonymous requests."""
    source = os.environ if env is None else env
    found = static_credentials(source)
    if found is not None:
        return found
    return web_identity_credentials(source, region, timeout, attempts)
