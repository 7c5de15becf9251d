"""Extra HTTP headers of Prometheus queries (the operator's setting and a resource's
spec.prometheus.headers): one check for both."""

from __future__ import annotations

import re
from typing import Final

#: An HTTP header name (RFC 9110 token).
_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: Headers the client sets itself; credentials have their own settings (files, not env).
_RESERVED_HEADERS: Final = frozenset({"authorization", "content-type", "content-length", "host"})


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Refuse header names that are not HTTP tokens, values with line breaks, and the
    headers the Prometheus client sets itself (Authorization has its own settings)."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not an HTTP header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(
                f"header {name!r} is set by the operator itself"
                + (
                    ": use a bearer token file or basic auth for credentials"
                    if name.lower() == "authorization"
                    else ""
                )
            )
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} has a line break in its value")
    return headers
