"""Prometheus' generated configuration and the pod discovery it reads (no cluster needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from modelship_cluster import prometheus
from modelship_cluster.pytest_plugin import skip_or_fail

POD: dict[str, Any] = {
    "metadata": {
        "name": "churn-canary-0",
        "namespace": "ml",
        "uid": "u1",
        "labels": {"modelship.io/variant": "canary", "app": "churn"},
        "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "churn-abc", "controller": True}],
    },
    "spec": {
        "nodeName": "modelship-node",
        "containers": [
            {"name": "serve", "image": "modelship/serving:1", "ports": [{"containerPort": 8080}]},
            {"name": "side", "image": "modelship/shell:1"},
        ],
    },
    "status": {
        "podIP": "10.244.0.4",
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


def test_target_groups_carry_kubernetes_sd_labels() -> None:
    groups = prometheus.pod_target_groups(POD)
    assert [g["targets"] for g in groups] == [["10.244.0.4:8080"], ["10.244.0.4"]]
    labels = groups[0]["labels"]
    assert labels["__meta_kubernetes_namespace"] == "ml"
    assert labels["__meta_kubernetes_pod_name"] == "churn-canary-0"
    assert labels["__meta_kubernetes_pod_label_modelship_io_variant"] == "canary"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert labels["__meta_kubernetes_pod_container_port_number"] == "8080"
    assert labels["__meta_kubernetes_pod_ready"] == "true"
    assert labels["__meta_kubernetes_pod_controller_kind"] == "ReplicaSet"
    no_ip = {**POD, "status": {"phase": "Pending"}}
    assert prometheus.pod_target_groups(no_ip) == []


def test_config_discovers_pods_and_keeps_annotated_ones(tmp_path: Path) -> None:
    pki = tmp_path
    url = "http://127.0.0.1:9091/targets"
    http = prometheus.config("https://10.244.0.1:6443", pki / "ca", pki / "c", pki / "k",
                             interval="5s", discovery_url=url)  # fmt: skip
    job = http["scrape_configs"][0]
    assert job["scrape_interval"] == "5s"
    assert job["http_sd_configs"] == [
        {"url": "http://127.0.0.1:9091/targets", "refresh_interval": "1s"}
    ]
    k8s = prometheus.config("https://10.244.0.1:6443", pki / "ca", pki / "c", pki / "k")
    sd = k8s["scrape_configs"][0]["kubernetes_sd_configs"][0]
    assert sd["role"] == "pod" and sd["api_server"] == "https://10.244.0.1:6443"
    assert k8s["scrape_configs"][0]["relabel_configs"] == job["relabel_configs"]
    keep = job["relabel_configs"][0]
    assert keep == {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    }


def test_generated_config_is_valid_for_the_installed_prometheus(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        skip_or_fail("promtool (Debian package prometheus) is not installed: make system-deps")
    for name in ("ca.crt", "p.crt", "p.key"):
        (tmp_path / name).write_text("")
    installed = prometheus.binary()
    cfg = prometheus.config(
        "https://10.244.0.1:6443",
        tmp_path / "ca.crt",
        tmp_path / "p.crt",
        tmp_path / "p.key",
        discovery_url=None
        if prometheus.has_kubernetes_sd(installed)
        else "http://127.0.0.1:9091/targets",
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run(["promtool", "check", "config", "--syntax-only", str(path)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
