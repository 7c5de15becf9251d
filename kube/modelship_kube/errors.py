"""One hierarchy for every failed API request.

An :class:`ApiError` carries the HTTP status (0 when no answer came) and the ``reason``
and ``message`` of the API's ``Status`` object when it sent one. The common statuses have
subclasses, so callers can catch exactly what they handle (``except NotFound``) or test
the status on the base class (``exc.not_found``): both say the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final


class ConfigurationError(Exception):
    """No usable connection settings (no kubeconfig, a broken one, not in a pod)."""


class ApiError(Exception):
    """An API request failed. ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, what: str, status: int = 0, reason: str = "", message: str = "") -> None:
        self.what = what
        self.status = status
        self.reason = reason
        self.message = message or reason
        super().__init__(f"{what}: {status or 'no answer'} {self.message}".strip())

    @property
    def transient(self) -> bool:
        """Worth retrying as is: no answer, a conflict, throttling or a server error."""
        return self.status in (0, 408, 409, 429) or self.status >= 500

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


class Unavailable(ApiError):
    """No answer: the connection failed or timed out (status 0)."""


class Unauthorized(ApiError):
    """401: the credentials were refused (an expired token, a wrong certificate)."""


class Forbidden(ApiError):
    """403: RBAC does not allow the request."""


class NotFound(ApiError):
    """404: no such object (or the API does not serve the resource)."""


class Conflict(ApiError):
    """409: already exists, or the resourceVersion precondition failed."""


class Gone(ApiError):
    """410: the resourceVersion is too old to watch from; list again."""


#: The name watch callers know it by.
WatchExpired = Gone

_BY_STATUS: Final[Mapping[int, type[ApiError]]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
}


def api_error(what: str, status: int, reason: str = "", message: str = "") -> ApiError:
    """The ApiError subclass for ``status`` (the base class for the others)."""
    cls = Unavailable if status == 0 else _BY_STATUS.get(status, ApiError)
    return cls(what, status, reason, message)


def from_status(what: str, status: Mapping[str, Any], fallback: int = 0) -> ApiError:
    """An error from a ``Status`` object (a failed response's body, a watch ERROR event)."""
    try:
        code = int(status.get("code") or fallback)
    except (TypeError, ValueError):
        code = fallback
    return api_error(what, code, str(status.get("reason") or ""), str(status.get("message") or ""))


def from_response(what: str, status: int, content: bytes) -> ApiError:
    """An error from a failed response: its ``Status`` if it sent one, else its text."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, Mapping) and body.get("kind") == "Status":
        error = from_status(what, body, status)
        if error.status != status:  # the HTTP status is the one that happened
            error = api_error(what, status, error.reason, error.message)
        return error
    return api_error(what, status, "", content[:500].decode(errors="replace").strip())
