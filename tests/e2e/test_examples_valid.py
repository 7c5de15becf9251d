"""Every example in manifests/examples/ is accepted by the real API server as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples").glob("*.yaml"))
CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "modeldeployments.yaml"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted_by_the_api_server(example: Path, kubectl: Any, namespace: str) -> None:
    kubectl("apply", "--server-side", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelship.io")
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example))
    assert "created (server dry run)" in result.stdout


def test_there_is_an_example_per_strategy() -> None:
    assert {p.stem for p in EXAMPLES} >= {"canary", "abtest", "shadow"}
