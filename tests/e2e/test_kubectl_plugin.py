"""`kubectl modelship` as a user runs it: kubectl finds the plugin on PATH and it reads and
steers ModelDeployments on the real API server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from modelship_cluster.binaries import toolset

REPO = Path(__file__).resolve().parents[2]
SHA = "a" * 64


def resource(name: str, rolling: bool) -> dict[str, Any]:
    """spec.model 2.0.0 (being rolled out over 1.0.0) when ``rolling``, else 1.0.0."""
    version = "2.0.0" if rolling else "1.0.0"
    spec: dict[str, Any] = {
        "model": {"version": version, "uri": f"http://models.example/m{version}.skops",
                  "sha256": SHA},
        "strategy": {"steps": [20, 50]},
    }  # fmt: skip
    return {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture
def plugin(local_cluster: Any, kubectl: Any) -> Any:
    kubectl("apply", "--server-side", "-f", str(REPO / "manifests/crds/modeldeployments.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelship.io")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["KUBECONFIG"] = str(local_cluster.kubeconfig)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(toolset().kubectl), "modelship", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_kubectl_finds_the_plugin(plugin: Any) -> None:
    result = plugin("--help")
    assert result.returncode == 0
    for command in ("status", "history", "promote", "abort", "retry", "pause", "resume", "undo"):
        assert command in result.stdout


def test_status_shows_phase_traffic_conditions_and_the_analysis_table(
    plugin: Any, kubectl: Any, kube_api: Any, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource("churn", True)))
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        "modelship.io", "v1alpha2", namespace, "modeldeployments", "churn",
        {
            "status": {
                "phase": "Progressing",
                "step": 1,
                "traffic": {"stable": 80, "canary": 20},
                "stable": {"version": "1.0.0"},
                "canary": {"version": "2.0.0"},
                "lastAnalysis": [
                    {"metric": "success-rate", "variant": "canary", "value": 99.5,
                     "threshold": ">= 99", "samples": 120, "verdict": "Successful"},
                ],
            }
        },
    )  # fmt: skip
    result = plugin("status", "churn", "-n", namespace)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "churn  Progressing  step 1/2  stable 1.0.0 80% | canary 2.0.0 20%"
    analysis = next(line for line in lines if "success-rate" in line).split()
    assert analysis == ["success-rate", "canary", "99.50", "-", ">=", "99", "120", "Successful"]


def test_actions_write_the_annotation_or_the_paused_field(
    plugin: Any, kubectl: Any, kube_api: Any, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource("churn", True)))
    custom = client.CustomObjectsApi(kube_api)
    custom.patch_namespaced_custom_object_status(
        "modelship.io", "v1alpha2", namespace, "modeldeployments", "churn",
        {"status": {"phase": "Progressing", "step": 0}},
    )  # fmt: skip

    def get() -> dict[str, Any]:
        return custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "modelship.io", "v1alpha2", namespace, "modeldeployments", "churn"
        )

    seen = set()
    for action in ("promote", "abort", "retry", "promote"):
        result = plugin(action, "churn", "-n", namespace)
        assert result.returncode == 0, result.stderr
        value = get()["metadata"]["annotations"]["modelship.io/action"]
        assert value.startswith(f"{action}/")
        seen.add(value)
    assert len(seen) == 4, "asking twice is two distinct requests"

    assert plugin("pause", "churn", "-n", namespace).returncode == 0
    assert get()["spec"]["paused"] is True
    assert plugin("resume", "churn", "-n", namespace).returncode == 0
    assert get()["spec"]["paused"] is False


def test_clear_errors_for_a_missing_resource_and_no_rollout(
    plugin: Any, kubectl: Any, namespace: str
) -> None:
    missing = plugin("status", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert f'modeldeployment "nope" not found in namespace "{namespace}"' in missing.stderr
    assert "Traceback" not in missing.stderr

    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource("solo", False)))
    no_rollout = plugin("promote", "solo", "-n", namespace)
    assert no_rollout.returncode == 1
    assert "has no rollout under way to promote" in no_rollout.stderr
    no_previous = plugin("undo", "solo", "-n", namespace)
    assert no_previous.returncode == 1
    assert "has no previous model to go back to" in no_previous.stderr


def test_history_lists_past_rollouts(
    plugin: Any, kubectl: Any, kube_api: Any, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource("churn", False)))
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        "modelship.io", "v1alpha2", namespace, "modeldeployments", "churn",
        {
            "status": {
                "history": [
                    {"version": "2.0.0", "outcome": "Promoted", "at": "2026-11-27T10:00:00Z"},
                    {"version": "3.0.0", "outcome": "RolledBack",
                     "reason": "accuracy 0.66 below stable - 0.05", "at": "2026-11-27T10:05:00Z"},
                ],
                "rolledOut": {
                    "current": {"version": "2.0.0", "uri": "http://m/2", "sha256": SHA},
                    "previous": {"version": "1.0.0", "uri": "http://m/1", "sha256": SHA},
                },
            }
        },
    )  # fmt: skip
    result = plugin("history", "churn", "-n", namespace)
    assert result.returncode == 0, result.stderr
    assert "rolled out: 2.0.0" in result.stdout and "previous:   1.0.0" in result.stdout
    rolled_back = next(line for line in result.stdout.splitlines() if "3.0.0" in line)
    assert "RolledBack" in rolled_back and "accuracy 0.66 below stable - 0.05" in rolled_back
    # undo: spec.model goes back to the previous stable model, as a reverted commit would.
    undo = plugin("undo", "churn", "-n", namespace)
    assert undo.returncode == 0, undo.stderr
    model = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "modelship.io", "v1alpha2", namespace, "modeldeployments", "churn"
    )["spec"]["model"]
    assert (model["version"], model["uri"]) == ("1.0.0", "http://m/1")
