"""Download one object from S3 or an S3-compatible store (SeaweedFS, MinIO, Ceph, ...).

httpx (already the server's HTTP client) with a SigV4 signer of its own, instead of boto3,
whose botocore alone adds about 30 MB to the serving image for one GET. Every failure is a
ModelLoadError saying what to fix (no such bucket, no such key, access denied, too large);
transient ones (connection errors, timeouts, 5xx, throttling) are retried with backoff.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from .downloads import write_limited
from .errors import ModelLoadError
from .retries import TransientError, with_retries
from .s3credentials import resolve_credentials
from .sigv4 import Credentials, canonical_path, sign

log = logging.getLogger("modelship.serving")

AddressingStyle = Literal["auto", "path", "virtual"]

_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
_TRANSIENT = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling"}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Location:
    """s3://bucket/key/with/slashes -> (bucket, key)."""
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key or parsed.query or parsed.fragment:
        raise ModelLoadError(f"S3 URI must be s3://bucket/key, got {uri!r}")
    return S3Location(parsed.netloc, key)


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach the store: region, endpoint, addressing."""

    region: str
    endpoint: str | None  # None: AWS S3
    addressing_style: AddressingStyle = "auto"

    @classmethod
    def from_env(
        cls,
        endpoint: str | None,
        region: str | None,
        addressing_style: AddressingStyle,
        env: Mapping[str, str] | None = None,
    ) -> S3Config:
        """Settings first, then the AWS SDKs' variables (AWS_ENDPOINT_URL_S3,
        AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION); the region defaults to us-east-1."""
        source = os.environ if env is None else env
        endpoint = (
            endpoint
            or source.get("AWS_ENDPOINT_URL_S3", "").strip()
            or source.get("AWS_ENDPOINT_URL", "").strip()
            or None
        )
        region = (
            region
            or source.get("AWS_REGION", "").strip()
            or source.get("AWS_DEFAULT_REGION", "").strip()
            or "us-east-1"
        )
        if endpoint is not None and urlparse(endpoint).scheme not in ("http", "https"):
            raise ModelLoadError(f"S3 endpoint must be http(s)://host[:port], got {endpoint!r}")
        return cls(region=region, endpoint=endpoint.rstrip("/") if endpoint else None,
                   addressing_style=addressing_style)  # fmt: skip

    def object_url(self, location: S3Location) -> tuple[str, str, str]:
        """(url, host, path) of the object: path-style for a custom endpoint (what
        S3-compatible stores serve) unless virtual is asked, virtual-hosted for AWS."""
        path_style = self.addressing_style == "path" or (
            self.addressing_style == "auto" and self.endpoint is not None
        )
        base = self.endpoint or f"https://s3.{self.region}.amazonaws.com"
        parsed = urlparse(base)
        if path_style:
            host = parsed.netloc
            path = f"{parsed.path.rstrip('/')}/{location.bucket}/{location.key}"
        else:
            host = f"{location.bucket}.{parsed.netloc}"
            path = f"{parsed.path.rstrip('/')}/{location.key}"
        return f"{parsed.scheme}://{host}{canonical_path(path)}", host, path


def error_code(body: str) -> tuple[str, str]:
    """(Code, Message) of an S3 XML error body, or ("", first bytes of the body)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", body[:200]
    return (root.findtext("Code") or "").strip(), (root.findtext("Message") or "").strip()


def _refusal(
    location: S3Location, config: S3Config, status: int, body: str, signed: bool
) -> Exception:
    """The error for a non-200 answer: transient (to retry) or a ModelLoadError saying why."""
    code, message = error_code(body)
    where = config.endpoint or f"AWS S3 ({config.region})"
    detail = f"{code}: {message}" if code else f"HTTP {status}"
    if status >= 500 or status == 429 or code in _TRANSIENT:
        return TransientError(f"{where} answered HTTP {status} ({detail})")
    if code == "NoSuchBucket":
        return ModelLoadError(
            f"cannot load {location.uri}: no such bucket {location.bucket!r} at {where}"
        )
    if code == "NoSuchKey" or (status == 404 and not code):
        return ModelLoadError(
            f"cannot load {location.uri}: no such key {location.key!r} in bucket "
            f"{location.bucket!r} at {where}"
        )
    if status in (401, 403) or code in _DENIED:
        how = (
            "check the access key (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that it may "
            "read this object"
            if signed
            else "no credentials were set, so the request was anonymous: set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY (or a web identity)"
        )
        return ModelLoadError(f"cannot load {location.uri}: access denied by {where} "
                              f"({detail}); {how}")  # fmt: skip
    if status == 301 or code in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
        return ModelLoadError(
            f"cannot load {location.uri}: the bucket is not in region {config.region!r} "
            f"({detail}); set AWS_REGION to the bucket's region"
        )
    return ModelLoadError(f"cannot load {location.uri}: {where} answered HTTP {status} ({detail})")


def download_object(
    location: S3Location,
    target: Path,
    config: S3Config,
    credentials: Credentials | None,
    max_bytes: int,
    timeout: float,
    attempts: int,
) -> int:
    """Write the object to TARGET (via TARGET.part, renamed when complete); return its size."""
    import httpx

    url, host, path = config.object_url(location)
    part = target.with_name(target.name + ".part")
    where = config.endpoint or f"AWS S3 ({config.region})"

    def attempt() -> int:
        headers = {"host": host}
        if credentials is not None:
            headers = sign("GET", host, path, credentials, config.region, datetime.now(UTC))
        try:
            with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code != 200:
                    body = response.read().decode("utf-8", "replace")
                    raise _refusal(location, config, response.status_code, body,
                                   credentials is not None)  # fmt: skip
                return write_limited(location.uri, response.iter_bytes(1 << 20),
                                     response.headers.get("content-length"), part,
                                     max_bytes)  # fmt: skip
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__} talking to {where}: {exc}") from exc

    log.info("downloading model from %s (%s)", location.uri, where)
    try:
        size = with_retries(f"downloading {location.uri} from {where}", attempt, attempts)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return size


def fetch(
    uri: str,
    target: Path,
    *,
    endpoint: str | None,
    region: str | None,
    addressing_style: AddressingStyle,
    max_bytes: int,
    timeout: float,
    attempts: int,
) -> int:
    """Download s3://bucket/key to TARGET with credentials and settings from the environment."""
    location = parse_s3_uri(uri)
    config = S3Config.from_env(endpoint, region, addressing_style)
    credentials = resolve_credentials(config.region, timeout, attempts)
    return download_object(location, target, config, credentials, max_bytes, timeout, attempts)
