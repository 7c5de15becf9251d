"""The routing configuration schema: what is accepted, what is refused and why."""

from __future__ import annotations

import json
from typing import Any

import pytest
from modelship_router.config import (
    CONFIGMAP_KEY,
    RoutingConfig,
    configmap_name,
    parse_address,
)
from pydantic import ValidationError


def base(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "deployment": "churn",
        "generation": 3,
        "variants": [
            {"name": "stable", "modelVersion": "1.4.0", "service": "churn-stable", "port": "http"},
            {"name": "canary", "modelVersion": "1.5.0", "service": "churn-canary", "weight": 25},
        ],
    }
    data.update(extra)
    return data


def test_operator_round_trip_is_camel_case_json() -> None:
    config = RoutingConfig.model_validate(
        base(sticky={"header": "X-User-Id"}, mirror={"variant": "canary", "percent": 5})
    )
    text = config.to_json()
    doc = json.loads(text)
    assert doc["variants"][0]["modelVersion"] == "1.4.0"
    assert doc["sticky"] == {"header": "x-user-id"}  # header names are normalised
    assert "cookie" not in doc["sticky"]
    assert RoutingConfig.from_json(text) == config
    assert CONFIGMAP_KEY == "routing.json"
    assert configmap_name("churn") == "churn-router"


def test_snake_case_also_accepted_in_files() -> None:
    data = base()
    data["variants"][0] = {"name": "stable", "model_version": "1", "upstreams": ["a:1"]}
    assert RoutingConfig.model_validate(data).variants[0].model_version == "1"


def test_fallback_gets_the_remainder() -> None:
    config = RoutingConfig.model_validate(base())
    assert config.weights() == {"stable": 75.0, "canary": 25.0}
    assert config.buckets() == {"stable": 7500, "canary": 2500}


def test_explicit_weights_must_add_to_100() -> None:
    data = base()
    data["variants"][0]["weight"] = 75
    assert RoutingConfig.model_validate(data).weights()["stable"] == 75
    data["variants"][0]["weight"] = 70
    with pytest.raises(ValidationError, match=r"add up to 95\.0%"):
        RoutingConfig.model_validate(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fallback": "blue"}, "fallback variant 'blue' is not one of"),
        ({"match": [{"header": "x-g", "value": "b", "variant": "blue"}]}, "unknown variant"),
        (
            {"match": [{"header": "x-g", "cookie": "c", "value": "b", "variant": "canary"}]},
            "exactly one of 'header' or 'cookie'",
        ),
        ({"match": [{"value": "b", "variant": "canary"}]}, "exactly one of"),
        ({"sticky": {"header": "bad header"}}, "not a valid HTTP header name"),
        ({"mirror": {"variant": "blue"}}, "mirror names unknown variant"),
        ({"mirror": {"variant": "canary", "percent": 101}}, "less than or equal to 100"),
        ({"generation": -1}, "greater than or equal to 0"),
        ({"weights": {"canary": 5}}, "Extra inputs are not permitted"),
        (
            {"match": [{"header": "x-g", "value": "b", "variant": "canary", "priviledged": True}]},
            "Extra inputs are not permitted",
        ),
        ({"variants": []}, "at least 1 item"),
        ({"deployment": ""}, "non-empty"),
    ],
)
def test_invalid_configs_are_refused_with_a_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RoutingConfig.model_validate(base(**change))


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"name": "Stable", "modelVersion": "1", "upstreams": ["a:1"]}, "not a DNS label"),
        ({"name": "x", "modelVersion": "1"}, "set 'service' or 'upstreams'"),
        ({"name": "x", "modelVersion": "1", "service": "s", "upstreams": ["a:1"]}, "either"),
        ({"name": "x", "modelVersion": "1\r\nx: y", "upstreams": ["a:1"]}, "printable ASCII"),
        ({"name": "x", "modelVersion": "", "upstreams": ["a:1"]}, "must not be empty"),
        ({"name": "x", "modelVersion": "1", "upstreams": ["nohost"]}, "host:port"),
        ({"name": "x", "modelVersion": "1", "upstreams": ["a:1", "a:1"]}, "unique"),
        ({"name": "x", "modelVersion": "1", "service": "s", "port": 0}, "1..65535"),
        ({"name": "x", "modelVersion": "1", "upstreams": ["a:1"], "weight": 101}, "less than"),
    ],
)
def test_invalid_variants(variant: dict[str, Any], message: str) -> None:
    data = base()
    data["variants"].append(variant)
    with pytest.raises(ValidationError, match=message):
        RoutingConfig.model_validate(data)


def test_duplicate_variant_names() -> None:
    data = base()
    data["variants"].append(dict(data["variants"][1]))
    with pytest.raises(ValidationError, match="unique"):
        RoutingConfig.model_validate(data)


def test_weights_over_100() -> None:
    data = base()
    data["variants"][1]["weight"] = 100.5
    with pytest.raises(ValidationError):
        RoutingConfig.model_validate(data)
    data["variants"][1]["weight"] = 60
    data["variants"].append({"name": "c", "modelVersion": "3", "service": "c", "weight": 50})
    with pytest.raises(ValidationError, match=r"110\.0% > 100%"):
        RoutingConfig.model_validate(data)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("svc.ns:80", ("svc.ns", 80)),
        ("[::1]:9000", ("::1", 9000)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", ":80", "h:", "h:x", "h:0", "h:70000", "::1:80"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError):
        parse_address(address)


def test_json_schema_is_documented() -> None:
    schema = RoutingConfig.model_json_schema(by_alias=True)
    variant = schema["$defs"]["Variant"]["properties"]
    assert "modelVersion" in variant
    assert all("description" in prop for prop in variant.values())


def test_match_rules_are_not_privileged_unless_said_so() -> None:
    rules = [
        {"header": "x-group", "value": "beta", "variant": "canary"},
        {
            "header": "x-modelship-variant",
            "value": "canary",
            "variant": "canary",
            "privileged": True,
        },
    ]
    config = RoutingConfig.model_validate(base(match=rules))
    assert [r.privileged for r in config.match] == [False, True]
    assert RoutingConfig.from_json(config.to_json()) == config
    assert '"privileged":true' in config.to_json()
