"""The NetworkPolicies the operator renders: who may open a connection to which pod.

`admits` reads a rendered policy the way the NetworkPolicy API defines it (a selected pod
admits a connection when some ingress rule's peers and ports match). Enforcement by a real
agent on the node is tested end to end in tests/e2e/test_network_policy.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from mdep_fixtures import SHA_CANARY, base_resource
from modelship_operator.render import render, state_from_spec
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ModelRef
from pydantic import ValidationError

SETTINGS = OperatorSettings(
    serving_image="modelship/serving:9.9", router_image="modelship/router:9.9"
)
CANARY = ModelRef(
    version="1.5.0", uri="file:///models/churn-1.5.0.skops", sha256=SHA_CANARY, format="auto"
)
PROMETHEUS = {"app.kubernetes.io/name": "prometheus", "prometheus": "modelship"}


def children(settings: OperatorSettings = SETTINGS, **spec: Any) -> list[dict[str, Any]]:
    md = ModelDeployment.from_api(base_resource(**spec))
    return render(md, settings, state_from_spec(md, candidate=CANARY))


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the operator renders no expressions
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def admits(
    policies: list[dict[str, Any]],
    pod: Mapping[str, str],
    source: Mapping[str, str],
    source_namespace: str,
    port: int,
    namespace: str = "ml",
) -> bool:
    """Whether a pod labelled POD in NAMESPACE admits a TCP connection to PORT from a pod
    labelled SOURCE in SOURCE_NAMESPACE (no selecting policy: admitted)."""
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], pod)]
    if not selecting:
        return True
    ns_labels = {"kubernetes.io/metadata.name": source_namespace}
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(p["port"] == port for p in ports):
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                if "namespaceSelector" in peer:
                    in_ns = _matches(peer["namespaceSelector"], ns_labels)
                else:
                    in_ns = source_namespace == namespace
                if in_ns and _matches(peer.get("podSelector", {}), source):
                    return True
    return False


def pod_labels(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    found = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == deployment
    )
    labels: dict[str, str] = found["spec"]["template"]["metadata"]["labels"]
    return labels


def policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


def test_serving_pods_admit_their_router_and_prometheus_only() -> None:
    objects = children()
    rules = policies(objects)
    router = pod_labels(objects, "churn-router")
    for variant in ("churn-stable", "churn-canary"):
        serving = pod_labels(objects, variant)
        assert admits(rules, serving, router, "ml", 8080)
        assert admits(rules, serving, router, "ml", 8081)  # gRPC
        assert admits(rules, serving, PROMETHEUS, "monitoring", 8080)  # /metrics
        assert not admits(rules, serving, PROMETHEUS, "monitoring", 8081)
        assert not admits(rules, serving, {"app": "client"}, "ml", 8080)
        assert not admits(rules, serving, {"app": "client"}, "other", 8080)
        # another model's router, in the same namespace, cannot bypass this one's
        other = {**router, "modelship.io/deployment": "fraud"}
        assert not admits(rules, serving, other, "ml", 8080)
        # nor can a serving pod of the other variant
        peer = pod_labels(objects, "churn-canary" if variant == "churn-stable" else "churn-stable")
        assert not admits(rules, serving, peer, "ml", 8080)


def test_the_router_admits_any_client_on_its_port_only() -> None:
    objects = children()
    router = pod_labels(objects, "churn-router")
    assert admits(policies(objects), router, {"app": "client"}, "elsewhere", 8080)
    assert not admits(policies(objects), router, {"app": "client"}, "elsewhere", 9090)


def test_scrapers_can_be_narrowed_to_one_namespace() -> None:
    settings = SETTINGS.model_copy(update={"scraper_namespace": "monitoring"})
    objects = children(settings)
    serving = pod_labels(objects, "churn-stable")
    assert admits(policies(objects), serving, PROMETHEUS, "monitoring", 8080)
    assert not admits(policies(objects), serving, PROMETHEUS, "team-a", 8080)


def test_no_policies_without_the_builtin_router_or_when_turned_off() -> None:
    # clients call the variants' Services themselves: nothing to restrict them to
    assert policies(children(router={"type": "none"})) == []
    off = SETTINGS.model_copy(update={"network_policies": False})
    assert policies(children(off)) == []


def test_policies_are_applied_before_any_pod() -> None:
    kinds = [o["kind"] for o in children()]
    assert max(i for i, k in enumerate(kinds) if k == "NetworkPolicy") < kinds.index("Deployment")


def test_policies_restrict_ingress_only() -> None:
    # serving pods download models from S3/MLflow/http; the router reads the API
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies(children()))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODELSHIP_OPERATOR_SCRAPER_POD_LABELS": "{}"}, "would admit every pod"),
        ({"MODELSHIP_OPERATOR_SCRAPER_NAMESPACE": "Monitoring!"}, "is not a namespace name"),
    ],
)
def test_settings_that_would_open_or_break_the_policy_are_refused(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        OperatorSettings()
