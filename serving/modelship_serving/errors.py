"""Errors that carry their HTTP status, so every refusal reaches the client with a reason."""

from __future__ import annotations


class ServingError(Exception):
    """A request the server refuses; ``status`` is the HTTP code, ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ModelLoadError(Exception):
    """The model cannot be loaded; the message tells the operator what to fix."""
