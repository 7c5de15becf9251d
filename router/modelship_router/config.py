"""The routing configuration: the one schema shared by the operator and the router.

The operator renders a :class:`RoutingConfig` for each ModelDeployment and writes it as
JSON (camelCase keys, :meth:`RoutingConfig.to_json`) under the key :data:`CONFIGMAP_KEY`
of the ConfigMap named :func:`configmap_name` in the deployment's namespace. The router
watches that ConfigMap and applies every valid change without a restart. For local use,
``modelship-router --config FILE`` reads the same schema from a YAML or JSON file.

This module depends on pydantic only, so the operator can import it without pulling in
the proxy. Example (JSON, as the operator writes it)::

    {
      "deployment": "churn",
      "generation": 7,
      "variants": [
        {"name": "stable", "modelVersion": "1.4.0", "service": "churn-stable", "weight": 90},
        {"name": "canary", "modelVersion": "1.5.0", "service": "churn-canary", "weight": 10}
      ],
      "fallback": "stable",
      "sticky": {"header": "x-user-id"},
      "match": [{"header": "x-group", "value": "beta", "variant": "canary"}],
      "mirror": {"variant": "canary", "percent": 100}
    }

Weights are percentages with a resolution of 0.01 (one of :data:`BUCKETS` buckets).
"""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

#: Key under which the operator stores the JSON document in the router's ConfigMap.
CONFIGMAP_KEY = "routing.json"

#: Number of buckets a sticky key hashes into; weights resolve to whole buckets.
BUCKETS = 10_000

#: Name of the variant that receives traffic when the chosen variant has no ready upstream.
DEFAULT_FALLBACK = "stable"

#: Seconds a request for a variant scaled to zero waits for a pod, unless configured.
DEFAULT_ACTIVATION_SECONDS = 30.0

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# RFC 9110 token characters: what an HTTP header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Printable ASCII (and tab) only: values end up in HTTP headers, CR/LF would split them.
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
# RFC 6265 cookie-name: a token as well.
_COOKIE_NAME = _HEADER_NAME


def configmap_name(deployment: str) -> str:
    """Name of the ConfigMap the operator writes for ``deployment`` and the router watches."""
    return f"{deployment}-router"


def weight_to_buckets(percent: float) -> int:
    """Convert a weight in percent to whole buckets (0.01 % each)."""
    return round(percent * BUCKETS / 100)


class _Model(BaseModel):
    """Common settings: camelCase on the wire, snake_case in Python, typos rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value.lower()


def _cookie_name(value: str) -> str:
    if not _COOKIE_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid cookie name")
    return value


def _header_value(value: str) -> str:
    if not _HEADER_VALUE.match(value):
        raise ValueError("must be printable ASCII (it is sent in an HTTP header)")
    return value


class _HeaderOrCookie(_Model):
    """Names where a request carries a value: exactly one of a header or a cookie."""

    header: str | None = Field(
        default=None, description="HTTP header name (case-insensitive), e.g. x-user-id."
    )
    cookie: str | None = Field(default=None, description="Cookie name (case-sensitive).")

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str | None) -> str | None:
        return None if value is None else _header_name(value)

    @field_validator("cookie")
    @classmethod
    def _check_cookie(cls, value: str | None) -> str | None:
        return None if value is None else _cookie_name(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("set exactly one of 'header' or 'cookie'")
        return self


class StickyKey(_HeaderOrCookie):
    """Where the sticky key comes from.

    A request carrying the key is assigned by a stable hash of the key (salted with the
    deployment name) into one of :data:`BUCKETS` buckets, so the same key always lands on
    the same variant, in every router replica and after restarts. A request without the
    key gets a weighted random choice.
    """


class MatchRule(_HeaderOrCookie):
    """Force a variant when a header or cookie has exactly ``value``.

    Rules are evaluated in order before sticky assignment and weights; the first match
    wins. Use them for testers and dark launches (e.g. ``x-group: beta`` -> canary).
    A request a non-privileged rule decided is sent upstream with ``x-modelship-pinned: 1``
    (testers stay out of the variant's feedback statistics). A privileged rule is honoured
    only for a request carrying a valid ``x-modelship-token``; otherwise it is refused (403).
    """

    value: str = Field(description="Exact value to match (case-sensitive).")
    variant: str = Field(description="Name of the variant this request must go to.")
    privileged: bool = Field(
        default=False,
        description="Honoured only with a valid x-modelship-token (403 otherwise); used for "
        "the x-modelship-variant rules the operator renders.",
    )


class Mirror(_Model):
    """Send a copy of (a share of) requests to a shadow variant; its answers are discarded.

    The copy is sent in the background after the client's request has been routed; the
    shadow's latency and errors never reach the client. Requests that the shadow variant
    serves itself are not mirrored to it again.
    """

    variant: str = Field(description="Name of the variant that receives the copies.")
    percent: float = Field(
        default=100.0, ge=0, le=100, description="Share of requests to copy, in percent."
    )


class Variant(_Model):
    """One version of the model that can receive traffic.

    Upstreams are either discovered from a Kubernetes Service's EndpointSlices (in
    cluster: ``service`` and optionally ``port``) or listed statically (``upstreams``).
    """

    name: str = Field(description="Variant name (DNS label), e.g. stable or canary.")
    model_version: str = Field(
        description="Model version this variant serves; sent as x-model-version unless the "
        "upstream sends its own."
    )
    weight: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Share of traffic in percent (0.01 resolution). Omitted: 0, except for "
        "the fallback variant, which then receives what the others leave.",
    )
    service: str | None = Field(
        default=None,
        description="Kubernetes Service (same namespace) whose ready endpoints are this "
        "variant's upstreams.",
    )
    port: int | str | None = Field(
        default=None,
        description="EndpointSlice port to use: a port name, or a port number. Omitted: the "
        "slice's only port.",
    )
    upstreams: tuple[str, ...] = Field(
        default=(),
        description="Static upstream addresses 'host:port' (used when there is no service).",
    )
    scale_target: str | None = Field(
        default=None,
        description="Deployment (same namespace) that runs this variant's pods when it may "
        "be scaled to zero: a request that finds no ready upstream scales it from 0 to 1 "
        "and waits up to activationSeconds for a pod (modelship_router.activate), instead "
        "of falling back.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a DNS label (lowercase a-z, 0-9, '-')")
        return value

    @field_validator("model_version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return _header_value(value)

    @field_validator("scale_target")
    @classmethod
    def _check_scale_target(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS_LABEL.match(value)):
            raise ValueError(f"{value!r} is not a valid Deployment name")
        return value

    @field_validator("service")
    @classmethod
    def _check_service(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
            raise ValueError(f"{value!r} is not a valid Service name")
        return value

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise ValueError("port number must be within 1..65535")
        if isinstance(value, str) and not value:
            raise ValueError("port name must not be empty")
        return value

    @field_validator("upstreams")
    @classmethod
    def _check_upstreams(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            parse_address(address)
        if len(set(value)) != len(value):
            raise ValueError("upstream addresses must be unique")
        return value

    @model_validator(mode="after")
    def _has_upstreams(self) -> Self:
        if self.service is None and not self.upstreams:
            raise ValueError(f"variant {self.name!r}: set 'service' or 'upstreams'")
        if self.service is not None and self.upstreams:
            raise ValueError(f"variant {self.name!r}: set either 'service' or 'upstreams'")
        return self


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:port``) into host and port, or raise ValueError."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"upstream {address!r} must look like host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"upstream {address!r}: write IPv6 addresses as [addr]:port")
    port = int(port_text)
    if not host or not 1 <= port <= 65535:
        raise ValueError(f"upstream {address!r}: bad host or port")
    return host, port


class RoutingConfig(_Model):
    """Everything the router needs to split one ModelDeployment's traffic.

    Routing order for each request: ``match`` rules, then the ``sticky`` key, then a
    weighted random choice. A chosen variant without a ready upstream falls back to
    ``fallback``.
    """

    deployment: str = Field(
        description="ModelDeployment name: the salt of sticky hashing and a metric label."
    )
    generation: int = Field(
        default=0,
        ge=0,
        description="Increases with every change; the router reports the one it has applied.",
    )
    variants: tuple[Variant, ...] = Field(min_length=1, description="Variants, by name.")
    fallback: str = Field(
        default=DEFAULT_FALLBACK,
        description="Variant used when the chosen one has no ready upstream (stable).",
    )
    sticky: StickyKey | None = Field(default=None, description="Sticky assignment key.")
    salt: str | None = Field(
        default=None,
        max_length=512,
        description="Salt of sticky hashing (default: the deployment name). The operator "
        "sets one per rollout, so two experiments assign users independently.",
    )
    match: tuple[MatchRule, ...] = Field(default=(), description="Rules that force a variant.")
    mirror: Mirror | None = Field(default=None, description="Shadow traffic settings.")
    activation_seconds: float | None = Field(
        default=None,
        ge=1,
        le=300,
        description="How long a request for a variant scaled to zero (scaleTarget) waits "
        f"for its first ready pod before it is answered 503 (omitted: "
        f"{DEFAULT_ACTIVATION_SECONDS:g}).",
    )

    @field_validator("deployment")
    @classmethod
    def _check_deployment(cls, value: str) -> str:
        if len(value) > 253 or not value or not _HEADER_VALUE.match(value):
            raise ValueError("must be a non-empty Kubernetes object name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        known = set(names)
        if self.fallback not in known:
            raise ValueError(f"fallback variant {self.fallback!r} is not one of {names}")
        for index, rule in enumerate(self.match):
            if rule.variant not in known:
                raise ValueError(f"match[{index}] names unknown variant {rule.variant!r}")
        if self.mirror is not None and self.mirror.variant not in known:
            raise ValueError(f"mirror names unknown variant {self.mirror.variant!r}")
        others = sum(
            weight_to_buckets(v.weight or 0.0) for v in self.variants if v.name != self.fallback
        )
        if others > BUCKETS:
            raise ValueError(f"weights of non-fallback variants add up to {others / 100}% > 100%")
        fallback_weight = self.variant(self.fallback).weight
        if fallback_weight is not None and others + weight_to_buckets(fallback_weight) != BUCKETS:
            total = (others + weight_to_buckets(fallback_weight)) / 100
            raise ValueError(f"weights add up to {total}%, not 100% (0.01 resolution)")
        return self

    def variant(self, name: str) -> Variant:
        """The variant called ``name`` (KeyError if there is none)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def buckets(self) -> dict[str, int]:
        """Buckets (out of :data:`BUCKETS`) per variant; the fallback gets the remainder."""
        result = {
            v.name: weight_to_buckets(v.weight or 0.0)
            for v in self.variants
            if v.name != self.fallback
        }
        result[self.fallback] = BUCKETS - sum(result.values())
        return result

    def weights(self) -> dict[str, float]:
        """Effective weights in percent per variant (fallback's remainder filled in)."""
        return {name: count * 100 / BUCKETS for name, count in self.buckets().items()}

    def to_json(self) -> str:
        """Serialise as the operator stores it (camelCase keys, unset fields omitted)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RoutingConfig:
        """Parse and validate a JSON document (raises pydantic.ValidationError)."""
        return cls.model_validate_json(text)

    @classmethod
    def from_data(cls, data: Any) -> RoutingConfig:
        """Validate already-decoded data, e.g. from a YAML file."""
        return cls.model_validate(data)
