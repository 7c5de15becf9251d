"""Least-privilege RBAC of the operator and of each router, kept in one place.

``python -m modelship_operator.rbac > manifests/rbac/operator.yaml`` renders the cluster-wide
install (a test fails when the committed file drifts); ``--namespaces a,b`` renders the
namespaced variant (a Role and RoleBinding per watched namespace instead of the ClusterRole).
The chart and the end-to-end tests use these same functions.

What each permission is for:

- ``modeldeployments``: watch the resources; ``patch`` for kopf's progress annotations and
  for clearing handled actions. ``modeldeployments/status``: write status.
  ``modeldeployments/finalizers`` (update): needed to set ``blockOwnerDeletion`` in the
  children's ownerReferences when the OwnerReferencesPermissionEnforcement admission plugin
  is on.
- every child kind (:data:`~modelship_operator.kinds.CHILD_KINDS`): server-side apply needs
  ``create`` and ``patch``; ``get``/``list``/``watch`` to observe; ``delete`` to remove what
  the spec no longer asks for (a finished canary, a PodDisruptionBudget after scaling to 1).
- ``endpointslices`` get/list/watch: the router's Role grants it, and Kubernetes only lets a
  subject create a Role whose permissions it holds itself (no ``escalate`` verb needed). The
  router's ConfigMap permission is covered by the ConfigMap child rule.
- ``pods`` get/list/watch: why a variant is not ready (image, crash, sha256 mismatch) for
  status; watched, so a pod's change reaches status at once.
- ``deployments/scale`` get/patch: scale to zero (stable's last pod goes when idle, and a
  rollout wakes it); a router whose stable may be scaled to zero gets the same on that one
  Deployment, to scale it back from zero.
- ``events`` create: an Event per transition.
- ``leases`` in the operator's own namespace: leader election, so two replicas are safe.
  ``create`` cannot be limited to a name (the name is not known to the authorizer before the
  object exists); ``get``/``update`` are limited to the one Lease.

Not needed, so not granted: ``namespaces`` (watched namespaces are listed, never
discovered), ``customresourcedefinitions`` (kopf's CRD scanning is switched off), kopf's
peering resources (leader election uses a Lease instead), ``secrets``, and any ``escalate`` or
``bind`` verb.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from modelship_operator.kinds import CHILD_KINDS, LABEL_NAME, LABEL_PART_OF
from modelship_operator.spec import GROUP, PLURAL

OPERATOR_NAME: Final = "modelship-operator"
DEFAULT_NAMESPACE: Final = "modelship-system"
READ: Final = ("get", "list", "watch")
APPLY: Final = ("get", "list", "watch", "create", "patch", "delete")
#: A Deployment's replica count through its scale subresource, and nothing else of it.
SCALE: Final = ("get", "patch")


@dataclass(frozen=True)
class PolicyRule:
    """One RBAC rule."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def to_api(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule


def router_rules(configmap: str, scale_targets: tuple[str, ...] = ()) -> tuple[PolicyRule, ...]:
    """What one router may do in its namespace: read its own ConfigMap and EndpointSlices,
    and scale the Deployments in ``scale_targets`` from zero (get and patch their ``scale``
    subresource only: it cannot change what they run).

    ``resourceNames`` limits list/watch too when the router lists with
    ``fieldSelector=metadata.name=<configmap>``, which it must.
    """
    rules: tuple[PolicyRule, ...] = (
        PolicyRule(("",), ("configmaps",), READ, (configmap,)),
        PolicyRule(("discovery.k8s.io",), ("endpointslices",), READ),
    )
    if scale_targets:
        rules += (PolicyRule(("apps",), ("deployments/scale",), SCALE, scale_targets),)
    return rules


def operator_rules() -> tuple[PolicyRule, ...]:
    """What the operator needs in every namespace it watches."""
    children: dict[str, list[str]] = {}
    for kind in CHILD_KINDS:
        children.setdefault(kind.group, []).append(kind.plural)
    return (
        PolicyRule((GROUP,), (PLURAL,), ("get", "list", "watch", "patch")),
        PolicyRule((GROUP,), (f"{PLURAL}/status",), ("get", "patch")),
        PolicyRule((GROUP,), (f"{PLURAL}/finalizers",), ("update",)),
        *(PolicyRule((group,), tuple(plurals), APPLY) for group, plurals in children.items()),
        PolicyRule(("discovery.k8s.io",), ("endpointslices",), READ),
        # Scale to zero, and granting a router the same to scale from zero.
        PolicyRule(("apps",), ("deployments/scale",), SCALE),
        PolicyRule(("",), ("pods",), ("get", "list", "watch")),
        PolicyRule(("",), ("events",), ("create",)),
    )


def leader_election_rules(lease: str = OPERATOR_NAME) -> tuple[PolicyRule, ...]:
    """What the operator needs in its own namespace to hold the leader Lease."""
    return (
        PolicyRule(("coordination.k8s.io",), ("leases",), ("create",)),
        PolicyRule(("coordination.k8s.io",), ("leases",), ("get", "update"), (lease,)),
    )


def allows(rules: Iterable[PolicyRule], group: str, resource: str, verb: str, name: str) -> bool:
    """Whether ``rules`` permit ``verb`` on the object ``name`` of ``group``/``resource``."""
    return any(
        group in rule.api_groups
        and resource in rule.resources
        and verb in rule.verbs
        and (not rule.resource_names or name in rule.resource_names)
        for rule in rules
    )


def covers(holder: Iterable[PolicyRule], granted: Iterable[PolicyRule]) -> bool:
    """Whether ``holder`` holds every permission in ``granted`` (so it may create a Role with
    them without the ``escalate`` verb). A named rule is checked for each of its names; an
    unnamed one needs an unnamed rule in ``holder``."""
    held = list(holder)
    for rule in granted:
        names = rule.resource_names or ("",)
        for group in rule.api_groups:
            for resource in rule.resources:
                for verb in rule.verbs:
                    for name in names:
                        if name == "":
                            ok = any(
                                group in h.api_groups
                                and resource in h.resources
                                and verb in h.verbs
                                and not h.resource_names
                                for h in held
                            )
                        else:
                            ok = allows(held, group, resource, verb, name)
                        if not ok:
                            return False
    return True


# --- manifests ------------------------------------------------------------------------------


def _labels() -> dict[str, str]:
    return {LABEL_NAME: OPERATOR_NAME, LABEL_PART_OF: "modelship"}


def _rules(rules: Sequence[PolicyRule]) -> list[dict[str, Any]]:
    return [r.to_api() for r in rules]


def service_account(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": OPERATOR_NAME, "namespace": namespace, "labels": _labels()},
    }


def _subject(namespace: str) -> list[dict[str, str]]:
    return [{"kind": "ServiceAccount", "name": OPERATOR_NAME, "namespace": namespace}]


def _role_pair(
    kind: str, name: str, rules: Sequence[PolicyRule], operator_ns: str, namespace: str | None
) -> list[dict[str, Any]]:
    """A (Cluster)Role and its binding to the operator's ServiceAccount."""
    meta: dict[str, Any] = {"name": name, "labels": _labels()}
    if namespace is not None:
        meta["namespace"] = namespace
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "rules": _rules(rules),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": f"{kind}Binding",
        "metadata": dict(meta),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": _subject(operator_ns),
    }
    return [role, binding]


def user_roles() -> list[dict[str, Any]]:
    """ClusterRoles that extend Kubernetes' built-in edit/admin and view roles to
    ModelDeployments (aggregation), so users need no extra grants to use them."""
    edit = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
    roles = []
    for suffix, verbs, aggregate in (
        ("edit", edit, ("edit", "admin")),
        ("view", READ, ("view",)),
    ):
        labels = _labels() | {
            f"rbac.authorization.k8s.io/aggregate-to-{role}": "true" for role in aggregate
        }
        roles.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": f"modelship-{suffix}", "labels": labels},
                "rules": _rules([PolicyRule((GROUP,), (PLURAL,), verbs)]),
            }
        )
    return roles


def manifests(
    operator_namespace: str = DEFAULT_NAMESPACE, watch: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Every RBAC object of an install: cluster-wide when ``watch`` is empty, else one Role
    and RoleBinding per watched namespace."""
    objects = [service_account(operator_namespace)]
    if watch:
        for namespace in sorted(set(watch)):
            objects += _role_pair(
                "Role", OPERATOR_NAME, operator_rules(), operator_namespace, namespace
            )
    else:
        objects += _role_pair(
            "ClusterRole", OPERATOR_NAME, operator_rules(), operator_namespace, None
        )
    objects += _role_pair(
        "Role",
        f"{OPERATOR_NAME}-leader-election",
        leader_election_rules(),
        operator_namespace,
        operator_namespace,
    )
    return objects + user_roles()


HEADER: Final = (
    "# Generated from operator/modelship_operator/rbac.py by\n"
    "#   python -m modelship_operator.rbac > manifests/rbac/operator.yaml\n"
    "# Do not edit by hand: tests/operator/test_rbac.py fails when this file drifts.\n"
)


def render_yaml(operator_namespace: str = DEFAULT_NAMESPACE, watch: Sequence[str] = ()) -> str:
    from modelship_operator.crd import dump_yaml

    header = HEADER if not watch else "# Generated by python -m modelship_operator.rbac\n"
    return header + "".join(
        "---\n" + dump_yaml(obj) for obj in manifests(operator_namespace, watch)
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help="namespace the operator runs in"
    )
    parser.add_argument(
        "--namespaces",
        default="",
        help="comma-separated namespaces to watch (namespaced variant); empty: cluster-wide",
    )
    args = parser.parse_args(argv)
    watch = [n.strip() for n in args.namespaces.split(",") if n.strip()]
    sys.stdout.write(render_yaml(args.namespace, watch))


if __name__ == "__main__":
    main()
