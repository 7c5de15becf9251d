"""The access token: read from a file (a mounted Secret key) and compared in constant time.

Privileged requests (forcing a variant through a privileged match rule) must carry the
token in the ``x-modelship-token`` header. The file is re-read at most once per second,
so a Secret the kubelet replaces (an atomic swap of the volume's ``..data`` symlink) takes
effect within about a second, without a restart. Surrounding whitespace (a trailing
newline) is stripped; a missing or empty file means there is no valid token, and every
privileged request is refused. Each change of state is logged once, never the token.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: Request header carrying the access token (forwarded unchanged: serving checks it too).
TOKEN_HEADER = "x-modelship-token"

#: Seconds between reads of the token file.
REFRESH_SECONDS = 1.0

_OK = "ok"
_MISSING = "missing"
_EMPTY = "empty"


class AccessToken:
    """The current token of one file; :meth:`valid` tells whether a presented one matches."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = REFRESH_SECONDS,
    ) -> None:
        self.path = path
        self._clock = clock
        self._refresh = refresh
        self._token: bytes | None = None
        self._state: str | None = None
        self._read_at = 0.0
        self._read(clock())

    def valid(self, presented: bytes | str | None) -> bool:
        """Whether ``presented`` (a header value) is the current token."""
        token = self.current()
        if token is None or presented is None:
            return False
        if isinstance(presented, str):
            try:
                # Header values are decoded as latin-1: this gives back the bytes sent.
                presented = presented.encode("latin-1")
            except UnicodeEncodeError:
                return False
        return hmac.compare_digest(presented, token)

    def configured(self) -> bool:
        """Whether there is a token at all (the file exists and is not empty)."""
        return self.current() is not None

    def current(self) -> bytes | None:
        """The token as of the last read (re-read if that is over a second ago)."""
        now = self._clock()
        if now - self._read_at >= self._refresh:
            self._read(now)
        return self._token

    def _read(self, now: float) -> None:
        self._read_at = now
        try:
            token: bytes | None = self.path.read_bytes().strip() or None
            state = _OK if token is not None else _EMPTY
        except OSError:
            token, state = None, _MISSING
        if token != self._token and state == _OK and self._state == _OK:
            log.info("access token in %s changed", self.path)
        self._token = token
        if state == self._state:
            return
        self._state = state
        if state == _OK:
            log.info("access token read from %s: privileged requests are accepted", self.path)
        elif state == _EMPTY:
            log.warning("access token file %s is empty: privileged requests are refused", self.path)
        else:
            log.warning(
                "access token file %s cannot be read: privileged requests are refused", self.path
            )
