"""The generated CRD: committed file in sync, structural, documented, bounded, consistent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from modelship_operator import crd, spec
from schemacheck import validate

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "manifests" / "crds" / "modeldeployments.yaml"
SCHEMA = crd.resource_schema()


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node`` with its path (``[]`` for list items)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


KUBERNETES_OWN = {".apiVersion", ".kind"}


def user_nodes() -> Iterator[tuple[str, dict[str, Any]]]:
    """Nodes a user reads with kubectl explain (metadata belongs to Kubernetes)."""
    for path, node in walk(SCHEMA):
        if path != "" and not path.startswith(".metadata"):
            yield path, node


def test_committed_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == crd.render_yaml(), (
        "manifests/crds/modeldeployments.yaml is stale: run "
        "`.venv/bin/python -m modelship_operator.crd > manifests/crds/modeldeployments.yaml`"
    )


def test_committed_crd_is_one_valid_yaml_document() -> None:
    documents = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d]
    assert documents == [crd.crd()]


def test_every_field_has_a_description() -> None:
    missing = [path for path, node in user_nodes() if not node.get("description")]
    assert missing == []


def test_schema_is_structural() -> None:
    for path, node in walk(SCHEMA):
        assert "$ref" not in node, path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
        else:
            assert "anyOf" not in node, path
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
        assert "uniqueItems" not in node, path
        assert not isinstance(node.get("exclusiveMinimum", False), float), path


def test_strings_and_lists_are_bounded_so_cel_cost_is_bounded() -> None:
    for path, node in user_nodes():
        bounded_otherwise = "enum" in node or node.get("format") == "date-time"
        if node.get("type") == "string" and not bounded_otherwise and path not in KUBERNETES_OWN:
            assert "maxLength" in node, f"{path} needs maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} needs maxItems"


def test_list_map_keys_are_required_in_their_items() -> None:
    for path, node in walk(SCHEMA):
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []), f"{path}: map key {key} must be required"


def test_defaults_are_valid_under_their_own_schema_and_rules() -> None:
    """The API server checks each default as written (nested defaults not applied), CEL
    rules included: a rule must not read a field that only a nested default provides."""
    for path, node in walk(SCHEMA):
        if "default" in node:
            assert validate(node, node["default"]) == [], path


def cel_rules() -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    for path, node in walk(SCHEMA):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, node, rule


def test_every_cel_rule_compiles_and_has_a_message() -> None:
    env = celpy.Environment()
    rules = list(cel_rules())
    assert len(rules) > 20
    for path, _, rule in rules:
        env.compile(rule["rule"])
        assert rule["message"] and not rule["message"].endswith("."), (path, rule)


def test_cel_field_paths_name_existing_fields() -> None:
    for path, node, rule in cel_rules():
        target = node
        for part in rule.get("fieldPath", "").split(".")[1:]:
            assert part in target.get("properties", {}), (path, rule["fieldPath"])
            target = target["properties"][part]


def test_every_rule_declared_in_the_models_reaches_the_crd() -> None:
    in_crd = {rule["rule"] for _, _, rule in cel_rules()}
    declared = [v for k, v in vars(spec).items() if k.startswith("RULE_")]
    assert len(declared) >= 15
    assert {r.rule for r in declared} <= in_crd


def test_printer_columns_point_at_status_fields() -> None:
    version = crd.crd()["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Phase", "Ready", "Desired", "Stable", "Canary", "Weight", "Age"]
    status = SCHEMA["properties"]["status"]["properties"]
    for column in version["additionalPrinterColumns"]:
        parts = column["jsonPath"].split("[")[0].strip(".").split(".")
        if parts[0] != "status":
            continue
        node: dict[str, Any] = {"properties": status}
        for part in parts[1:]:
            node = node["properties"][part]
        assert node["type"] in {"string", "integer", "array"}


def test_names_subresource_and_discoverability() -> None:
    body = crd.crd()
    assert body["metadata"]["name"] == "modeldeployments.modelship.io"
    names = body["spec"]["names"]
    assert names["shortNames"] == ["mdep"]
    assert names["categories"] == ["modelship"]
    version = body["spec"]["versions"][0]
    assert version["name"] == "v1alpha2"
    assert version["subresources"] == {"status": {}}
    assert version["served"] and version["storage"]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (".spec.strategy", "How the canary is rolled out"),
        (".spec.strategy.steps", "strictly increasing"),
        (".spec.strategy.metrics[]", "A built-in metric"),
        (".spec.model.sha256", "never unpickled unverified"),
        (".status.conditions[].lastTransitionTime", "When status last changed"),
    ],
)
def test_explain_has_something_useful_to_say(path: str, words: str) -> None:
    nodes = dict(walk(SCHEMA))
    assert words in nodes[path]["description"]
