"""EndpointSlice -> upstream addresses, and ConfigMap -> routing config (pure, no cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from modelship_router.config import RoutingConfig
from modelship_router.kube_sources import config_from_configmap
from modelship_router.slices import ready_addresses, select_port, service_addresses
from modelship_router.sources import ConfigError


def endpoint(ip: str, ready: bool | None = True, **conditions: bool) -> dict[str, Any]:
    conds: dict[str, Any] = dict(conditions)
    if ready is not None:
        conds["ready"] = ready
    return {"addresses": [ip], "conditions": conds}


def slice_of(service: str, endpoints: list[dict[str, Any]], ports: Any = None) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{service}-abcde", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
        "endpoints": endpoints,
    }


@pytest.mark.parametrize(
    ("ports", "wanted", "expected"),
    [
        ([{"name": "http", "port": 8080}], None, 8080),
        ([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}], "metrics", 9090),
        ([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}], 9090, 9090),
        ([{"name": "http", "port": 8080}], "grpc", None),
        ([{"name": "http", "port": 8080}], 80, None),
        ([{"name": "", "port": None}], None, None),  # a Service without ports
        ([], None, None),
    ],
)
def test_select_port(ports: list[dict[str, Any]], wanted: Any, expected: int | None) -> None:
    assert select_port(ports, wanted) == expected


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ([endpoint("10.0.0.1"), endpoint("10.0.0.2")], [("10.0.0.1", 8080), ("10.0.0.2", 8080)]),
        # Not ready (failing readiness, or terminating) is left out.
        ([endpoint("10.0.0.1"), endpoint("10.0.0.2", ready=False)], [("10.0.0.1", 8080)]),
        ([endpoint("10.0.0.3", ready=False, serving=True, terminating=True)], []),
        # An unset ready condition means ready, per the API documentation.
        ([endpoint("10.0.0.4", ready=None)], [("10.0.0.4", 8080)]),
        ([{"addresses": [], "conditions": {"ready": True}}], []),
        ([], []),
    ],
)
def test_ready_addresses(endpoints: list[dict[str, Any]], expected: list[Any]) -> None:
    assert ready_addresses(slice_of("churn-canary", endpoints), None) == expected


def test_service_addresses_across_slices_sorted_and_deduplicated() -> None:
    slices = [
        slice_of("churn-stable", [endpoint("10.0.0.9"), endpoint("10.0.0.2")]),
        slice_of("churn-stable", [endpoint("10.0.0.2"), endpoint("10.0.0.5")]),
        slice_of("churn-canary", [endpoint("10.0.0.7")]),
    ]
    assert service_addresses(slices, "churn-stable", "http") == [
        ("10.0.0.2", 8080),
        ("10.0.0.5", 8080),
        ("10.0.0.9", 8080),
    ]
    assert service_addresses(slices, "churn-canary", None) == [("10.0.0.7", 8080)]
    assert service_addresses(slices, "other", None) == []


def configmap(data: dict[str, str] | None) -> dict[str, Any]:
    return {"metadata": {"name": "churn-router", "namespace": "ml"}, "data": data}


def test_config_from_configmap_round_trips_the_operators_json() -> None:
    config = RoutingConfig.model_validate(
        {
            "deployment": "churn",
            "generation": 9,
            "variants": [
                {"name": "stable", "modelVersion": "1", "service": "churn-stable"},
                {"name": "canary", "modelVersion": "2", "service": "churn-canary", "weight": 5},
            ],
        }
    )
    assert config_from_configmap(configmap({"routing.json": config.to_json()})) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "ConfigMap ml/churn-router has no key 'routing.json'"),
        ({"other": "{}"}, "has no key 'routing.json'"),
        ({"routing.json": "{not json"}, "Invalid JSON"),
        ({"routing.json": json.dumps({"deployment": "x"})}, "variants: Field required"),
    ],
)
def test_config_from_configmap_refuses_with_reason(data: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_configmap(configmap(data))
