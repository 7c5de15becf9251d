"""A pod's volumes as host folders, bind-mounted into its containers by the launcher.

emptyDir is a plain folder. ConfigMap, Secret, downwardAPI and projected volumes are
written the way the kubelet writes them: files in a timestamped folder, a `..data` link
switched atomically to the newest one, and one link per top-level name into `..data`, so
a reader sees either the old or the new content, never half of each.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelship_cluster.nodeagent.podspec import ConfigError, Objects, Pod, field_value

# (namespace, serviceAccount, audience or None, expirationSeconds) -> (token, expires at epoch)
TokenIssuer = Callable[[Pod, str, str | None, int], Awaitable[tuple[str, float]]]

UNSUPPORTED_HINT = "supported: emptyDir, configMap, secret, downwardAPI, projected"


@dataclass
class FileSpec:
    content: bytes
    mode: int


def decode_object(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    """A ConfigMap's or Secret's data as bytes per key."""
    data: dict[str, bytes] = {}
    if kind == "ConfigMap":
        data.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    else:
        data.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
    return data


def _keyed_files(
    kind: str,
    name: str,
    data: Mapping[str, bytes] | None,
    items: list[Mapping[str, Any]] | None,
    mode: int,
    optional: bool,
    ns: str,
) -> dict[str, FileSpec]:
    if data is None:
        if optional:
            return {}
        raise ConfigError(f'{kind.lower()} "{name}" not found in namespace {ns}')
    if not items:
        return {k: FileSpec(v, mode) for k, v in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise ConfigError(f"couldn't find key {item['key']} in {kind} {ns}/{name}")
        files[item["path"]] = FileSpec(data[item["key"]], item.get("mode", mode))
    return files


def _downward_files(
    pod: Pod, items: list[Mapping[str, Any]], mode: int, pod_ip: str, host_ip: str
) -> dict[str, FileSpec]:
    files = {}
    for item in items:
        if "fieldRef" not in item:
            raise ConfigError("downwardAPI volumes support fieldRef items only")
        value = field_value(pod, item["fieldRef"]["fieldPath"], pod_ip, host_ip)
        files[item["path"]] = FileSpec(value.encode(), item.get("mode", mode))
    return files


async def volume_files(
    pod: Pod,
    volume: Mapping[str, Any],
    objects: Objects,
    issue_token: TokenIssuer,
    pod_ip: str,
    host_ip: str,
) -> tuple[dict[str, FileSpec], float | None]:
    """Files of a ConfigMap/Secret/downwardAPI/projected volume, and when its token expires."""
    ns = pod["metadata"]["namespace"]
    expires: float | None = None
    if "configMap" in volume:
        v = volume["configMap"]
        files = _keyed_files(
            "ConfigMap",
            v["name"],
            objects.get(("ConfigMap", v["name"])),
            v.get("items"),
            v.get("defaultMode", 0o644),
            bool(v.get("optional")),
            ns,
        )
        return files, None
    if "secret" in volume:
        v = volume["secret"]
        files = _keyed_files(
            "Secret",
            v["secretName"],
            objects.get(("Secret", v["secretName"])),
            v.get("items"),
            v.get("defaultMode", 0o644),
            bool(v.get("optional")),
            ns,
        )
        return files, None
    if "downwardAPI" in volume:
        v = volume["downwardAPI"]
        mode = v.get("defaultMode", 0o644)
        return _downward_files(pod, v.get("items", []), mode, pod_ip, host_ip), None
    v = volume["projected"]
    mode = v.get("defaultMode", 0o644)
    files = {}
    for src in v.get("sources", []):
        if "serviceAccountToken" in src:
            t = src["serviceAccountToken"]
            sa = pod.get("spec", {}).get("serviceAccountName") or "default"
            token, expires_at = await issue_token(
                pod, sa, t.get("audience"), int(t.get("expirationSeconds", 3600))
            )
            files[t["path"]] = FileSpec(token.encode(), mode)
            expires = expires_at if expires is None else min(expires, expires_at)
        elif "configMap" in src:
            c = src["configMap"]
            data = objects.get(("ConfigMap", c["name"]))
            files.update(
                _keyed_files(
                    "ConfigMap", c["name"], data, c.get("items"), mode, bool(c.get("optional")), ns
                )
            )
        elif "secret" in src:
            c = src["secret"]
            data = objects.get(("Secret", c["name"]))
            files.update(
                _keyed_files(
                    "Secret", c["name"], data, c.get("items"), mode, bool(c.get("optional")), ns
                )
            )
        elif "downwardAPI" in src:
            files.update(
                _downward_files(pod, src["downwardAPI"].get("items", []), mode, pod_ip, host_ip)
            )
        else:
            raise ConfigError(f"unsupported projected source {sorted(src)}")
    return files, expires


def volume_kind(volume: Mapping[str, Any]) -> str:
    for kind in ("emptyDir", "configMap", "secret", "downwardAPI", "projected"):
        if kind in volume:
            return kind
    other = sorted(k for k in volume if k != "name")
    raise ConfigError(
        f"volume {volume['name']!r}: {other} not supported on this node ({UNSUPPORTED_HINT})"
    )


def write_atomic(
    directory: Path, files: Mapping[str, FileSpec], owner: tuple[int, int] | None
) -> bool:
    """Publish `files` in `directory` atomically; False if the content was already there."""
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / "..data"
    if data_link.exists() and _same(data_link, files):
        return False
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir(mode=0o755)
    for rel, spec in files.items():
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ConfigError(f"volume path {rel!r} must be relative without '..'")
        path = stamp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(spec.content)
        path.chmod(spec.mode)
        if owner:
            os.chown(path, owner[0], owner[1])
    tmp = directory / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(stamp.name)
    old = os.readlink(data_link) if data_link.is_symlink() else None
    os.replace(tmp, data_link)
    tops = {rel.split("/")[0] for rel in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in tops:
            entry.unlink()
    if old:
        shutil.rmtree(directory / old, ignore_errors=True)
    return True


def _same(data_link: Path, files: Mapping[str, FileSpec]) -> bool:
    current = data_link.resolve()
    found = {str(p.relative_to(current)) for p in current.rglob("*") if p.is_file()}
    if found != set(files):
        return False
    for rel, spec in files.items():
        path = current / rel
        if path.read_bytes() != spec.content or (path.stat().st_mode & 0o7777) != spec.mode:
            return False
    return True


def make_empty_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)
