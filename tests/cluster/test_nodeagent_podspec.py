"""Pure decisions of the node agent: image map, environment, identity, phase, hosts file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from modelship_cluster import imagemap
from modelship_cluster.nodeagent import dns, podspec

POD: dict[str, Any] = {
    "metadata": {"name": "web-1", "namespace": "team", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {"nodeName": "modelship-node", "serviceAccountName": "reader"},
}


@pytest.mark.parametrize(
    ("command", "args", "argv"),
    [
        (None, None, ["/venv/bin/modelship-serve", "--port", "8080"]),
        (None, ["--port", "9000"], ["/venv/bin/modelship-serve", "--port", "9000"]),
        (["sh", "-c"], None, ["sh", "-c"]),  # command drops the image's CMD
        (["sh", "-c"], ["echo hi"], ["sh", "-c", "echo hi"]),
    ],
)
def test_argv_follows_kubernetes_command_and_args(
    command: list[str] | None, args: list[str] | None, argv: list[str]
) -> None:
    images = imagemap.ImageMap(
        images=[
            imagemap.ImageEntry(
                pattern="modelship/serving:*",
                entrypoint=["{venv}/bin/modelship-serve"],
                args=["--port", "8080"],
            )
        ]
    )
    _, got = imagemap.resolve(images, "modelship/serving:1.2", command, args, Path("/venv"))
    assert got == argv


def test_image_map_matches_explicitly_and_never_guesses() -> None:
    images = imagemap.load()
    assert images.lookup("modelship/serving:0.1.0") is not None
    assert images.lookup("modelship/router") is not None  # no tag = :latest
    assert images.lookup("ghcr.io/modelship/serving:0.1.0") is None
    assert images.lookup("nginx:1.27") is None
    with pytest.raises(imagemap.UnknownImage, match="not in the local cluster's image map"):
        imagemap.resolve(images, "busybox", None, None)


def test_dollar_expansion() -> None:
    env = {"A": "1", "B": "two"}
    assert podspec.expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"


def test_env_precedence_and_sources() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "PATH", "value": "/x:$(PATH)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k",
                                                           "optional": True}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                               "divisor": "1Mi"}}},
        ],
        "resources": {"limits": {"memory": "64Mi"}},
    }  # fmt: skip
    kubernetes = {
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
    }
    env = podspec.container_env(
        POD,
        container,
        {("ConfigMap", "cfg"): {"mode": b"fast", "bad key": b"x"}, ("Secret", "s"): {"pw": b"pw1"}},
        base={"PATH": "/usr/bin", "IMAGE_ONLY": "yes"},
        services=[kubernetes],
        pod_ip="10.88.0.7",
        host_ip="10.88.0.1",
        capacity={"memory": "1Gi"},
    )
    assert env["PATH"] == "/x:/usr/bin"
    assert env["IMAGE_ONLY"] == "yes"
    assert env["CFG_mode"] == "fast" and "CFG_bad key" not in env
    assert (env["POD"], env["IP"], env["APP"], env["PW"]) == ("web-1", "10.88.0.7", "web", "pw1")
    assert "OPT" not in env
    assert env["MEM"] == "64"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.96.0.1"


def test_missing_references_are_config_errors() -> None:
    container = {
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
    }
    kw: dict[str, Any] = dict(base={}, services=[], pod_ip="", host_ip="", capacity={})
    with pytest.raises(podspec.ConfigError, match='configmap "c" not found in namespace team'):
        podspec.container_env(POD, container, {("ConfigMap", "c"): None}, **kw)
    with pytest.raises(podspec.ConfigError, match="couldn't find key k in ConfigMap team/c"):
        podspec.container_env(POD, container, {("ConfigMap", "c"): {"other": b""}}, **kw)


def test_identity_never_root() -> None:
    pod = {**POD, "spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 2000,
                                               "supplementalGroups": [3000]}}}  # fmt: skip
    assert podspec.identity(pod, {}, 65532) == (1000, 1000, [2000, 3000])
    assert podspec.identity(POD, {"securityContext": {"runAsGroup": 7}}, 65532) == (65532, 7, [])
    with pytest.raises(podspec.ConfigError, match="runAsNonRoot"):
        podspec.identity(POD, {"securityContext": {"runAsUser": 0, "runAsNonRoot": True}}, 1)
    with pytest.raises(podspec.ConfigError, match="root"):
        podspec.identity(POD, {"securityContext": {"runAsUser": 0}}, 1)


def test_mount_plan_rejects_escapes() -> None:
    dirs = {"data": "/state/pods/x/volumes/data"}
    ok = podspec.mount_plan({"volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "a"}]},
                            dirs, {})  # fmt: skip
    assert ok == [{"source": "/state/pods/x/volumes/data/a", "target": "/d", "readOnly": False}]
    with pytest.raises(podspec.ConfigError, match="subPath"):
        podspec.mount_plan({"volumeMounts": [{"name": "data", "mountPath": "/d",
                                              "subPath": "../../etc"}]}, dirs, {})  # fmt: skip
    with pytest.raises(podspec.ConfigError, match="not defined"):
        podspec.mount_plan({"volumeMounts": [{"name": "nope", "mountPath": "/d"}]}, dirs, {})


def _s(state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"state": state, "lastState": last or {}}


RUNNING = _s({"running": {}})
WAITING = _s({"waiting": {"reason": "ContainerCreating"}})
OK = _s({"terminated": {"exitCode": 0}})
FAIL = _s({"terminated": {"exitCode": 2}})
BACKOFF = _s({"waiting": {"reason": "CrashLoopBackOff"}}, {"terminated": {"exitCode": 1}})


@pytest.mark.parametrize(
    ("policy", "statuses", "phase"),
    [
        ("Always", [WAITING], "Pending"),
        ("Always", [RUNNING, WAITING], "Pending"),
        ("Always", [RUNNING], "Running"),
        ("Always", [BACKOFF], "Running"),
        ("Always", [OK], "Running"),
        ("Never", [OK, OK], "Succeeded"),
        ("Never", [OK, FAIL], "Failed"),
        ("OnFailure", [FAIL], "Running"),
        ("OnFailure", [OK], "Succeeded"),
        ("Never", [RUNNING, FAIL], "Running"),
    ],
)
def test_phase(policy: str, statuses: list[dict[str, Any]], phase: str) -> None:
    assert podspec.phase(policy, [], True, statuses) == phase


def test_phase_with_init_containers() -> None:
    assert podspec.phase("Never", [FAIL], False, [WAITING]) == "Failed"
    assert podspec.phase("Always", [FAIL], False, [WAITING]) == "Pending"


def test_conditions_keep_transition_times() -> None:
    first = podspec.conditions([], "t1", sandbox_ready=True, initialized=True,
                               containers_ready=False)  # fmt: skip
    second = podspec.conditions(first, "t2", sandbox_ready=True, initialized=True,
                                containers_ready=True)  # fmt: skip
    times = {c["type"]: c["lastTransitionTime"] for c in second}
    assert times == {"PodReadyToStartContainers": "t1", "Initialized": "t1",
                     "ContainersReady": "t2", "Ready": "t2"}  # fmt: skip


def test_backoff_doubles_and_caps() -> None:
    assert [podspec.backoff_delay(n, 1, 60) for n in (1, 2, 3, 7, 8)] == [1, 2, 4, 60, 60]


def test_hosts_file_names_every_form_and_own_namespace_short_names() -> None:
    services = [
        {"metadata": {"name": "web", "namespace": "team"}, "spec": {"clusterIP": "10.96.0.10"}},
        {"metadata": {"name": "db", "namespace": "other"}, "spec": {"clusterIP": "10.96.0.11"}},
        {"metadata": {"name": "hl", "namespace": "team"}, "spec": {"clusterIP": "None"}},
    ]
    text = dns.hosts_file("web-1", "team", "10.88.0.5", services, {("team", "hl"): ["10.88.0.9"]})
    lines = text.splitlines()
    assert "10.88.0.5\tweb-1" in lines
    assert "10.96.0.10\tweb.team.svc.cluster.local web.team.svc web.team web" in lines
    assert "10.96.0.11\tdb.other.svc.cluster.local db.other.svc db.other" in lines
    assert "10.88.0.9\thl.team.svc.cluster.local hl.team.svc hl.team hl" in lines


def test_environment_under_a_container_private_folder_is_bound_back() -> None:
    from pathlib import Path

    from modelship_cluster.nodeagent.runtime import hidden_paths

    paths = [
        Path("/tmp/ci/.venv"),
        Path("/tmp/ci/.venv/lib"),  # inside the one above: bound with it
        Path("/tmp/ci/serving"),
        Path("/usr/local"),  # visible through the overlay of / already
        Path("/run/x"),
        Path("/tmpfoo/y"),  # not under /tmp
    ]
    assert hidden_paths(paths) == ["/run/x", "/tmp/ci/.venv", "/tmp/ci/serving"]
