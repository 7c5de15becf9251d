"""The test bed's NetworkPolicy agent (kube-router's policy controller): its build recipe,
its command line and RBAC (pure), and the built binary's flags. Enforcement on the node:
tests/e2e/test_network_policy.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from modelship_cluster import binaries, netpolagent


def test_the_recipe_builds_kube_router_with_its_version() -> None:
    recipe = binaries.network_policies_recipe()
    assert recipe.modules == ("github.com/cloudnativelabs/kube-router/v2@v2.1.0",)
    assert recipe.packages == ("github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",)
    assert "pkg/version.Version=v2.1.0" in recipe.ldflags
    assert binaries.network_policies_recipe("2.0.0").key() != recipe.key()
    folder = binaries.network_policies_bin_dir()
    assert folder.parent.name == f"v2.1.0-{recipe.key()}"
    assert folder in binaries.toolset().bin_dirs


def test_only_the_firewall_runs() -> None:
    argv = netpolagent.args(Path("/bin/kube-router"), Path("/kc"), "node-a", "10.96.0.0/16")
    assert "--run-firewall=true" in argv
    # kube-proxy serves Services and the bridge plugin the pod network: nothing else runs
    assert {"--run-router=false", "--run-service-proxy=false", "--enable-cni=false"} <= set(argv)
    assert "--hostname-override=node-a" in argv
    assert "--service-cluster-ip-range=10.96.0.0/16" in argv


def test_the_agent_reads_the_api_and_writes_nothing() -> None:
    role, binding = netpolagent.manifests()
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "networkpolicies" in resources and "secrets" not in resources
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": netpolagent.USER}
    ]


@pytest.mark.skipif(
    not (binaries.network_policies_bin_dir() / binaries.NETWORK_POLICIES_COMMAND).exists(),
    reason="kube-router is not built (modelship-cluster build)",
)
def test_the_built_binary_knows_the_flags_the_node_passes() -> None:
    binary = binaries.network_policies_bin_dir() / binaries.NETWORK_POLICIES_COMMAND
    shown = subprocess.run([binary, "--help"], capture_output=True, text=True, check=False)
    text = shown.stdout + shown.stderr
    for flag in netpolagent.args(binary, Path("/kc"), "n", "10.96.0.0/16")[1:]:
        assert flag.split("=")[0] in text, flag
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    assert "v2.1.0" in version.stdout + version.stderr
