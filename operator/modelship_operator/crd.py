"""Generate the ModelDeployment CRD from the pydantic models: one source of truth.

``python -m modelship_operator.crd > manifests/crds/modeldeployments.yaml`` writes it; a test
fails when the committed file differs from what the models generate.

Why generated rather than hand-written: the models already carry every description, default,
enum, bound and CEL rule (the same ``Rule`` objects the Python validators use). A hand-written
YAML would repeat each of those a second time, and a checking test can only compare what it
thinks of comparing; generation makes drift impossible instead of merely detectable.

pydantic emits JSON Schema (draft 2020-12); Kubernetes wants a *structural* OpenAPI v3
schema. :func:`structural` converts: ``$ref`` inlined, ``Optional`` unwrapped (absent rather
than null), ``const`` to a one-value ``enum``, numeric ``exclusiveMinimum`` to its OpenAPI 3.0
boolean form, titles and ``additionalProperties: false`` dropped (the API server prunes
unknown fields), and defaults with ``None`` removed. An object-typed default equal to the
type's own defaults is emitted as ``{}`` so the API server fills in the nested defaults
itself; any other is written out in full.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any, Final

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema, to_jsonable_python

from modelship_operator.spec import (
    API_VERSION,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    RULE_NAME,
    VERSION,
    ModelDeploymentSpec,
)
from modelship_operator.status import ModelDeploymentStatus
from modelship_operator.validation import cel

CRD_NAME: Final = f"{PLURAL}.{GROUP}"
SHORT_NAMES: Final = ["mdep"]
CATEGORIES: Final = ["modelship"]

HEADER: Final = (
    "# Generated from operator/modelship_operator/spec.py and status.py by\n"
    "#   python -m modelship_operator.crd > manifests/crds/modeldeployments.yaml\n"
    "# Do not edit by hand: tests/operator/test_crd.py fails when this file drifts.\n"
)

PRINTER_COLUMNS: Final = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "Rollout phase."},
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "Whether the model answers requests."},
    {"name": "Desired", "type": "string", "jsonPath": ".spec.model.version",
     "description": "Model version the spec asks for."},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable.version",
     "description": "Model version the stable variant serves."},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.version",
     "description": "Model version of the canary, if any."},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.traffic.canary",
     "description": "Percent of traffic the canary receives."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]  # fmt: skip

_KEY_ORDER: Final = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "anyOf",
    "x-kubernetes-int-or-string",
    "items",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "required",
    "properties",
    "additionalProperties",
    "x-kubernetes-validations",
)
_DROP: Final = frozenset({"title", "$defs"})


class _KubernetesJsonSchema(GenerateJsonSchema):
    """pydantic's generator, with default factories evaluated and defaults made API-shaped."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" in schema and not schema.get("default_factory_takes_data"):
            value = schema["default_factory"]()  # type: ignore[call-arg]
        else:
            value = schema.get("default", NoDefault)
        return NoDefault if value is None else value

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, BaseModel) and _is_type_default(dft):
            return {}  # the API server fills in the nested defaults
        return to_jsonable_python(dft, by_alias=True, exclude_none=True)


def _is_type_default(value: BaseModel) -> bool:
    try:
        return value == type(value)()
    except ValueError:  # the type has required fields or rules its empty form breaks
        return False


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's JSON Schema of ``model`` with camelCase names and Kubernetes-shaped defaults."""
    return model.model_json_schema(by_alias=True, schema_generator=_KubernetesJsonSchema)


def structural(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Convert pydantic's JSON Schema into a Kubernetes structural OpenAPI v3 schema."""
    defs: Mapping[str, Any] = schema.get("$defs", {})
    return _convert(schema, defs)


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """Inline a ``$ref`` (siblings win, CEL rules of both kept) and unwrap ``X | None``."""
    node = dict(node)
    if "$ref" in node:
        target = dict(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        rules = target.get("x-kubernetes-validations", []) + node.get(
            "x-kubernetes-validations", []
        )
        target.update(node)
        if rules:
            target["x-kubernetes-validations"] = rules
        node = _resolve(target, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"unions are not structural: {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        inner = _resolve(options[0], defs)
        rules = inner.get("x-kubernetes-validations", []) + rest.get("x-kubernetes-validations", [])
        inner.update(rest)
        if rules:
            inner["x-kubernetes-validations"] = rules
        node = _resolve(inner, defs)
    return node


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    resolved = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in resolved.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and value is None:
            continue
        if key == "description":
            out[key] = prose(value)
        elif key == "x-kubernetes-validations":
            order = ("rule", "message", "fieldPath", "reason")
            out[key] = [{k: rule[k] for k in order if k in rule} for rule in value]
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out[key.replace("exclusive", "").lower()] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _convert(value, defs)
        else:
            out[key] = value
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    return _ordered(out)


def prose(text: str) -> str:
    """Unwrap docstring lines into paragraphs (kubectl explain re-wraps them itself)."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Keys in a fixed, readable order (the generated YAML is reviewed by people)."""
    known: dict[str, Any] = {k: node[k] for k in _KEY_ORDER if k in node}
    unknown = {k: node[k] for k in sorted(node) if k not in known}
    if unknown:
        raise ValueError(f"schema keys the generator does not know: {sorted(unknown)}")
    return known


def resource_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ModelDeployment."""
    spec = structural(json_schema(ModelDeploymentSpec))
    status = structural(json_schema(ModelDeploymentStatus))
    return _ordered(
        {
            "description": "ModelDeployment serves a scikit-learn model over HTTP and rolls "
            "out new versions of it: traffic is split between the stable and a canary "
            "version and the canary is promoted or rolled back from what Prometheus measures.",
            "type": "object",
            "required": ["spec"],
            "properties": {
                "apiVersion": {
                    "description": "Versioned schema of this object: " + API_VERSION + ".",
                    "type": "string",
                },
                "kind": {"description": "Object kind: " + KIND + ".", "type": "string"},
                "metadata": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "maxLength": MAX_NAME_LENGTH}},
                },
                "spec": spec,
                "status": status,
            },
            **cel(RULE_NAME),
        }
    )


def crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "modelship",
                "app.kubernetes.io/part-of": "modelship",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": KIND + "List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": resource_schema()},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors, multi-paragraph text as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(obj: Any) -> str:
    """YAML the way every generated manifest of this repository is written."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def render_yaml() -> str:
    """The CRD as the YAML committed under manifests/crds/."""
    return HEADER + "---\n" + dump_yaml(crd())


def main() -> None:
    sys.stdout.write(render_yaml())


if __name__ == "__main__":
    main()
