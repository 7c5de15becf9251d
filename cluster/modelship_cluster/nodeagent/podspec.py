"""Pure decisions about one pod: environment, identity, mounts, phase and conditions.

Pods are plain dicts as the API serves them (camelCase JSON). Nothing here does I/O: the
ConfigMaps and Secrets a pod refers to are fetched by the caller and passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

Pod = Mapping[str, Any]
Container = Mapping[str, Any]
# (kind, name) -> the object's data (values as bytes) or None when it does not exist.
Objects = Mapping[tuple[str, str], Mapping[str, bytes] | None]

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ConfigError(ValueError):
    """The container cannot be configured yet (reported as CreateContainerConfigError)."""


def pod_id(pod: Pod) -> str:
    """A short stable id for host-side names (network namespace, veth)."""
    return str(pod["metadata"]["uid"]).replace("-", "")[:10]


def pod_key(pod: Pod) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, `$$` is a `$`,
    undefined references stay as written."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(sub, text)


def referenced_objects(pod: Pod) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the pod's env and volumes use."""
    refs: set[tuple[str, str]] = set()
    spec = pod.get("spec", {})
    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                refs.add(("ConfigMap", src["configMapRef"]["name"]))
            if "secretRef" in src:
                refs.add(("Secret", src["secretRef"]["name"]))
        for var in c.get("env", []):
            vf = var.get("valueFrom", {})
            if "configMapKeyRef" in vf:
                refs.add(("ConfigMap", vf["configMapKeyRef"]["name"]))
            if "secretKeyRef" in vf:
                refs.add(("Secret", vf["secretKeyRef"]["name"]))
    for vol in spec.get("volumes", []):
        if "configMap" in vol:
            refs.add(("ConfigMap", vol["configMap"]["name"]))
        if "secret" in vol:
            refs.add(("Secret", vol["secret"]["secretName"]))
        for src in vol.get("projected", {}).get("sources", []):
            if "configMap" in src:
                refs.add(("ConfigMap", src["configMap"]["name"]))
            if "secret" in src:
                refs.add(("Secret", src["secret"]["name"]))
    return refs


def field_value(pod: Pod, path: str, pod_ip: str, host_ip: str) -> str:
    """A `fieldRef.fieldPath` of the downward API."""
    meta, spec = pod["metadata"], pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1], {})
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef {path!r}")


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 0.001}
_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str | int | float) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text).strip())
    if not m or m.group(2) not in _UNITS:
        raise ConfigError(f"bad quantity {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def resource_value(
    container: Container, ref: Mapping[str, Any], capacity: Mapping[str, str]
) -> str:
    """`resourceFieldRef`: the container's limit (or request), else the node's capacity."""
    resource = ref["resource"]
    kind, _, name = resource.partition(".")
    resources = container.get("resources", {})
    value = resources.get(kind, {}).get(name)
    if value is None:
        value = capacity.get(name, "0")
    divisor = quantity(ref.get("divisor", "1"))
    return str(math.ceil(quantity(value) / divisor))


def service_env(services: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Docker-link style variables for Services (`KUBERNETES_SERVICE_HOST`, ...)."""
    env: dict[str, str] = {}
    for svc in services:
        ip = svc.get("spec", {}).get("clusterIP")
        ports = svc.get("spec", {}).get("ports", [])
        if not ip or ip == "None" or not ports:
            continue
        prefix = svc["metadata"]["name"].upper().replace("-", "_")
        first = ports[0]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(first["port"])
        proto = first.get("protocol", "TCP").lower()
        env[f"{prefix}_PORT"] = f"{proto}://{ip}:{first['port']}"
        for p in ports:
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
            base = f"{prefix}_PORT_{p['port']}_{p.get('protocol', 'TCP').upper()}"
            env[base] = f"{p.get('protocol', 'TCP').lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"] = p.get("protocol", "TCP").lower()
            env[f"{base}_PORT"] = str(p["port"])
            env[f"{base}_ADDR"] = ip
    return env


def container_env(
    pod: Pod,
    container: Container,
    objects: Objects,
    *,
    base: Mapping[str, str],
    services: Iterable[Mapping[str, Any]],
    pod_ip: str,
    host_ip: str,
    capacity: Mapping[str, str],
) -> dict[str, str]:
    """The container's environment, in Kubernetes' order of precedence: image env (`base`)
    < Service variables < envFrom (in order) < env (in order, with $(VAR) expansion)."""
    env = dict(base)
    if pod.get("spec", {}).get("enableServiceLinks", True):
        env.update(service_env(services))
    else:
        env.update({k: v for k, v in service_env(services).items() if k.startswith("KUBERNETES_")})
    ns = pod["metadata"]["namespace"]
    for src in container.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", src["configMapRef"])
            if "configMapRef" in src
            else ("Secret", src["secretRef"])
        )
        data = objects.get((kind, ref["name"]))
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found in namespace {ns}')
        for key, value in data.items():
            name = src.get("prefix", "") + key
            if ENV_NAME.match(name):
                env[name] = _text(value)
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var["value"]), env)
            continue
        vf = var.get("valueFrom")
        if vf is None:
            env[name] = ""
        elif "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in vf:
            env[name] = resource_value(container, vf["resourceFieldRef"], capacity)
        else:
            kind, ref = (
                ("ConfigMap", vf["configMapKeyRef"])
                if "configMapKeyRef" in vf
                else ("Secret", vf["secretKeyRef"])
            )
            data = objects.get((kind, ref["name"]))
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                if data is None:
                    raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found in namespace {ns}')
                raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
            env[name] = _text(data[ref["key"]])
    return env


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def identity(pod: Pod, container: Container, default_user: int) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary groups) from the security contexts and the image's user.

    Never root: a container process on this node shares the machine's kernel and files, so
    uid 0 is refused outright (pods in this project run as non-root anyway)."""
    psc = pod.get("spec", {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser", default_user))
    gid = csc.get("runAsGroup", psc.get("runAsGroup", uid))
    if uid == 0:
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            raise ConfigError("container has runAsNonRoot and image will run as root")
        raise ConfigError("the local node agent does not run containers as root (uid 0)")
    groups = list(psc.get("supplementalGroups", []))
    if psc.get("fsGroup") is not None:
        groups.append(psc["fsGroup"])
    return int(uid), int(gid), sorted(set(groups))


def mount_plan(
    container: Container, volume_dirs: Mapping[str, str], env: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Bind mounts (host source -> container path) for a container's volumeMounts."""
    plan = []
    for vm in container.get("volumeMounts", []):
        name = vm["name"]
        if name not in volume_dirs:
            raise ConfigError(f"volume {name!r} is not defined in the pod (or not supported)")
        source = volume_dirs[name]
        sub = vm.get("subPath") or expand(vm.get("subPathExpr", ""), env)
        if sub:
            if sub.startswith("/") or ".." in sub.split("/"):
                raise ConfigError(f"subPath {sub!r} must be a relative path without '..'")
            source = f"{source}/{sub}"
        target = vm["mountPath"]
        if not target.startswith("/"):
            raise ConfigError(f"mountPath {target!r} must be absolute")
        plan.append({"source": source, "target": target, "readOnly": bool(vm.get("readOnly"))})
    return plan


# -- status --------------------------------------------------------------------------------


def _stopped_exit(status: Mapping[str, Any]) -> int | None:
    """Exit code if the container counts as stopped (terminated, or waiting to restart)."""
    state = status.get("state", {})
    if "terminated" in state:
        return int(state["terminated"]["exitCode"])
    if "waiting" in state and "terminated" in status.get("lastState", {}):
        return int(status["lastState"]["terminated"]["exitCode"])
    return None


def phase(
    restart_policy: str,
    init_statuses: list[Mapping[str, Any]],
    init_done: bool,
    statuses: list[Mapping[str, Any]],
) -> str:
    """The pod phase, by the kubelet's rules."""
    if not init_done:
        failed = (
            any(_stopped_exit(s) not in (None, 0) for s in init_statuses)
            and restart_policy == "Never"
        )
        return "Failed" if failed else "Pending"
    running = waiting = stopped = succeeded = 0
    for s in statuses:
        state = s.get("state", {})
        code = _stopped_exit(s)
        if "running" in state:
            running += 1
        elif code is not None:
            stopped += 1
            succeeded += code == 0
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def conditions(
    previous: list[Mapping[str, Any]],
    now: str,
    *,
    sandbox_ready: bool,
    initialized: bool,
    containers_ready: bool,
) -> list[dict[str, Any]]:
    """Pod conditions; a condition keeps its lastTransitionTime while its status holds."""
    old = {c["type"]: c for c in previous}
    wanted = {
        "PodReadyToStartContainers": sandbox_ready,
        "Initialized": initialized,
        "ContainersReady": containers_ready,
        "Ready": containers_ready,
    }
    result = [dict(c) for c in previous if c["type"] not in wanted]
    for kind, ok in wanted.items():
        status = "True" if ok else "False"
        before = old.get(kind)
        if before is not None and before.get("status") == status:
            result.append(dict(before))
            continue
        cond: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": now}
        if not ok and kind in ("ContainersReady", "Ready"):
            cond["reason"] = "ContainersNotReady"
        if not ok and kind == "Initialized":
            cond["reason"] = "ContainersNotInitialized"
        result.append(cond)
    return result


def backoff_delay(restarts: int, initial: float, maximum: float) -> float:
    """Restart back-off: initial, doubled per restart, capped."""
    return float(min(maximum, initial * 2 ** max(0, restarts - 1)))


def should_restart(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


def grace_seconds(pod: Pod) -> float:
    meta = pod["metadata"]
    if meta.get("deletionGracePeriodSeconds") is not None:
        return float(meta["deletionGracePeriodSeconds"])
    return float(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))
