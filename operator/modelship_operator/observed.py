"""What exists in the cluster, summarised from raw API objects: pure functions, no I/O.

The handlers list a ModelDeployment's children and pods (by label) and pass the dicts here;
everything downstream (status, conditions, plans) works on these small typed views.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelship_operator.kinds import LABEL_MODEL_VERSION, LABEL_VARIANT

#: Waiting reasons that are part of a normal start, not a problem.
_STARTING: Final = frozenset({"ContainerCreating", "PodInitializing"})

#: What a user can do about a container stuck in each waiting reason.
_HINTS: Final = {
    "ErrImagePull": "check the image name (spec.images or the operator's default images)",
    "ImagePullBackOff": "check the image name (spec.images or the operator's default images)",
    "InvalidImageName": "fix the image reference in spec.images",
    "OOMKilled": "the container used more memory than its limit: raise "
    "spec.resources.limits.memory, or serve a smaller model",
    "CrashLoopBackOff": "the container exits soon after starting; its last output follows",
    "Restarting": "the container exited with an error and is starting again; its last "
    "output follows",
    "CreateContainerConfigError": "a referenced ConfigMap, Secret or volume is missing",
}
_MESSAGE_LIMIT: Final = 600


@dataclass(frozen=True)
class DeploymentView:
    """One Deployment, as far as status and conditions care."""

    name: str
    variant: str | None
    model_version: str | None
    sha256: str | None
    desired: int
    total: int
    ready: int
    updated: int
    available: int
    generation: int
    observed_generation: int
    stalled: str | None = None

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the current template and is available (kubectl rollout status)."""
        return (
            self.observed_generation >= self.generation
            and self.updated >= self.desired
            and self.total == self.updated
            and self.available >= self.desired
        )


@dataclass(frozen=True)
class PodProblem:
    """A pod that cannot serve, with the reason a user can act on."""

    pod: str
    container: str
    variant: str | None
    reason: str
    message: str

    def describe(self) -> str:
        hint = _HINTS.get(self.reason)
        text = f"pod {self.pod}, container {self.container}: {self.reason}"
        if hint:
            text += f" ({hint})"
        if self.message:
            text += f": {self.message}"
        return text


@dataclass(frozen=True)
class Observed:
    """The children and pods of one ModelDeployment, as listed."""

    children: tuple[Mapping[str, Any], ...] = ()
    deployments: Mapping[str, DeploymentView] = field(default_factory=dict)
    problems: tuple[PodProblem, ...] = ()
    routing_json: str | None = None

    def deployment(self, name: str) -> DeploymentView | None:
        return self.deployments.get(name)


def _env_value(template: Mapping[str, Any], name: str) -> str | None:
    for container in template.get("spec", {}).get("containers", []):
        for env in container.get("env", []):
            if env.get("name") == name and "value" in env:
                return str(env["value"])
    return None


def _pinned_sha256(template: Mapping[str, Any]) -> str | None:
    """The sha256 a serving template pins; "" for an unpinned one (a models:/ version
    without spec.model.sha256 is rendered without MODELSHIP_MODEL_SHA256, as the API
    server drops an empty env value), None for a template that is no model server's."""
    pinned = _env_value(template, "MODELSHIP_MODEL_SHA256")
    if pinned is None and _env_value(template, "MODELSHIP_MODEL_URI") is not None:
        return ""
    return pinned


def deployment_view(obj: Mapping[str, Any]) -> DeploymentView:
    """Summarise an apps/v1 Deployment as returned by the API."""
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
    template = spec.get("template", {})
    labels = template.get("metadata", {}).get("labels", {})
    stalled = None
    for condition in status.get("conditions", []):
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            stalled = condition.get("message") or "progress deadline exceeded"
    return DeploymentView(
        name=meta["name"],
        variant=labels.get(LABEL_VARIANT),
        model_version=labels.get(LABEL_MODEL_VERSION),
        sha256=_pinned_sha256(template),
        desired=int(spec.get("replicas", 1)),
        total=int(status.get("replicas", 0)),
        ready=int(status.get("readyReplicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        available=int(status.get("availableReplicas", 0)),
        generation=int(meta.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        stalled=stalled,
    )


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else "..." + text[-_MESSAGE_LIMIT:]


def pod_problems(pod: Mapping[str, Any]) -> list[PodProblem]:
    """Why this pod cannot serve, if it is stuck (not merely starting)."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    if meta.get("deletionTimestamp"):
        return []
    name = meta.get("name", "?")
    variant = (meta.get("labels") or {}).get(LABEL_VARIANT)
    problems = []
    for condition in status.get("conditions", []):
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            message = _clip(condition.get("message", ""))
            problems.append(PodProblem(name, "-", variant, "Unschedulable", message))
    if status.get("phase") == "Failed":
        message = _clip(status.get("message", ""))
        reason = status.get("reason") or "PodFailed"
        problems.append(PodProblem(name, "-", variant, reason, message))
    for container in status.get("containerStatuses", []):
        if container.get("ready"):
            continue
        waiting = container.get("state", {}).get("waiting")
        last = container.get("lastState", {}).get("terminated") or {}
        # Between two back-offs a crash-looping container runs again for a while: it is
        # still failing until it becomes ready, or the condition would flap with each try.
        restarting = bool(last) and (waiting is None or waiting.get("reason") in _STARTING)
        if restarting or (waiting and waiting.get("reason") not in _STARTING):
            reason = "Restarting" if restarting else (waiting or {}).get("reason") or "Waiting"
            if last.get("reason") == "OOMKilled":
                reason = "OOMKilled"  # the cause, not the back-off it is waiting in
            if last:
                # The container ran and exited: its own words (termination message, or the
                # log tail with FallbackToLogsOnError) say why, not the back-off timer.
                code = last.get("exitCode")
                message = _clip(
                    f"exit code {code}: {last.get('message') or last.get('reason', '')}"
                )
            else:
                message = _clip((waiting or {}).get("message", ""))
            problems.append(PodProblem(name, container.get("name", "?"), variant, reason, message))
    return problems


def observe(
    children: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]] = (),
    routing_configmap: str | None = None,
    routing_key: str = "routing.json",
) -> Observed:
    """Build the view of one ModelDeployment from its listed children and pods."""
    listed = tuple(children)
    deployments = {
        obj["metadata"]["name"]: deployment_view(obj)
        for obj in listed
        if obj.get("kind") == "Deployment"
    }
    routing_json = None
    for obj in listed:
        if obj.get("kind") == "ConfigMap" and obj["metadata"]["name"] == routing_configmap:
            routing_json = (obj.get("data") or {}).get(routing_key)
    problems = tuple(p for pod in pods for p in pod_problems(pod))
    return Observed(
        children=listed, deployments=deployments, problems=problems, routing_json=routing_json
    )
