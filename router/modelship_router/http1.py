"""Pure HTTP/1.1 message-head helpers for the proxy (no I/O).

httptools (llhttp) validates and frames every message; these helpers only reshape a head
it has already accepted. The common case is a clean head that is relayed verbatim; the
functions here handle the rest (hop-by-hop headers, other protocol versions, obs-fold).
"""

from __future__ import annotations

import re

#: Headers that describe one connection, not the message: never relayed (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# The header names a response head is checked for (on the lowercased head, in one scan):
# the hop-by-hop ones, which make it need reshaping, and those the proxy adds when missing.
_NAMES = re.compile(
    rb"\n(c(?:onnection|ontent-length)|keep-alive|proxy-(?:connection|authenticate|authorization)"
    rb"|t(?:e|railer|ransfer-encoding)|upgrade|x-(?:model-version|request-id))[ \t]*:"
)


class ResponseHead:
    """A relayable response head and what the proxy needs to know about it."""

    __slots__ = ("as_is", "content_length", "has_length", "has_request_id", "has_version", "head")

    def __init__(
        self,
        head: bytes,
        has_length: bool,
        content_length: bytes | None,
        has_version: bool,
        has_request_id: bool,
    ) -> None:
        #: ``HTTP/1.1 <status> <reason>\r\n`` and the relayable header lines, each CRLF-ended.
        self.head = head
        #: Whether ``head`` carries a Content-Length header (relayed as is).
        self.has_length = has_length
        #: The upstream's Content-Length value when it was removed from ``head``.
        self.content_length = content_length
        self.has_version = has_version
        self.has_request_id = has_request_id
        #: Whether ``head`` needs nothing added but the proxy's attribution header (a
        #: keep-alive answer with a body to a client that is not asking for a HEAD).
        self.as_is = has_length and has_version and has_request_id


def response_head(raw: bytes) -> ResponseHead:
    """Reshape a response head as received (status line and header lines, CRLF-ended).

    Fast path: an HTTP/1.1 head without hop-by-hop headers is relayed verbatim, including
    its Content-Length (the body is relayed unchanged, so it stays true).
    """
    names = _NAMES.findall(raw.lower())
    has_version = b"x-model-version" in names
    has_request_id = b"x-request-id" in names
    has_length = b"content-length" in names
    # Any other name found is hop-by-hop (a repeated one also takes the careful path).
    if raw.startswith(b"HTTP/1.1 ") and len(names) == has_version + has_request_id + has_length:
        return ResponseHead(raw, has_length, None, has_version, has_request_id)
    head, content_length = _clean(raw)
    return ResponseHead(head, False, content_length, has_version, has_request_id)


def _clean(raw: bytes) -> tuple[bytes, bytes | None]:
    """Status line as HTTP/1.1; hop-by-hop and Content-Length lines removed; folds joined."""
    lines = raw.split(b"\r\n")
    _, _, status = lines[0].partition(b" ")
    out = [b"HTTP/1.1 " + status + b"\r\n"]
    content_length: bytes | None = None
    dropping = False
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):  # obs-fold: continuation of the previous header
            if not dropping and len(out) > 1:
                out[-1] = out[-1][:-2] + b" " + line.strip() + b"\r\n"
            continue
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            content_length = value.strip()
            dropping = True
        else:
            dropping = lname in HOP_BY_HOP
        if not dropping:
            out.append(line + b"\r\n")
    return b"".join(out), content_length
