"""Least-privilege RBAC: enough for everything the operator renders, nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mdep_fixtures import SHA_CANARY, base_resource
from modelship_operator import rbac
from modelship_operator.kinds import CHILD_KINDS, child_kind
from modelship_operator.rbac import PolicyRule, allows, covers, operator_rules, router_rules
from modelship_operator.render import render, state_from_spec
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import ModelRef

ROOT = Path(__file__).resolve().parents[2]
RBAC_FILE = ROOT / "manifests" / "rbac" / "operator.yaml"
CANARY = {"version": "1.5.0", "uri": "file:///m/c", "sha256": SHA_CANARY}


def test_committed_rbac_matches_the_code() -> None:
    assert RBAC_FILE.read_text() == rbac.render_yaml(), (
        "manifests/rbac/operator.yaml is stale: run "
        "`.venv/bin/python -m modelship_operator.rbac > manifests/rbac/operator.yaml`"
    )


def every_child() -> list[dict[str, Any]]:
    resource = ModelDeployment.from_api(base_resource(replicas=2, router={"replicas": 2}))
    candidate = ModelRef(**{"format": "auto", **CANARY})
    return render(resource, OperatorSettings(), state_from_spec(resource, candidate=candidate))


@pytest.mark.parametrize("verb", ["get", "list", "watch", "create", "patch", "delete"])
def test_operator_may_apply_observe_and_prune_every_child_it_renders(verb: str) -> None:
    rules = operator_rules()
    for obj in every_child():
        kind = child_kind(obj["apiVersion"], obj["kind"])
        assert allows(rules, kind.group, kind.plural, verb, obj["metadata"]["name"]), (verb, obj)


def test_operator_holds_every_permission_it_grants_to_a_router() -> None:
    """Kubernetes refuses to let a subject create a Role with permissions it lacks."""
    roles = [o for o in every_child() if o["kind"] == "Role"]
    assert roles
    for role in roles:
        granted = [
            PolicyRule(
                tuple(r["apiGroups"]),
                tuple(r["resources"]),
                tuple(r["verbs"]),
                tuple(r.get("resourceNames", ())),
            )
            for r in role["rules"]
        ]
        assert covers(operator_rules(), granted)


def test_covers_notices_a_missing_permission() -> None:
    assert not covers(operator_rules(), [PolicyRule(("",), ("secrets",), ("get",))])
    named_only = [PolicyRule(("",), ("configmaps",), ("get",), ("a",))]
    assert covers(named_only, [PolicyRule(("",), ("configmaps",), ("get",), ("a",))])
    assert not covers(named_only, [PolicyRule(("",), ("configmaps",), ("get",))])


def test_the_router_reads_only_its_own_configmap_and_endpoint_slices() -> None:
    rules = router_rules("churn-router")
    assert allows(rules, "", "configmaps", "watch", "churn-router")
    assert not allows(rules, "", "configmaps", "get", "other")
    assert not any(set(r.verbs) - {"get", "list", "watch"} for r in rules)
    assert {res for r in rules for res in r.resources} == {"configmaps", "endpointslices"}


def test_operator_rules_are_exactly_what_it_needs() -> None:
    rules = operator_rules()
    flat = {
        (g, res, v) for r in rules for g in r.api_groups for res in r.resources for v in r.verbs
    }
    for rule in rules:
        assert "*" not in rule.verbs + rule.resources + rule.api_groups
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule.verbs)
    assert not any(res in {"secrets", "namespaces", "nodes"} for _, res, _ in flat)
    assert ("modelship.io", "modeldeployments", "delete") not in flat
    assert ("modelship.io", "modeldeployments/status", "patch") in flat
    assert ("modelship.io", "modeldeployments/finalizers", "update") in flat
    assert ("", "pods", "get") in flat and ("", "pods", "list") in flat
    assert ("", "pods", "delete") not in flat
    assert ("", "events", "create") in flat
    assert ("discovery.k8s.io", "endpointslices", "watch") in flat
    assert ("discovery.k8s.io", "endpointslices", "create") not in flat
    managed = {(k.group, k.plural) for k in CHILD_KINDS}
    writable = {(g, res) for g, res, v in flat if v == "create"}
    assert writable == managed | {("", "events")}


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_cluster_wide_install() -> None:
    objects = docs(rbac.render_yaml())
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert ("ServiceAccount", "modelship-operator") in kinds
    assert ("ClusterRole", "modelship-operator") in kinds
    assert ("ClusterRoleBinding", "modelship-operator") in kinds
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "modelship-operator", "namespace": "modelship-system"}
    ]


def test_namespaced_install_has_a_role_per_watched_namespace_and_no_cluster_role() -> None:
    objects = docs(rbac.render_yaml("ops", ["ml", "team-b"]))
    operator_roles = [o for o in objects if o["metadata"]["name"] == "modelship-operator"]
    assert {(o["kind"], o["metadata"].get("namespace")) for o in operator_roles} == {
        ("ServiceAccount", "ops"),
        ("Role", "ml"),
        ("RoleBinding", "ml"),
        ("Role", "team-b"),
        ("RoleBinding", "team-b"),
    }
    role = next(o for o in operator_roles if o["kind"] == "Role")
    assert role["rules"] == [r.to_api() for r in operator_rules()]


def test_leader_election_is_limited_to_one_lease_in_the_operators_namespace() -> None:
    objects = docs(rbac.render_yaml("ops"))
    role = next(o for o in objects if o["metadata"]["name"] == "modelship-operator-leader-election"
                and o["kind"] == "Role")  # fmt: skip
    assert role["metadata"]["namespace"] == "ops"
    for rule in role["rules"]:
        assert rule["resources"] == ["leases"]
        if rule["verbs"] != ["create"]:
            assert rule["resourceNames"] == ["modelship-operator"]


def test_users_get_modeldeployments_through_the_built_in_roles() -> None:
    objects = {o["metadata"]["name"]: o for o in docs(rbac.render_yaml())}
    edit, view = objects["modelship-edit"], objects["modelship-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert view["rules"][0]["verbs"] == ["get", "list", "watch"]
