"""The kinds of child objects the operator manages, and the labels that find them again.

One list, used by rendering (what may be produced), pruning (what to look for when deciding
what to delete) and RBAC (what the operator must be allowed to touch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MANAGED_BY: Final = "modelship"

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT: Final = "modelship.io/deployment"
LABEL_VARIANT: Final = "modelship.io/variant"
LABEL_MODEL_VERSION: Final = "modelship.io/model-version"


@dataclass(frozen=True)
class ChildKind:
    """A Kubernetes kind the operator creates for a ModelDeployment."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        """API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]


CHILD_KINDS: Final[tuple[ChildKind, ...]] = (
    ChildKind("v1", "ServiceAccount", "serviceaccounts"),
    ChildKind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    ChildKind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    ChildKind("v1", "ConfigMap", "configmaps"),
    ChildKind("v1", "Service", "services"),
    ChildKind("apps/v1", "Deployment", "deployments"),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ChildKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
)


def child_kind(api_version: str, kind: str) -> ChildKind:
    """The ChildKind for ``api_version``/``kind`` (KeyError if the operator never makes it)."""
    for candidate in CHILD_KINDS:
        if candidate.api_version == api_version and candidate.kind == kind:
            return candidate
    raise KeyError(f"{api_version}/{kind}")


def selector(deployment: str) -> str:
    """Label selector of every child of the ModelDeployment ``deployment``."""
    return f"{LABEL_DEPLOYMENT}={deployment},{LABEL_MANAGED_BY}={MANAGED_BY}"


@dataclass(frozen=True, order=True)
class ChildRef:
    """Enough to address (and delete) one child object."""

    api_version: str
    kind: str
    name: str
