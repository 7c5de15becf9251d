"""The committed gRPC messages (oip/) are what scripts/grpc-stubs.sh makes of the proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("serving/modelship_serving/oip", "client/modelship/client/oip")


@pytest.mark.parametrize("target", TARGETS)
def test_committed_stubs_match_the_proto(tmp_path: Path, target: str) -> None:
    subprocess.run(
        [str(REPO / "scripts/grpc-stubs.sh"), str(tmp_path)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    fresh = {p.name: p.read_text() for p in (tmp_path / target).iterdir() if p.is_file()}
    committed = {
        p.name: p.read_text() for p in (REPO / target).iterdir() if p.suffix in (".py", ".pyi")
    }
    assert fresh == committed, "run `make grpc-stubs` and commit serving/…/oip and client/…/oip"
