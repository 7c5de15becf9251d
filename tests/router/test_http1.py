"""Response heads relayed by the proxy: verbatim when clean, reshaped when not."""

from __future__ import annotations

import pytest
from modelship_router.http1 import response_head

CLEAN = (
    b"HTTP/1.1 200 OK\r\ndate: Fri, 27 Nov 2026 09:47:36 GMT\r\nServer: uvicorn\r\n"
    b"content-type: application/json\r\nContent-Length: 19\r\n"
)


def test_clean_head_is_relayed_verbatim() -> None:
    head = response_head(CLEAN)
    assert head.head == CLEAN  # header case and order kept
    assert head.has_length and head.content_length is None
    assert not head.has_version and not head.has_request_id


@pytest.mark.parametrize(
    ("line", "version", "request_id"),
    [
        (b"X-Model-Version: 2.0\r\n", True, False),
        (b"x-request-id: abc\r\n", False, True),
        (b"x-model-versions: no\r\n", False, False),
    ],
)
def test_detects_version_and_request_id(line: bytes, version: bool, request_id: bool) -> None:
    head = response_head(CLEAN + line)
    assert (head.has_version, head.has_request_id) == (version, request_id)


@pytest.mark.parametrize(
    ("raw", "expected", "content_length"),
    [
        # Chunked: transfer-encoding dropped; the proxy adds its own content-length.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-type: text/plain\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n",
            None,
        ),
        # Connection-scoped headers dropped, content-length remembered (for HEAD).
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
            b"Content-Length: 42\r\nx-a: 1\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\n",
            b"42",
        ),
        # HTTP/1.0 upstream: the client speaks HTTP/1.1 with the router.
        (
            b"HTTP/1.0 404 Not Found\r\nx-b: 2\r\nconnection: close\r\n",
            b"HTTP/1.1 404 Not Found\r\nx-b: 2\r\n",
            None,
        ),
        # obs-fold continuation joins its header; a dropped header's folds go too.
        (
            b"HTTP/1.1 200 OK\r\nTE: trailers\r\n x\r\nx-c: a\r\n\tb\r\nupgrade: h2c\r\n",
            b"HTTP/1.1 200 OK\r\nx-c: a b\r\n",
            None,
        ),
    ],
)
def test_heads_that_need_reshaping(raw: bytes, expected: bytes, content_length: bytes) -> None:
    head = response_head(raw)
    assert head.head == expected
    assert not head.has_length
    assert head.content_length == content_length
