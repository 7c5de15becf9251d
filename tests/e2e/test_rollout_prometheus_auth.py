"""A rollout whose Prometheus requires credentials, end to end on the local cluster.

The Prometheus the analysis queries is the test bed's Prometheus image run in the test's
namespace behind its own basic auth (``--web.config.file``), federating the namespace's
series from the cluster's Prometheus (which scrapes the pods through the chart's
PodMonitors). The operator is configured as a user configures it with plain manifests: its
URL, user and a password file mounted from a Secret. With a wrong password the rollout
pauses with a message naming the refusal and never promotes; once the Secret is put right
(no restart: the operator re-reads the file) the same rollout resumes and is promoted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from modelship_cluster import monitoring
from operator_harness import OPERATOR, OPERATOR_DIR, OPERATOR_NS, Env, Operator
from rollout_harness import (
    ROLLOUT_MARKS,
    Recorder,
    Rollout,
    deploy,
    phase_is,
    reasons,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS

USER, PASSWORD = "analysis", "s3cret-analysis"
#: bcrypt of PASSWORD (cost 4, made once with Python's crypt module, METHOD_BLOWFISH).
PASSWORD_BCRYPT = "$2b$04$V/DWKWb659qwyd3ysclihePX7UivhjHy5r4OiDzd.7JCx6Y5rQ76W"
SECRET = "prometheus-auth"
NAME = "auth-prometheus"
MOUNT = "/etc/modelship/prometheus-auth"


def authenticating_prometheus(ns: str) -> list[dict[str, Any]]:
    """Prometheus (the test bed's image) requiring basic auth, federating NS's series."""
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            {
                "job_name": "federate",
                "honor_labels": True,
                "metrics_path": "/federate",
                "params": {"match[]": [f'{{namespace="{ns}"}}']},
                "static_configs": [
                    {
                        "targets": [
                            f"{monitoring.SERVICE}.{monitoring.NAMESPACE}.svc:{monitoring.PORT}"
                        ]
                    }
                ],
            }
        ],
    }
    labels = {"app": NAME}
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME},
            "data": {
                "prometheus.yml": yaml.safe_dump(config),
                "web.yml": yaml.safe_dump({"basic_auth_users": {USER: PASSWORD_BCRYPT}}),
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "prometheus",
                                "image": monitoring.PROMETHEUS_IMAGE,
                                "imagePullPolicy": "IfNotPresent",
                                "args": [
                                    "--config.file=/etc/prometheus/prometheus.yml",
                                    "--web.config.file=/etc/prometheus/web.yml",
                                    "--storage.tsdb.path=/prometheus",
                                ],
                                "ports": [{"name": "web", "containerPort": 9090}],
                                "securityContext": security,
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/prometheus"},
                                    {"name": "data", "mountPath": "/prometheus"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "config", "configMap": {"name": NAME}},
                            {"name": "data", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME},
            "spec": {"selector": labels, "ports": [{"name": "web", "port": 9090}]},
        },
    ]


def password_secret(password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": OPERATOR_NS},
        "stringData": {"password": password},
    }


def use_prometheus(env: Env, url: str) -> None:
    """Point the installed operator at URL with basic auth, the password file mounted from
    the Secret, as a user edits the operator's Deployment."""
    env_vars = {
        "MODELSHIP_OPERATOR_PROMETHEUS_URL": url,
        "MODELSHIP_OPERATOR_PROMETHEUS_BASIC_AUTH_USERNAME": USER,
        "MODELSHIP_OPERATOR_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE": f"{MOUNT}/password",
    }
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "operator",
                            "env": [{"name": k, "value": v} for k, v in env_vars.items()],
                            "volumeMounts": [
                                {"name": SECRET, "mountPath": MOUNT, "readOnly": True}
                            ],
                        }
                    ],
                    "volumes": [{"name": SECRET, "secret": {"secretName": SECRET}}],
                }
            }
        }
    }
    env.kubectl("-n", OPERATOR_NS, "patch", "deployment", OPERATOR, "--type=strategic",
                "-p", json.dumps(patch))  # fmt: skip


@pytest.fixture
def authenticated(rollout: Rollout) -> Iterator[Rollout]:
    env, ns = rollout.env, rollout.ns
    env.apply(ns, *authenticating_prometheus(ns))
    env.kubectl("-n", ns, "rollout", "status", f"deployment/{NAME}", "--timeout=120s",
                timeout=150)  # fmt: skip
    env.apply(None, password_secret("not-the-password"))
    use_prometheus(env, f"http://{NAME}.{ns}.svc:9090")
    rollout.operator.wait_available()
    try:
        yield rollout
    finally:
        restore(env, rollout.operator)


def restore(env: Env, operator: Operator) -> None:
    """The operator as installed (replace drops what the patch added), the Secret gone."""
    installed = yaml.safe_load_all((OPERATOR_DIR / "deployment.yaml").read_text())
    (deployment,) = [d for d in installed if d and d["kind"] == "Deployment"]
    env.kubectl("-n", OPERATOR_NS, "replace", "-f", "-", input=yaml.safe_dump(deployment))
    env.kubectl("-n", OPERATOR_NS, "delete", "secret", SECRET, "--ignore-not-found")
    operator.wait_available()


def test_a_refused_analysis_pauses_the_rollout_and_fixing_the_secret_resumes_it(
    authenticated: Rollout,
) -> None:
    env, models, ns = authenticated.env, authenticated.models, authenticated.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    base = deploy(env, ns, "auth", v1, v2, maxConsecutiveErrors=2)
    with Recorder(env, ns, "auth") as rec, traffic(base, "auth", v1, seconds=300) as stats:
        paused = wait_for(
            env, ns, "auth", phase_is("Paused"), "the pause on refused queries", 120, rec, stats
        )
        reason = paused["rollout"]["pauseReason"]
        assert "refused the query: HTTP 401" in reason, reason
        assert f"basic auth as {USER!r}" in reason, reason
        assert "not-the-password" not in reason
        assert "AnalysisError" in reasons(env, ns, "auth")
        assert "Promoted" not in rec.phases()

        # The Secret put right: the kubelet updates the mounted file, the next analysis
        # authenticates, the rollout resumes where it was and is promoted.
        env.apply(None, password_secret(PASSWORD))
        promoted = wait_for(
            env, ns, "auth", phase_is("Promoted"), "the resumed promotion", 300, rec, stats
        )
    assert promoted["rolledOut"]["current"]["version"] == "2.0.0"
    assert all(a["verdict"] == "Successful" for a in promoted["lastAnalysis"])
    assert stats.non_2xx == 0
