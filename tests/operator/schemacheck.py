"""A stand-in for the API server's CRD admission: defaulting, schema checks and CEL rules.

It exists so the CRD's rules can be tested without a cluster, next to the pydantic layer
that mirrors them; the end-to-end tests then run the same objects against the real API
server. It follows Kubernetes' order: defaults first (nested defaults of a defaulted
object too), then validation of types, bounds, enums, required fields, list-map keys and
``x-kubernetes-validations`` (evaluated with cel-python, values typed by the schema the way
the API server types them: ``number`` is a double even when written as 1).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import celpy
from celpy import celtypes

_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    """Kubernetes' list library ``isSorted()``."""
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


_FUNCTIONS: dict[str, Callable[..., Any]] = {"isSorted": _is_sorted}


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule), functions=_FUNCTIONS)
    return _PROGRAMS[rule]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Return ``value`` with the schema's defaults filled in, recursively."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(schema["items"], item) for item in value]
    return value


def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """Type ``value`` for CEL by its schema."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(props.get(k, extra or {}), v) for k, v in value.items()}
        )
    if isinstance(value, list):
        return celtypes.ListType([to_cel(schema.get("items", {}), v) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if schema.get("type") == "number":
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    raise TypeError(f"cannot type {value!r}")


def _type_ok(schema: dict[str, Any], value: Any) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    kind = schema.get("type")
    return {
        None: True,
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
    }[kind]


#: Error kinds after which the API server skips every CEL rule of the object
#: (apiextensions' hasBlockingErr): wrong types, missing required fields, values outside an
#: enum, strings too long and lists too long (the last two bound the rules' cost).
BLOCKING = frozenset({"TypeInvalid", "Required", "NotSupported", "TooLong", "TooMany"})
NOT_CHECKED = "some validation rules were not checked because the object was invalid"


def schema_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[tuple[str, str]]:
    """OpenAPI errors as (kind, "<path>: <message>")."""
    where = path or "<root>"
    if not _type_ok(schema, value):
        return [("TypeInvalid", f"{where}: must be of type {schema.get('type')}")]
    errors: list[tuple[str, str]] = []
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        message = f"Unsupported value: {json.dumps(value)}: supported values: {supported}"
        errors.append(("NotSupported", f"{where}: {message}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        below = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
        above = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
        if low is not None and (value <= low if schema.get("exclusiveMinimum") else value < low):
            errors.append(("Invalid", f"{where}: in body should be {below} {low}"))
        if high is not None and (value >= high if schema.get("exclusiveMaximum") else value > high):
            errors.append(("Invalid", f"{where}: in body should be {above} {high}"))
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", 1 << 30):
            errors.append(("TooLong", f"{where}: Too long: at most {schema['maxLength']}"))
        if len(value) < schema.get("minLength", 0):
            errors.append(("Invalid", f"{where}: at least {schema['minLength']} chars long"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(("Invalid", f"{where}: should match '{schema['pattern']}'"))
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", 1 << 30):
            errors.append(("TooMany", f"{where}: Too many: at most {schema['maxItems']} items"))
        if len(value) < schema.get("minItems", 0):
            errors.append(("Invalid", f"{where}: at least {schema['minItems']} items"))
        if schema.get("x-kubernetes-list-type") == "map":
            keys = [tuple(item.get(k) for k in schema["x-kubernetes-list-map-keys"])
                    for item in value]  # fmt: skip
            for key in sorted({k for k in keys if keys.count(k) > 1}):
                errors.append(("Duplicate", f"{where}: Duplicate value: {key}"))
        for index, item in enumerate(value):
            errors += schema_errors(schema.get("items", {}), item, f"{path}[{index}]")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(("Required", f"{path}.{name}: Required value"))
        props = schema.get("properties")
        for name, item in value.items():
            if props is not None and name in props:
                errors += schema_errors(props[name], item, f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(schema["additionalProperties"], item, f"{path}.{name}")
            elif props is not None and path and path != ".metadata":
                errors.append(("Unknown", f'unknown field "{path[1:]}.{name}"'))
    return errors


def cel_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Failed ``x-kubernetes-validations`` rules anywhere in ``value``, as messages."""
    errors: list[str] = []
    if isinstance(value, list):
        for index, item in enumerate(value):
            errors += cel_errors(schema.get("items", {}), item, f"{path}[{index}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                errors += cel_errors(props[name], item, f"{path}.{name}")
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            ok = _program(rule["rule"]).evaluate({"self": to_cel(schema, value)})
        except celpy.CELEvalError as exc:
            errors.append(f"{path or '<root>'}: rule {rule['rule']!r} failed: {exc}")
            continue
        if not ok:
            errors.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    return errors


def validate(schema: dict[str, Any], value: Any) -> list[str]:
    """Errors as ``<path>: <message>``; an empty list means the API server would accept."""
    found = schema_errors(schema, value)
    messages = [message for _, message in found]
    if any(kind in BLOCKING for kind, _ in found):
        return [*messages, NOT_CHECKED]
    return messages + cel_errors(schema, value)


def admit(schema: dict[str, Any], obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Default then validate ``obj`` like a create request; return (stored object, errors)."""
    stored = apply_defaults(schema, obj)
    return stored, validate(schema, stored)
