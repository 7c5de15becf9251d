"""The feedback gate and the access token file: a fake clock, real files, and the kubelet's
way of updating a Secret volume (a new directory swapped in by renaming a symlink)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from modelship_serving.access import (
    FEEDBACK_OFF,
    NO_VALID_TOKEN,
    TOKEN_INVALID,
    TOKEN_MISSING,
    FeedbackGate,
    TokenFile,
    is_pinned,
)
from modelship_serving.errors import ServingError
from router_harness import SecretVolume


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_token_is_stripped_and_reread_at_most_once_per_second(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "token"
    path.write_text("  s3cret\n")
    tokens = TokenFile(str(path), clock)
    assert tokens.token() == b"s3cret"
    path.write_text("rotated\n")
    clock.now += 0.5
    assert tokens.token() == b"s3cret"  # read under a second ago
    clock.now += 0.5
    assert tokens.token() == b"rotated"


def test_an_empty_or_missing_file_is_no_token_with_one_warning_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = tmp_path / "token"
    tokens = TokenFile(str(path), clock)
    with caplog.at_level(logging.WARNING, logger="modelship.serving"):
        assert tokens.token() is None
        clock.now += 5
        assert tokens.token() is None
        assert len(caplog.records) == 1 and "missing" in caplog.records[0].getMessage()
        path.write_text(" \n")
        clock.now += 5
        assert tokens.token() is None
        clock.now += 5
        assert tokens.token() is None
        assert len(caplog.records) == 2 and "empty" in caplog.records[1].getMessage()
        path.write_text("back")
        clock.now += 5
        assert tokens.token() == b"back"
        assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2


def test_a_secret_volume_update_is_seen_through_the_symlink_swap(tmp_path: Path) -> None:
    clock = Clock()
    volume = SecretVolume(tmp_path)
    volume.write("first")
    tokens = TokenFile(str(volume.path), clock)
    assert tokens.token() == b"first"
    volume.write("second\n")
    clock.now += 1
    assert tokens.token() == b"second"
    volume.write("")
    clock.now += 1
    assert tokens.token() is None


def gate_for(tmp_path: Path, token: str | None, enabled: bool = True) -> FeedbackGate:
    if token is None:
        return FeedbackGate(enabled, None)
    path = tmp_path / "token"
    path.write_text(token)
    return FeedbackGate(enabled, TokenFile(str(path), Clock()))


def refusal(gate: FeedbackGate, headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | None:
    try:
        gate.check(headers)
    except ServingError as exc:
        return exc.status, exc.reason
    return None


def test_the_gate_refuses_per_the_contract(tmp_path: Path) -> None:
    good = [(b"x-modelship-token", b"s3cret")]
    assert refusal(gate_for(tmp_path, None), []) is None  # standalone: open
    assert refusal(gate_for(tmp_path, None, enabled=False), good) == (403, FEEDBACK_OFF)
    assert FEEDBACK_OFF.startswith("feedback is off: ")
    gate = gate_for(tmp_path, "s3cret\n")
    assert refusal(gate, good) is None
    assert refusal(gate, []) == (401, TOKEN_MISSING)
    assert refusal(gate, [(b"x-modelship-token", b"wrong")]) == (403, TOKEN_INVALID)
    assert refusal(gate, [(b"x-modelship-token", b"")]) == (403, TOKEN_INVALID)
    assert refusal(gate_for(tmp_path, "\n"), good) == (403, NO_VALID_TOKEN)
    assert TOKEN_MISSING == "feedback needs the x-modelship-token header"
    assert TOKEN_INVALID == "invalid x-modelship-token"


def test_pinned_means_exactly_the_value_1() -> None:
    assert is_pinned([(b"x-modelship-pinned", b"1")])
    assert not is_pinned([(b"x-modelship-pinned", b"0")])
    assert not is_pinned([(b"x-modelship-pinned", b"yes")])
    assert not is_pinned([(b"x-request-id", b"1")])
