"""Shared building blocks of the typed API: the camelCase base model, CEL rules, durations.

A :class:`Rule` is written once and used twice: as an ``x-kubernetes-validations`` entry in
the generated CRD (enforced by the API server) and as the message of the equivalent check in
the pydantic model (enforced by the operator when it parses a resource). Tests evaluate both
on the same table of inputs so the two layers cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

RuleReason = Literal[
    "FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"
]


@dataclass(frozen=True)
class Rule:
    """One CEL validation rule with the message a user sees when it fails."""

    rule: str
    message: str
    field_path: str | None = None
    reason: RuleReason | None = None

    def as_schema(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry for this rule."""
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def cel(*rules: Rule) -> dict[str, Any]:
    """``json_schema_extra`` that attaches ``rules`` to a model or field in the CRD."""
    return {"x-kubernetes-validations": [r.as_schema() for r in rules]}


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, snake_case in Python, typos rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the Kubernetes API holds it (camelCase keys, unset fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- durations ------------------------------------------------------------------------------

#: Go-style durations as Kubernetes writes them ("30s", "1m30s", "1.5h", "250ms").
DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration ("1m30s") into a timedelta; ValueError if malformed."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def duration_rule(lowest: str, highest: str, what: str) -> Rule:
    """CEL bounds for a duration string; guarded so a malformed value yields one clear error."""
    return Rule(
        rule=f"!self.matches('{DURATION_PATTERN}') || "
        f"(duration(self) >= duration('{lowest}') && duration(self) <= duration('{highest}'))",
        message=f"{what} must be between {lowest} and {highest}",
    )


@dataclass(frozen=True)
class DurationBounds:
    """``Annotated[str, DurationBounds(...)]``: a Go-style duration within bounds.

    Validates in Python and emits the CRD schema (pattern plus a CEL bounds rule).
    """

    lowest: str
    highest: str
    what: str

    def rule(self) -> Rule:
        return duration_rule(self.lowest, self.highest, self.what)

    def check(self, value: str) -> str:
        if not parse_duration(self.lowest) <= parse_duration(value) <= parse_duration(self.highest):
            raise ValueError(self.rule().message)
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string", "maxLength": 32, "pattern": DURATION_PATTERN, **cel(self.rule())}


# --- Kubernetes quantities ------------------------------------------------------------------

#: Kubernetes' own resource.Quantity expression, without the sign (resources are >= 0).
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity like 500m, 1, 256Mi or 1Gi")
    if isinstance(value, int) and value < 0:
        raise ValueError("a resource quantity must not be negative")
    return value


#: A resource quantity ("500m", "256Mi", 2), int-or-string like Kubernetes' own.
Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


# --- strings checked by a regular expression, with a message a user can act on --------------


def _cel_string(text: str) -> str:
    """A CEL raw string literal for ``text`` (which must not hold both quote kinds)."""
    if '"' not in text:
        return f'r"{text}"'
    if "'" not in text:
        return f"r'{text}'"
    raise ValueError(f"cannot quote {text!r} as a CEL raw string")


@dataclass(frozen=True)
class Matches:
    """``Annotated[str, Matches(...)]``: a bounded string matching ``pattern``.

    The CRD gets ``maxLength`` (which also bounds the CEL cost estimate) and a CEL
    ``matches`` rule carrying ``message``, so the API server's refusal says what to write
    instead of quoting a regular expression. Python raises the same message.
    """

    pattern: str
    message: str
    max_length: int

    def rule(self) -> Rule:
        return Rule(rule=f"self.matches({_cel_string(self.pattern)})", message=self.message)

    def check(self, value: str) -> str:
        if len(value) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters")
        if not re.search(self.pattern, value):
            raise ValueError(self.message)
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length, **cel(self.rule())}
