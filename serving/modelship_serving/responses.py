"""Every response body the server builds outside the data plane's encoders, in one place.

Errors are ``{"error": "<reason>"}`` whichever lane answers (protocol, ASGI or FastAPI), so a
client parses one shape; binary replies (the Open Inference Protocol's binary tensor extension)
carry their own content type and the ``Inference-Header-Content-Length`` header.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from fastapi.responses import Response

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
HEADER_LENGTH = b"inference-header-content-length"
INTERNAL_ERROR = b'{"error":"internal server error"}'


@dataclass(frozen=True, slots=True)
class Reply:
    """A response that is not plain JSON: a body, its content type and extra headers."""

    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def binary_reply(header: bytes, blobs: list[bytes]) -> Reply:
    """A JSON header followed by raw tensor bytes (``Inference-Header-Content-Length``)."""
    return Reply(
        b"".join([header, *blobs]),
        OCTET_STREAM,
        ((HEADER_LENGTH, str(len(header)).encode()),),
    )


def error_body(reason: str) -> bytes:
    return orjson.dumps({"error": reason})


def error_response(status: int, reason: str) -> Response:
    return Response(error_body(reason), status_code=status, media_type="application/json")


def json_response(payload: bytes, status: int = 200) -> Response:
    return Response(payload, status_code=status, media_type="application/json")


def reply_response(reply: bytes | Reply) -> Response:
    """A data-plane answer as a FastAPI response."""
    if type(reply) is bytes:
        return json_response(reply)
    assert isinstance(reply, Reply)
    headers = {k.decode(): v.decode() for k, v in reply.headers}
    return Response(reply.body, media_type=reply.content_type.decode(), headers=headers)
