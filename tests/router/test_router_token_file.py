"""The access token file: re-read at most once per second, swapped as the kubelet does."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from modelship_router.access import AccessToken
from router_harness import SecretVolume


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_is_stripped_and_compared(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"  s3cret\n")
    token = AccessToken(path, Clock())
    assert token.configured()
    assert token.valid("s3cret") and token.valid(b"s3cret")
    for wrong in ("s3cret\n", "S3CRET", "", "s3cre", None, b"s3cret2", "s3crét"):
        assert not token.valid(wrong), wrong


def test_non_ascii_token_matches_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes("clé".encode())
    token = AccessToken(path, Clock())
    # The router decodes header values as latin-1: the same bytes as the file.
    assert token.valid("clé".encode().decode("latin-1"))
    assert token.valid("clé".encode())


@pytest.mark.parametrize("content", [None, b"", b" \n\t\n"])
def test_missing_or_empty_file_is_no_token(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    token = AccessToken(path, Clock())
    assert not token.configured()
    assert not token.valid("")
    assert not token.valid(None)


def test_replaced_secret_is_picked_up_within_a_second(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    volume.write(b"old\n")
    clock = Clock()
    token = AccessToken(volume.path, clock)
    assert token.valid("old")
    volume.write(b"new\n")
    clock.now += 0.5  # not re-read yet
    assert token.valid("old") and not token.valid("new")
    clock.now += 0.5
    assert token.valid("new") and not token.valid("old")
    # Removing the key (the volume drops it) turns privileged requests off.
    volume.write(b"")
    clock.now += 1
    assert not token.configured() and not token.valid("new")
    volume.write(b"back")
    clock.now += 1
    assert token.valid("back")


def test_reads_at_most_once_per_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"t")
    clock = Clock()
    token = AccessToken(path, clock)
    reads = []
    original = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    start = clock.now
    for i in range(1000):
        clock.now = start + i * 0.001
        assert token.valid("t")
    assert reads == []
    clock.now = start + 1.0
    assert token.valid("t") and token.valid("t")
    assert len(reads) == 1


def test_one_warning_per_state_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    clock = Clock()
    caplog.set_level(logging.INFO, logger="modelship_router.access")
    token = AccessToken(path, clock)  # missing
    for _ in range(5):
        clock.now += 1
        token.valid("t")
    path.write_bytes(b"")  # empty
    for _ in range(5):
        clock.now += 1
        token.valid("t")
    path.write_bytes(b"t")
    for _ in range(5):
        clock.now += 1
        token.valid("t")
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == ["WARNING", "WARNING", "INFO"], messages
    assert "cannot be read" in messages[0][1] and "is empty" in messages[1][1]
    assert all("t\n" not in text and text.count(" t ") == 0 for _, text in messages)
