"""The operator process's pure parts: leader-election decisions, retry timing, metrics,
probes and the command line. (Against a real API server: tests/e2e/test_operator_*.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from modelship_kube.errors import ApiError
from modelship_operator.cli import JsonFormatter, build_parser
from modelship_operator.leader import Observation, may_acquire, next_spec, observe
from modelship_operator.metrics import HealthState, OperatorMetrics, http_app, serve_http
from modelship_operator.reconcile import Plan
from modelship_operator.reconciler import next_delay
from modelship_operator.settings import OperatorSettings
from modelship_operator.status import Condition, ModelDeploymentStatus, Traffic
from modelship_operator.workqueue import backoff_delay, error_reason

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def lease(version: str, holder: str = "", duration: int = 15) -> dict[str, object]:
    spec: dict[str, object] = {"leaseDurationSeconds": duration}
    if holder:
        spec["holderIdentity"] = holder
    return {"metadata": {"resourceVersion": version}, "spec": spec}


# --- leader election -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("holder", "seen_at", "now", "expected"),
    [
        ("", 0.0, 0.0, True),  # free
        ("me", 0.0, 0.0, True),  # ours (a restarted container of the same pod)
        ("other", 0.0, 14.9, False),  # held and fresh
        ("other", 0.0, 15.0, True),  # unchanged for the whole duration
    ],
    ids=["free", "ours", "held", "expired"],
)
def test_when_a_candidate_may_take_the_lease(
    holder: str, seen_at: float, now: float, expected: bool
) -> None:
    observation = Observation("1", holder, 15.0, seen_at)
    assert may_acquire(observation, "me", now) is expected


def test_expiry_is_measured_from_when_the_record_last_changed_here() -> None:
    first = observe(None, lease("1", "other"), now=100.0, default_duration=15)
    same = observe(first, lease("1", "other"), now=110.0, default_duration=15)
    assert same.seen_at == 100.0  # unchanged record: the clock keeps running
    renewed = observe(same, lease("2", "other"), now=112.0, default_duration=15)
    assert renewed.seen_at == 112.0  # renewed: start over
    assert not may_acquire(renewed, "me", 120.0) and may_acquire(renewed, "me", 127.0)


def test_taking_and_renewing_a_lease() -> None:
    taken = next_spec({"holderIdentity": "old", "leaseTransitions": 4}, "me", 15, T0)
    assert taken["holderIdentity"] == "me" and taken["leaseTransitions"] == 5
    assert taken["acquireTime"] == taken["renewTime"] == "2026-01-01T00:00:00.000000Z"
    later = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    renewed = next_spec(taken, "me", 15, later)
    assert renewed["leaseTransitions"] == 5
    assert renewed["acquireTime"] == taken["acquireTime"]
    assert renewed["renewTime"] == "2026-01-01T00:00:05.000000Z"
    assert next_spec(None, "me", 15, T0)["leaseTransitions"] == 1


# --- retry timing --------------------------------------------------------------------------


def test_back_off_doubles_up_to_a_minute() -> None:
    assert [backoff_delay(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10_000) == 60


def test_the_next_run_is_the_sooner_of_resync_and_what_the_plan_asks() -> None:
    settings = OperatorSettings(resync_seconds=10)
    status = ModelDeploymentStatus()
    assert next_delay(settings, Plan((), (), status, status, ())) == 10
    assert next_delay(settings, Plan((), (), status, status, (), requeue_after=3.5)) == 3.5
    assert next_delay(settings, Plan((), (), status, status, (), requeue_after=60)) == 10
    assert next_delay(settings, Plan((), (), status, status, (), requeue_after=-1)) == 0.5
    # Spread: resources created together resync at different times.
    assert next_delay(settings, Plan((), (), status, status, ()), spread=0.8) == 8


@pytest.mark.parametrize(
    ("status", "reason", "transient", "label"),
    [
        (0, "ConnectError", True, "Unavailable"),
        (409, "Conflict", True, "Conflict"),
        (429, "TooManyRequests", True, "TooManyRequests"),
        (503, "", True, "HTTP503"),
        (403, "Forbidden", False, "Forbidden"),
        (422, "Invalid", False, "Invalid"),
    ],
)
def test_api_errors_are_told_apart(status: int, reason: str, transient: bool, label: str) -> None:
    error = ApiError("apply Deployment ml/churn-stable", status, reason, "why")
    assert error.transient is transient
    assert error_reason(error) == label
    assert "apply Deployment ml/churn-stable" in str(error) and "why" in str(error)


# --- metrics and probes --------------------------------------------------------------------


def status(phase: str, canary: int, ready: str) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        phase=phase,  # type: ignore[arg-type]
        traffic=Traffic(stable=100 - canary, canary=canary),
        conditions=[Condition(type="Ready", status=ready, reason="X", last_transition_time=T0)],  # type: ignore[arg-type]
    )


def test_metrics_follow_the_status_and_forget_deleted_resources() -> None:
    metrics = OperatorMetrics()
    metrics.reconciles.labels("ml", "churn", "success").inc()
    metrics.observe_status("ml", "churn", status("Progressing", 25, "True"))
    metrics.observe_status("ml", "other", status("Idle", 0, "False"))
    text = metrics.exposition().decode()
    churn = 'modeldeployment="churn",modeldeployment_namespace="ml"'
    assert f'modelship_operator_phase{{{churn},phase="Progressing"}} 1.0' in text
    assert f'modelship_operator_phase{{{churn},phase="Idle"}} 0.0' in text
    assert f"modelship_operator_canary_weight_percent{{{churn}}} 25.0" in text
    assert 'condition="Ready",modeldeployment="other",modeldeployment_namespace="ml"} 0.0' in text

    metrics.forget("ml", "churn")
    text = metrics.exposition().decode()
    assert 'modeldeployment="churn"' not in text
    assert 'modeldeployment="other"' in text


def test_probes_and_metrics_over_http() -> None:
    async def scenario() -> None:
        metrics = OperatorMetrics()
        now = [0.0]
        health = HealthState(stale_after=30, clock=lambda: now[0])
        runner = await serve_http(http_app(metrics, health), "127.0.0.1", 0)
        port = runner.addresses[0][1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/readyz")).status_code == 503  # not started yet
                health.started = True
                assert (await http.get("/readyz")).status_code == 200
                assert (await http.get("/healthz")).json()["status"] == "ok"
                now[0] = 31.0  # the event loop did not beat for 31 s
                response = await http.get("/healthz")
                assert response.status_code == 503 and "no progress" in response.json()["detail"]
                scrape = await http.get("/metrics")
                assert "modelship_operator_leader" in scrape.text
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


# --- command line --------------------------------------------------------------------------


def test_help_lists_every_setting() -> None:
    text = build_parser().format_help()
    for name in OperatorSettings.model_fields:
        assert f"MODELSHIP_OPERATOR_{name.upper()}" in text


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_OPERATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "modelship_operator.cli", *args],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_setting_stops_the_operator_naming_the_variable() -> None:
    result = run_cli(MODELSHIP_OPERATOR_RESYNC_SECONDS="-1")
    assert result.returncode != 0
    assert "MODELSHIP_OPERATOR_RESYNC_SECONDS" in result.stderr
    assert "greater than 0" in result.stderr


def test_check_config_prints_the_settings() -> None:
    result = run_cli("--check-config", MODELSHIP_OPERATOR_NAMESPACES="b,a")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["namespaces"] == ["a", "b"]


def test_json_logs_are_one_object_per_line() -> None:
    record = logging.LogRecord("modelship_operator", logging.WARNING, __file__, 1,
                               "reconcile %s failed", ("ml/churn",), None)  # fmt: skip
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "warning" and entry["message"] == "reconcile ml/churn failed"
    assert entry["time"].endswith("Z")


def test_healthcheck_passes_on_a_healthy_operator() -> None:
    async def scenario() -> int:
        from modelship_operator.cli import healthcheck

        runner = await serve_http(http_app(OperatorMetrics(), HealthState(30)), "127.0.0.1", 0)
        port = runner.addresses[0][1]
        try:
            return await asyncio.to_thread(healthcheck, f"http://127.0.0.1:{port}/healthz")
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == 0


# --- the install manifests -----------------------------------------------------------------


def operator_manifests() -> dict[str, dict[str, object]]:
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[2] / "manifests/operator"
    docs = [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs if d}


def test_the_operator_deployment_matches_the_code() -> None:
    from modelship_operator.rbac import DEFAULT_NAMESPACE, OPERATOR_NAME
    from modelship_operator.settings import package_version

    objects = operator_manifests()
    assert set(objects) == {
        "Namespace/modelship-system",
        "Deployment/modelship-operator",
        "PodDisruptionBudget/modelship-operator",
        "Service/modelship-operator-metrics",
    }
    for key, obj in objects.items():
        if not key.startswith("Namespace/"):
            assert obj["metadata"]["namespace"] == DEFAULT_NAMESPACE, key  # type: ignore[index]
    deployment: dict[str, Any] = objects["Deployment/modelship-operator"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"modelship/operator:{package_version()}"
    assert pod["serviceAccountName"] == OPERATOR_NAME
    # The environment it sets is accepted by the operator's settings.
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = OperatorSettings(**{k.removeprefix("MODELSHIP_OPERATOR_").lower(): v
                                   for k, v in env.items()})  # fmt: skip
    assert container["ports"][0]["containerPort"] == settings.http_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {e["name"] for e in container["env"] if "valueFrom" in e} == {
        "POD_NAME",
        "POD_NAMESPACE",
    }
    # Pod Security `restricted`, plus a read-only root filesystem.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    service: dict[str, Any] = objects["Service/modelship-operator-metrics"]
    assert (
        service["spec"]["selector"].items() <= deployment["spec"]["selector"]["matchLabels"].items()
    )
    labels = objects["Namespace/modelship-system"]["metadata"]["labels"]  # type: ignore[index]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
