"""AWS Signature Version 4 for one S3 request: the headers that authenticate it.

Only what a model download needs: a GET (or HEAD) with no body, signed in headers with an
unsigned-payload hash, as every S3-compatible store accepts. The standard library's hmac and
hashlib do the cryptography; nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Credentials:
    """An access key (and, for temporary credentials, its session token)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    """The derived key of one day, region and service (SigV4's key derivation)."""
    key = _hmac(f"AWS4{secret}".encode(), day)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def canonical_path(path: str) -> str:
    """S3's canonical URI: each segment percent-encoded once (S3 does not double-encode)."""
    return quote(path or "/", safe="/~")


def canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )


def sign(
    method: str,
    host: str,
    path: str,
    credentials: Credentials,
    region: str,
    now: datetime,
    query: Mapping[str, str] | None = None,
    service: str = "s3",
) -> dict[str, str]:
    """The headers to send with the request (host, x-amz-date, x-amz-content-sha256, the
    session token if any, and Authorization). ``path`` is the unencoded object path and
    ``now`` a UTC time."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {
        "host": host,
        "x-amz-content-sha256": UNSIGNED_PAYLOAD,
        "x-amz-date": amz_date,
    }
    if credentials.session_token:
        headers["x-amz-security-token"] = credentials.session_token
    names = sorted(headers)
    canonical_request = "\n".join(
        [
            method,
            canonical_path(path),
            canonical_query(query or {}),
            "".join(f"{n}:{headers[n].strip()}\n" for n in names),
            ";".join(names),
            UNSIGNED_PAYLOAD,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [_ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = signing_key(credentials.secret_access_key, day, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"{_ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers
