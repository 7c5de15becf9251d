"""Jittered exponential back-off with a cap: a pure schedule, no sleeping."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays after consecutive failures: ``initial``, then times ``factor`` each failure,
    never above ``cap``; each shortened by up to ``jitter`` (a fraction) at random, so
    clients that failed together do not retry together. :meth:`reset` after a success."""

    initial: float = 0.2
    cap: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2
    random: Callable[[], float] = field(default=random.random, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.cap and self.factor >= 1 and 0 <= self.jitter < 1):
            raise ValueError(f"not a back-off schedule: {self}")

    def base(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (0 for none)."""
        if failures <= 0:
            return 0.0
        # Capped before it can overflow: factor ** 64 is plenty past any cap.
        return min(self.cap, self.initial * self.factor ** min(failures - 1, 64))

    def next(self) -> float:
        """Count one more failure; the delay before the next attempt."""
        self.failures += 1
        return self.base(self.failures) * (1.0 - self.jitter * self.random())

    def reset(self) -> None:
        self.failures = 0
