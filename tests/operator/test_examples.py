"""Every example in manifests/examples/ passes the CRD's schema and rules and parses as a
spec, without a cluster (tests/e2e applies them to a real API server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from modelship_operator import crd
from modelship_operator.spec import ModelDeployment
from schemacheck import admit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_admitted_and_parses(example: Path) -> None:
    body = yaml.safe_load(example.read_text())
    stored, errors = admit(crd.resource_schema(), body)
    assert errors == []
    assert ModelDeployment.from_api(stored).spec.to_api() == stored["spec"]


def test_the_s3_example_names_its_secret() -> None:
    body = yaml.safe_load((EXAMPLES[0].parent / "s3.yaml").read_text())
    spec = ModelDeployment.from_api(body).spec
    assert spec.model.uri.startswith("s3://")
    assert spec.s3 is not None and spec.s3.secret_name == "model-store"


def test_the_pvc_example_names_a_claim_in_its_uri() -> None:
    body = yaml.safe_load((EXAMPLES[0].parent / "pvc.yaml").read_text())
    spec = ModelDeployment.from_api(body).spec
    assert spec.model.uri.startswith("pvc://team-models/")
