"""Retrying a fetch with exponential backoff, only when the failure is transient."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import ModelLoadError

log = logging.getLogger("modelship.serving")

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth another try (a dropped connection, a timeout, a 5xx, a throttle)."""


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1, 2, ...)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def with_retries(
    what: str,
    call: Callable[[], T],
    attempts: int,
    base_seconds: float = 0.5,
    cap_seconds: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried up to ``attempts`` times while it raises TransientError; any other
    error (ModelLoadError: no such key, access denied, ...) ends it at once."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TransientError as exc:
            if attempt == attempts:
                raise ModelLoadError(
                    f"{what} failed after {attempts} attempts, the last with: {exc}"
                ) from exc
            pause = backoff_seconds(attempt, base_seconds, cap_seconds)
            log.warning("%s: %s; retrying in %.1fs (%d/%d)", what, exc, pause, attempt, attempts)
            sleep(pause)
    raise AssertionError("unreachable: attempts must be at least 1")
