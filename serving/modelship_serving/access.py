"""Who may send feedback: the ``feedback_enabled`` switch and the access token.

The operator mounts the ModelDeployment's token Secret as a file; the kubelet replaces it
when the Secret changes, so :class:`TokenFile` re-reads it (at most once per ``interval``
seconds, by an injected clock). Surrounding whitespace is stripped; an empty, missing or
unreadable file is "no valid token" and every privileged request is refused (one warning
per change of state). Clients send the token in the ``x-modelship-token`` header; it is
compared in constant time.

Also the name of the header the router sets on requests a tester's match rule decided
(``x-modelship-pinned: 1``): their predictions' feedback is kept out of the variant's
statistics (feedback.py); and of the one it sets to a sticky request's unit
(``x-modelship-unit``), by which feedback counts users.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .contract import MAX_UNIT_LENGTH, UNIT_HEADER
from .errors import ServingError

log = logging.getLogger("modelship.serving")

#: The request header carrying the access token.
TOKEN_HEADER = b"x-modelship-token"
#: The request header (value ``1``) the router sets on requests a tester's match rule decided.
PINNED_HEADER = b"x-modelship-pinned"
_UNIT_HEADER = UNIT_HEADER.encode()

FEEDBACK_OFF = "feedback is off: this server is configured to take no feedback"
NO_VALID_TOKEN = "feedback is off: no valid access token is configured"
TOKEN_MISSING = "feedback needs the x-modelship-token header"
TOKEN_INVALID = "invalid x-modelship-token"


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case) in raw ASGI headers."""
    for key, value in headers:
        if key == name:
            return value
    return None


def is_pinned(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the request carries ``x-modelship-pinned: 1``."""
    for key, value in headers:
        if key == PINNED_HEADER:
            return value.strip() == b"1"
    return False


def unit_from(value: bytes | str | None) -> str | None:
    """A unit header's value as a unit: None when absent, empty or over
    :data:`MAX_UNIT_LENGTH` characters."""
    if value is None or not value or len(value) > MAX_UNIT_LENGTH:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else value


def unit_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request's ``x-modelship-unit`` (see :func:`unit_from`)."""
    for key, value in headers:
        if key == _UNIT_HEADER:
            return unit_from(value)
    return None


class TokenFile:
    """The access token in ``path``, re-read at most once per ``interval`` seconds."""

    def __init__(
        self, path: str, clock: Callable[[], float] = time.monotonic, interval: float = 1.0
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._interval = interval
        self._read_at: float | None = None
        self._token: bytes | None = None
        self._state = "unread"

    def token(self) -> bytes | None:
        """The current token; None when the file is empty, missing or unreadable."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._interval:
            self._read_at = now
            self._token = self._read()
        return self._token

    def _read(self) -> bytes | None:
        try:
            token = self.path.read_bytes().strip()
        except FileNotFoundError:
            return self._became("missing", None)
        except OSError as exc:
            return self._became(f"unreadable ({exc.strerror or exc})", None)
        if not token:
            return self._became("empty", None)
        return self._became("valid", token)

    def _became(self, state: str, token: bytes | None) -> bytes | None:
        if state != self._state:
            previous, self._state = self._state, state
            if token is None:
                log.warning(
                    "access token file %s is %s: privileged requests are refused",
                    self.path,
                    state,
                )
            elif previous != "unread":
                log.info("access token file %s holds a token again", self.path)
        return token


class FeedbackGate:
    """Decides whether a feedback request may be taken, before its body is read."""

    def __init__(self, enabled: bool, token_file: TokenFile | None) -> None:
        self.enabled = enabled
        self.token_file = token_file

    @classmethod
    def from_settings(cls, enabled: bool, token_file: str | None) -> FeedbackGate:
        return cls(enabled, TokenFile(token_file) if token_file else None)

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Raise :class:`ServingError` (403 or 401) unless the request may send feedback."""
        if not self.enabled:
            raise ServingError(403, FEEDBACK_OFF)
        token_file = self.token_file
        if token_file is None:
            return
        token = token_file.token()
        if token is None:
            raise ServingError(403, NO_VALID_TOKEN)
        presented = header_value(headers, TOKEN_HEADER)
        if presented is None:
            raise ServingError(401, TOKEN_MISSING)
        if not hmac.compare_digest(presented, token):
            raise ServingError(403, TOKEN_INVALID)
