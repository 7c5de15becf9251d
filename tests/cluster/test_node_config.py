"""The node's generated configuration (containerd, kubelet, CNI, CoreDNS): no cluster needed."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path

import yaml
from modelship_cluster import cni, containerd, coredns, kubelet, podnet


def runtime(tmp_path: Path) -> containerd.RuntimeConfig:
    return containerd.RuntimeConfig(root=tmp_path / "root", state=tmp_path / "state")


def test_containerd_config_is_valid_toml_with_the_settings_this_machine_needs(
    tmp_path: Path,
) -> None:
    cfg = runtime(tmp_path)
    doc = tomllib.loads(containerd.config_toml(cfg))
    assert doc["version"] == 2
    assert doc["root"] == str(cfg.root) and doc["state"] == str(cfg.state)
    assert doc["grpc"]["address"] == str(cfg.socket)
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == cfg.sandbox_image
    assert cri["enable_unprivileged_ports"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == str(cfg.cni_conf_dir)
    assert cri["registry"]["config_path"] == str(cfg.hosts_dir)


def test_every_registry_host_points_at_a_closed_loopback_port(tmp_path: Path) -> None:
    cfg = runtime(tmp_path)
    containerd.write_config(cfg)
    for host in containerd.REGISTRY_HOSTS:
        doc = tomllib.loads((cfg.hosts_dir / host / "hosts.toml").read_text())
        assert doc["server"] == containerd.CLOSED_REGISTRY
        assert list(doc["host"]) == [containerd.CLOSED_REGISTRY]
    assert containerd.CLOSED_REGISTRY.startswith("http://127.0.0.1:")


def test_kubelet_config_serves_on_the_node_address_with_real_authn_and_cgroupfs(
    tmp_path: Path,
) -> None:
    paths = kubelet.KubeletPaths(tmp_path)
    doc = yaml.safe_load(
        kubelet.config_yaml(
            node_ip="10.244.0.1",
            ca_file=tmp_path / "ca.crt",
            cert_file=tmp_path / "k.crt",
            key_file=tmp_path / "k.key",
            runtime_socket=Path("/run/x.sock"),
            cluster_dns="10.96.0.10",
            paths=paths,
        )
    )
    assert doc["kind"] == "KubeletConfiguration"
    assert doc["address"] == "10.244.0.1" and doc["readOnlyPort"] == 0
    assert doc["authentication"]["anonymous"]["enabled"] is False
    assert doc["authorization"]["mode"] == "Webhook"
    assert doc["cgroupDriver"] == "cgroupfs" and doc["failCgroupV1"] is False
    assert doc["makeIPTablesUtilChains"] is False
    assert doc["containerRuntimeEndpoint"] == "unix:///run/x.sock"
    assert doc["clusterDNS"] == ["10.96.0.10"]
    assert doc["imageGCHighThresholdPercent"] == 100


def test_kubelet_launcher_keeps_the_machines_sysctls_and_execs_the_kubelet(
    tmp_path: Path,
) -> None:
    paths = kubelet.KubeletPaths(tmp_path)
    argv = kubelet.args(Path("/bin/kubelet"), paths, tmp_path / "kc", "node-a", "10.244.0.1")
    assert argv[:4] == ["unshare", "--mount", "--propagation", "unchanged"]
    lines = argv[-1].splitlines()
    # /proc is made private first, so the bind mounts never reach the host's namespace.
    assert lines[1] == "mount --make-rprivate /proc"
    binds = [line for line in lines if line.startswith("mount --bind")]
    assert sorted(b.split()[-1] for b in binds) == sorted(
        f"/proc/sys/{name}" for name in kubelet.KUBELET_SYSCTLS
    )
    execed = shlex.split(lines[-1])
    assert execed[:2] == ["exec", "/bin/kubelet"]
    assert "--hostname-override=node-a" in execed and "--node-ip=10.244.0.1" in execed


def test_mounts_under_a_root_come_deepest_first_and_nothing_outside() -> None:
    root = Path("/s/node/kubelet")
    points = ["/", "/s/node/kubelet", "/s/node/kubelet/pods/a/volumes/x", "/s/node/kubeletx",
              "/s/node/kubelet/pods/a", "/proc"]  # fmt: skip
    assert kubelet.mounts_under(root, points) == [
        "/s/node/kubelet/pods/a/volumes/x",
        "/s/node/kubelet/pods/a",
        "/s/node/kubelet",
    ]


def test_cni_bridge_uses_the_projects_bridge_without_gateway_or_masquerade(
    tmp_path: Path,
) -> None:
    doc = json.loads(cni.conflist(tmp_path / "ipam"))
    (bridge,) = doc["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == podnet.DEFAULT.bridge
    assert bridge["isGateway"] is False and bridge["ipMasq"] is False
    assert bridge["hairpinMode"] is True
    (rng,) = bridge["ipam"]["ranges"][0]
    assert rng["subnet"] == podnet.DEFAULT.pod_cidr and rng["gateway"] == podnet.DEFAULT.gateway
    assert rng["rangeStart"] == "10.244.1.0"
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0", "gw": podnet.DEFAULT.gateway}]


def test_coredns_runs_restricted_behind_kube_dns_and_forwards_nothing() -> None:
    docs = {d["kind"]: d for d in coredns.manifests("10.96.0.10")}
    assert docs["Service"]["spec"]["clusterIP"] == "10.96.0.10"
    assert docs["Service"]["metadata"]["name"] == "kube-dns"
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert pod["dnsPolicy"] == "Default"
    corefile = docs["ConfigMap"]["data"]["Corefile"]
    assert "kubernetes cluster.local" in corefile and "forward" not in corefile
