"""Prometheus for the local cluster: Debian's package, a generated configuration that
discovers pods through the apiserver, listening on 127.0.0.1 only.

Discovery: `kubernetes_sd_configs` (role pod) when the installed Prometheus has it.
Debian's build (2.42.0+ds) is compiled without Kubernetes service discovery ("field
kubernetes_sd_configs not found in type config.ScrapeConfig"), so then a small discovery
process (`python -m modelship_cluster.prometheus discover`) lists and watches pods on the
apiserver and serves the same target groups, with the same `__meta_kubernetes_pod_*`
labels, to Prometheus' `http_sd_configs`. The relabelling is the same either way.

Which pods are scraped (annotations on the pod, as most charts write them):
  prometheus.io/scrape: "true"     required
  prometheus.io/port:   "8080"     the port serving metrics (else the declared container port)
  prometheus.io/path:   "/metrics" the path (default /metrics)
  prometheus.io/scheme: "http"     http (default) or https
Each series gets `namespace`, `pod`, `container` and `node` labels, plus every pod label
with its name made Prometheus-safe (`modelship.io/variant` -> `modelship_io_variant`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PORT = 9090
DEFAULT_INTERVAL = "2s"


def config(
    api_server: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    interval: str = DEFAULT_INTERVAL,
    discovery_url: str | None = None,
) -> dict[str, Any]:
    """prometheus.yml as a dict (pure): Kubernetes discovery, or HTTP discovery from
    `discovery_url` (the discovery process) when given."""
    tls = {"ca_file": str(ca_file), "cert_file": str(cert_file), "key_file": str(key_file)}
    sd: dict[str, Any]
    if discovery_url:
        sd = {"http_sd_configs": [{"url": discovery_url, "refresh_interval": "1s"}]}
    else:
        sd = {
            "kubernetes_sd_configs": [{"role": "pod", "api_server": api_server, "tls_config": tls}]
        }
    meta = "__meta_kubernetes_pod_"
    relabel: list[dict[str, Any]] = [
        {"source_labels": [f"{meta}annotation_prometheus_io_scrape"], "action": "keep",
         "regex": "true"},
        {"source_labels": [f"{meta}phase"], "action": "keep", "regex": "Running"},
        {"source_labels": [f"{meta}annotation_prometheus_io_scheme"], "action": "replace",
         "regex": "(https?)", "target_label": "__scheme__"},
        {"source_labels": [f"{meta}annotation_prometheus_io_path"], "action": "replace",
         "regex": "(.+)", "target_label": "__metrics_path__"},
        {"source_labels": [f"{meta}ip", f"{meta}annotation_prometheus_io_port"],
         "action": "replace", "regex": r"(.+);(\d+)", "replacement": "$1:$2",
         "target_label": "__address__"},
        {"action": "labelmap", "regex": f"{meta}label_(.+)"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": [f"{meta}name"], "target_label": "pod"},
        {"source_labels": [f"{meta}container_name"], "target_label": "container"},
        {"source_labels": [f"{meta}node_name"], "target_label": "node"},
    ]  # fmt: skip
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "scrape_interval": interval,
                "scrape_timeout": interval,
                **sd,
                "relabel_configs": relabel,
            }
        ],
    }


def write_config(directory: Path, cfg: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def binary() -> Path:
    found = shutil.which("prometheus")
    if not found:
        raise FileNotFoundError(
            "prometheus is not installed: run `make system-deps` (Debian package prometheus)"
        )
    return Path(found)


def args(
    config_file: Path, data_dir: Path, port: int = DEFAULT_PORT, host: str = "127.0.0.1"
) -> list[str]:
    return [
        str(binary()),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={host}:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]


def url(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}"


def has_kubernetes_sd(path: Path) -> bool:
    """Whether this Prometheus binary was built with Kubernetes service discovery."""
    needle = b"kubernetes_sd_configs"
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(1 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False


# -- discovery: pods -> target groups, as kubernetes_sd (role pod) makes them ------------------

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def sanitize(name: str) -> str:
    return _UNSAFE.sub("_", name)


def pod_target_groups(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Target groups of one pod, with kubernetes_sd's role-pod labels (pure).

    One target per declared container port (`podIP:port`), or one per container without
    ports (`podIP`); none while the pod has no IP."""
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status") or {}
    ip = status.get("podIP")
    if not ip:
        return []
    m = "__meta_kubernetes_"
    labels: dict[str, str] = {
        f"{m}namespace": meta["namespace"],
        f"{m}pod_name": meta["name"],
        f"{m}pod_ip": ip,
        f"{m}pod_uid": meta.get("uid", ""),
        f"{m}pod_node_name": spec.get("nodeName", ""),
        f"{m}pod_host_ip": status.get("hostIP", ""),
        f"{m}pod_phase": status.get("phase", ""),
        f"{m}pod_ready": next(
            (c["status"].lower() for c in status.get("conditions", []) if c["type"] == "Ready"),
            "unknown",
        ),
    }
    for key, value in (meta.get("labels") or {}).items():
        labels[f"{m}pod_label_{sanitize(key)}"] = value
        labels[f"{m}pod_labelpresent_{sanitize(key)}"] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        labels[f"{m}pod_annotation_{sanitize(key)}"] = value
        labels[f"{m}pod_annotationpresent_{sanitize(key)}"] = "true"
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller"):
            labels[f"{m}pod_controller_kind"] = owner["kind"]
            labels[f"{m}pod_controller_name"] = owner["name"]
    groups = []
    for kind, containers in (
        ("true", spec.get("initContainers", [])),
        ("false", spec.get("containers", [])),
    ):
        for c in containers:
            base = {**labels, f"{m}pod_container_name": c["name"],
                    f"{m}pod_container_image": c.get("image", ""),
                    f"{m}pod_container_init": kind}  # fmt: skip
            ports = c.get("ports") or []
            if not ports and kind == "false":
                groups.append({"targets": [ip], "labels": base})
            for p in ports:
                groups.append({
                    "targets": [f"{ip}:{p['containerPort']}"],
                    "labels": {**base,
                               f"{m}pod_container_port_name": p.get("name", ""),
                               f"{m}pod_container_port_number": str(p["containerPort"]),
                               f"{m}pod_container_port_protocol": p.get("protocol", "TCP")},
                })  # fmt: skip
    return groups


async def serve_discovery(kubeconfig: Path, host: str, port: int) -> None:
    """List and watch all pods; answer `GET /targets` with their target groups."""
    from modelship_kube.informer import SYNC, ListWatch
    from modelship_kube.request import Client

    pods: dict[str, Mapping[str, Any]] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()).strip():
                pass
            if request.split()[1:2] == [b"/targets"]:
                groups = [g for pod in list(pods.values()) for g in pod_target_groups(pod)]
                body, code = json.dumps(groups).encode(), b"200 OK"
            else:
                body, code = b"not found", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 "
                + code
                + b"\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server, Client.connect(kubeconfig) as client:
        # The shared list-and-watch: re-lists on 410, backs off on errors.
        async for kind, obj in ListWatch(client, "/api/v1/pods", what="pods"):
            if kind == SYNC:
                pods = {p["metadata"]["uid"]: p for p in obj.get("items", [])}
            elif kind == "DELETED":
                pods.pop(obj["metadata"]["uid"], None)
            else:
                pods[obj["metadata"]["uid"]] = obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelship_cluster.prometheus",
        description="Pod discovery for Prometheus builds without Kubernetes SD: serves "
        "kubernetes_sd-style target groups (role pod) at http://HOST:PORT/targets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("discover", help="list+watch pods and serve their target groups")
    d.add_argument("--kubeconfig", type=Path, required=True)
    d.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT + 1}", help="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve_discovery(args.kubeconfig, host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
