"""Typed errors: every refusal carries the server's HTTP status and its reason."""

from __future__ import annotations


class ModelshipError(Exception):
    """Base class of everything this client raises."""


class ServerError(ModelshipError):
    """The server answered with an error status; ``reason`` is its ``{"error": ...}``."""

    def __init__(self, status: int, reason: str, request_id: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.request_id = request_id


class BadRequest(ServerError):
    """400: the body is not what the protocol expects (malformed JSON, not an object)."""


class AccessDenied(ServerError):
    """401 or 403: feedback or forcing a variant needs a valid access token (pass the
    client's ``token``), feedback is off on that server, or the variant is a shadow. The
    ``reason`` says which; ``status`` is 401 when no token was sent."""


class ModelNotFound(ServerError):
    """404: the server does not serve this model name or version."""


class PayloadTooLarge(ServerError):
    """413: too many rows or too large a body for the server's limits."""


class InvalidInput(ServerError):
    """422: the input does not match the model's signature (the reason names the column)."""


class NotReady(ServerError):
    """503: the model is loading, failed to load, or the server is draining."""


class ConnectionFailed(ModelshipError):
    """The server could not be reached, after the configured retries."""


class Timeout(ModelshipError):
    """No answer within the timeout (never retried: the server may have acted on it)."""


class ProtocolError(ModelshipError):
    """The server's answer is not what the protocol says."""


_BY_STATUS: dict[int, type[ServerError]] = {
    400: BadRequest,
    401: AccessDenied,
    403: AccessDenied,
    404: ModelNotFound,
    413: PayloadTooLarge,
    422: InvalidInput,
    503: NotReady,
}


def error_for(status: int, reason: str, request_id: str | None) -> ServerError:
    return _BY_STATUS.get(status, ServerError)(status, reason, request_id)
