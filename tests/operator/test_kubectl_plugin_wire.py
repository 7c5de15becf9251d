"""`kubectl modelship` over real HTTP against the API stand-in (kube_standin): the
kubeconfig rules (file, context, the context's namespace), what each command sends, and
the errors a user sees. The plugin run by kubectl against the local cluster is
tests/e2e/test_kubectl_plugin.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kube_standin import ApiStandIn, Recorded, Reply, status
from modelship_operator.kubectl_plugin import PluginError, run

MDS = "/apis/modelship.io/v1alpha2/namespaces/{}/modeldeployments/{}"


def resource(name: str, rolling: bool) -> dict[str, Any]:
    """churn rolls 2.0.0 out over 1.0.0; plain serves 1.0.0 (and served 0.9.0 before)."""
    version = "2.0.0" if rolling else "1.0.0"
    model = {"version": version, "uri": f"file:///m/{version}", "sha256": "a" * 64}
    before = {"version": "0.9.0", "uri": "file:///m/0.9.0", "sha256": "b" * 64}
    serving = {"version": "1.0.0", "uri": "file:///m/1.0.0", "sha256": "a" * 64}
    return {"apiVersion": "modelship.io/v1alpha2", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"model": model, "strategy": {"steps": [20, 50]}},
            "status": {"phase": "Progressing" if rolling else "Promoted",
                       "step": 1 if rolling else None,
                       "traffic": {"stable": 80, "canary": 20} if rolling else None,
                       "rolledOut": {"current": serving, "previous": before}}}  # fmt: skip


def script(request: Recorded) -> Reply:
    if request.path == MDS.format("team", "churn"):
        return Reply(200, resource("churn", rolling=True))
    if request.path == MDS.format("team", "plain"):
        return Reply(200, resource("plain", rolling=False))
    if request.path.startswith(MDS.format("locked", "")):
        return Reply(403, status(403, "Forbidden", 'user "dev" cannot get modeldeployments'))
    return Reply(404, status(404, "NotFound", "not found"))


def kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config"
    path.write_text(
        "current-context: dev\n"
        f"clusters: [{{name: c, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: u, user: {token: dev-token}}, {name: o, user: {token: other-token}}]\n"
        "contexts: [{name: dev, context: {cluster: c, user: u, namespace: team}},\n"
        "           {name: other, context: {cluster: c, user: o}}]\n"
    )
    return path


def test_commands_on_the_wire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ApiStandIn(script) as server:
        config = str(kubeconfig(tmp_path, server.url))
        assert run(["--kubeconfig", config, "status", "churn"]) == 0
        assert capsys.readouterr().out.startswith("churn  Progressing  step 1/2")
        assert run(["--kubeconfig", config, "pause", "churn"]) == 0
        assert run(["--kubeconfig", config, "promote", "churn"]) == 0
        assert "promote requested (promote/" in capsys.readouterr().out
        with pytest.raises(PluginError, match=r"no rollout under way to abort \(phase Promoted\)"):
            run(["--kubeconfig", config, "abort", "plain"])
        assert run(["--kubeconfig", config, "undo", "plain"]) == 0
        assert "spec.model set back to 0.9.0" in capsys.readouterr().out
        with pytest.raises(PluginError, match='"ghost" not found in namespace "team"'):
            run(["--kubeconfig", config, "status", "ghost"])
        with pytest.raises(PluginError, match=r"not allowed: user .* modelship-edit role"):
            run(["--kubeconfig", config, "status", "churn", "-n", "locked"])
        # Another context: its token, and "default" as it names no namespace.
        with pytest.raises(PluginError, match='namespace "default"'):
            run(["--kubeconfig", config, "--context", "other", "history", "churn"])
    patches = [r for r in server.requests if r.method == "PATCH"]
    assert [r.headers["content-type"] for r in patches] == ["application/merge-patch+json"] * 3
    assert patches[0].json() == {"spec": {"paused": True}}
    annotation = patches[1].json()["metadata"]["annotations"]["modelship.io/action"]
    assert annotation.startswith("promote/")
    assert patches[2].json() == {
        "spec": {"model": {"version": "0.9.0", "uri": "file:///m/0.9.0", "sha256": "b" * 64,
                           "format": "auto"}}
    }  # fmt: skip
    tokens = [r.headers["authorization"] for r in server.requests]
    assert tokens[-1] == "Bearer other-token" and set(tokens[:-1]) == {"Bearer dev-token"}


def test_no_configuration_is_a_plain_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PluginError, match="no usable kubeconfig"):
        run(["--kubeconfig", str(tmp_path / "missing"), "status", "churn"])
