"""The chart's PrometheusRule, checked and unit-tested with promtool (the one built from
Prometheus' Go module by `make binaries`), and the dashboard's queries checked for syntax.

Input series carry exactly the labels the processes export (their contracts) plus the
scrape's `namespace`, so a rule that needs a relabelled pod label fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelship_cluster.binaries import toolset
from test_chart import CHART, by_kind, render

NS = "modelship-system"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolset().path("promtool")), *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    docs = render("--set", "prometheusRule.enabled=true")
    (rule,) = by_kind(docs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == NS
    spec: dict[str, Any] = rule["spec"]
    return spec


@pytest.fixture(scope="module")
def rule_file(rules: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def alert(rules: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)


def expand(template: str, labels: dict[str, str], value: float | None) -> str:
    """The two template forms the rules use: {{ $labels.x }} and $value printed %.1f."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    if value is not None:
        text = re.sub(r'\{\{ \$value \| printf "(%\.\df)" \}\}', lambda m: m.group(1) % value, text)
    assert "{{" not in text, text
    return text


def expected(
    rules: dict[str, Any], name: str, labels: dict[str, str], value: float | None = None
) -> dict[str, Any]:
    rule = alert(rules, name)
    all_labels = {**labels, **rule["labels"]}
    annotations = {k: expand(v, all_labels, value) for k, v in rule["annotations"].items()}
    return {"exp_labels": all_labels, "exp_annotations": annotations}


def unit_test(rule_file: Path, tests: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "test.yaml"
    path.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests}
        )
    )
    result = promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_rules_pass_promtool_check(rule_file: Path) -> None:
    result = promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_the_rules_are_off_by_default() -> None:
    assert by_kind(render(), "PrometheusRule") == []


def test_every_alert_has_a_severity_a_summary_and_a_description(rules: dict[str, Any]) -> None:
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} == {
        "ModelshipRolloutFailed",
        "ModelshipRolloutRolledBack",
        "ModelshipRolloutStuck",
        "ModelshipCanaryErrorRate",
        "ModelshipServingErrorRate",
        "ModelshipFeedbackStopped",
        "ModelshipInputDrift",
        "ModelshipOperatorDown",
    }
    for a in alerts:
        assert a["labels"]["severity"] in ("info", "warning", "critical")
        assert a["annotations"]["summary"] and a["annotations"]["description"]
        assert "modelship_io" not in a["expr"]


MD = {"modeldeployment_namespace": "ml", "modeldeployment": "churn"}
MD_SERIES = '{modeldeployment_namespace="ml",modeldeployment="churn"'


def test_failed_and_rolled_back_rollouts_alert(
    rules: dict[str, Any], rule_file: Path, tmp_path: Path
) -> None:
    phase = "modelship_operator_phase" + MD_SERIES
    unit_test(
        rule_file,
        [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{phase},phase="Failed"}}', "values": "0 0 1x10"},
                    {"series": f'{phase},phase="Progressing"}}', "values": "1 1 0x10"},
                    {"series": f'{phase},phase="RolledBack"}}', "values": "0x12"},
                ],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "ModelshipRolloutFailed", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "ModelshipRolloutFailed",
                        "exp_alerts": [expected(rules, "ModelshipRolloutFailed", MD)],
                    },
                    {"eval_time": "5m", "alertname": "ModelshipRolloutRolledBack",
                     "exp_alerts": []},
                ],
            }
        ],
        tmp_path,
    )  # fmt: skip


def test_a_rollout_whose_weight_does_not_move_for_30m_is_stuck(
    rules: dict[str, Any], rule_file: Path, tmp_path: Path
) -> None:
    # "moving" advances its weight every minute: promtool compares the whole list of
    # firing alerts, so it must never appear.
    unit_test(
        rule_file,
        [
            {
                "interval": "1m",
                "input_series": [
                    {"series": "modelship_operator_phase" + MD_SERIES + ',phase="Paused"}',
                     "values": "1x60"},
                    {"series": "modelship_operator_canary_weight_percent" + MD_SERIES + "}",
                     "values": "25x60"},
                    {"series": 'modelship_operator_phase{modeldeployment_namespace="ml",'
                               'modeldeployment="moving",phase="Progressing"}', "values": "1x60"},
                    {"series": 'modelship_operator_canary_weight_percent{'
                               'modeldeployment_namespace="ml",modeldeployment="moving"}',
                     "values": "5+5x60"},
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "ModelshipRolloutStuck", "exp_alerts": []},
                    {
                        "eval_time": "40m",
                        "alertname": "ModelshipRolloutStuck",
                        "exp_alerts": [expected(rules, "ModelshipRolloutStuck", MD)],
                    },
                ],
            }
        ],
        tmp_path,
    )  # fmt: skip


def test_canary_errors_the_router_saw_alert(
    rules: dict[str, Any], rule_file: Path, tmp_path: Path
) -> None:
    def router(deployment: str, variant: str, code: int, per_minute: int) -> dict[str, str]:
        labels = f'namespace="ml",deployment="{deployment}",variant="{variant}",code="{code}"'
        return {"series": f"modelship_router_requests_total{{{labels}}}",
                "values": f"0+{per_minute}x30"}  # fmt: skip

    unit_test(
        rule_file,
        [
            {
                "interval": "1m",
                "input_series": [
                    router("churn", "canary", 200, 90),
                    router("churn", "canary", 503, 10),  # 10 %
                    router("churn", "stable", 503, 50),  # stable's errors are not the canary's
                    router("fine", "canary", 200, 99),
                    router("fine", "canary", 503, 1),  # 1 %
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "ModelshipCanaryErrorRate",
                        "exp_alerts": [
                            expected(rules, "ModelshipCanaryErrorRate",
                                     {"namespace": "ml", "deployment": "churn"}, 10.0)
                        ],
                    }
                ],
            }
        ],
        tmp_path,
    )  # fmt: skip


def serving(
    deployment: str, variant: str, handler: str, code: int, per_minute: int
) -> dict[str, str]:
    labels = (
        f'namespace="ml",deployment="{deployment}",model="m",version="1",variant="{variant}",'
        f'handler="{handler}",code="{code}"'
    )
    return {"series": f"modelship_requests_total{{{labels}}}", "values": f"0+{per_minute}x200"}


def test_serving_5xx_on_inference_alert_per_variant(
    rules: dict[str, Any], rule_file: Path, tmp_path: Path
) -> None:
    unit_test(
        rule_file,
        [
            {
                "interval": "1m",
                "input_series": [
                    serving("churn", "stable", "v1_predict", 200, 80),
                    serving("churn", "stable", "v2_infer", 500, 20),  # 20 % of inference
                    serving("churn", "canary", "v1_predict", 200, 100),
                    serving("churn", "canary", "health", 500, 100),  # probes do not count
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "ModelshipServingErrorRate",
                     "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "ModelshipServingErrorRate",
                        "exp_alerts": [
                            expected(rules, "ModelshipServingErrorRate",
                                     {"namespace": "ml", "deployment": "churn",
                                      "variant": "stable"}, 20.0)
                        ],
                    },
                ],
            }
        ],
        tmp_path,
    )  # fmt: skip


def test_feedback_that_stops_while_predictions_go_on_alerts(
    rules: dict[str, Any], rule_file: Path, tmp_path: Path
) -> None:
    labels = 'namespace="ml",deployment="churn",model="m",version="1"'
    unit_test(
        rule_file,
        [
            {
                "interval": "1m",
                "input_series": [
                    serving("churn", "stable", "v1_predict", 200, 100),
                    serving("churn", "canary", "v1_predict", 200, 100),
                    # stable's feedback stops after 60 minutes, the canary's goes on
                    {"series": f'modelship_feedback_total{{{labels},variant="stable"}}',
                     "values": "0+10x60 600x140"},
                    {"series": f'modelship_feedback_total{{{labels},variant="canary"}}',
                     "values": "0+10x200"},
                ],
                "alert_rule_test": [
                    {"eval_time": "70m", "alertname": "ModelshipFeedbackStopped",
                     "exp_alerts": []},
                    {
                        "eval_time": "100m",
                        "alertname": "ModelshipFeedbackStopped",
                        "exp_alerts": [
                            expected(rules, "ModelshipFeedbackStopped",
                                     {"namespace": "ml", "deployment": "churn",
                                      "variant": "stable"})
                        ],
                    },
                ],
            }
        ],
        tmp_path,
    )  # fmt: skip


def test_an_input_that_drifts_from_the_reference_profile_alerts_per_feature(
    rules: dict[str, Any], rule_file: Path, tmp_path: Path
) -> None:
    labels = 'namespace="ml",deployment="churn",model="m",version="2",variant="canary"'
    unit_test(
        rule_file,
        [
            {
                "interval": "1m",
                "input_series": [
                    # two pods; one sees the drift in "age" from minute 10, "income" stays
                    {"series": f'modelship_input_feature_psi{{{labels},feature="age",pod="a"}}',
                     "values": "0.02x10 0.4x40"},
                    {"series": f'modelship_input_feature_psi{{{labels},feature="age",pod="b"}}',
                     "values": "0.03x50"},
                    {"series": f'modelship_input_feature_psi{{{labels},feature="income",'
                               'pod="a"}', "values": "0.05x50"},
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "ModelshipInputDrift", "exp_alerts": []},
                    {
                        "eval_time": "30m",
                        "alertname": "ModelshipInputDrift",
                        "exp_alerts": [
                            expected(rules, "ModelshipInputDrift",
                                     {"namespace": "ml", "deployment": "churn",
                                      "variant": "canary", "version": "2", "feature": "age"},
                                     0.4)
                        ],
                    },
                ],
            }
        ],
        tmp_path,
    )  # fmt: skip


def test_no_operator_leader_alerts(rules: dict[str, Any], rule_file: Path, tmp_path: Path) -> None:
    leader = f'modelship_operator_leader{{namespace="{NS}",pod="modelship-0"}}'
    standby = f'modelship_operator_leader{{namespace="{NS}",pod="modelship-1"}}'
    down = [expected(rules, "ModelshipOperatorDown", {})]
    unit_test(
        rule_file,
        [
            {
                "interval": "1m",
                "input_series": [
                    {"series": leader, "values": "1x10 0x20"},  # steps down at 11m
                    {"series": standby, "values": "0x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "ModelshipOperatorDown", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "ModelshipOperatorDown",
                     "exp_alerts": down},
                ],
            },
            {  # nothing scraped at all
                "interval": "1m",
                "input_series": [],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "ModelshipOperatorDown",
                     "exp_alerts": down},
                ],
            },
        ],
        tmp_path,
    )  # fmt: skip


def test_a_prometheus_with_another_namespace_label_gets_rules_on_it() -> None:
    docs = render("--set", "prometheusRule.enabled=true",
                  "--set", "prometheus.namespaceLabel=kubernetes_namespace")  # fmt: skip
    (rule,) = by_kind(docs, "PrometheusRule")
    text = yaml.safe_dump(rule["spec"])
    assert "kubernetes_namespace, deployment" in text
    assert 'kubernetes_namespace="modelship-system"' in text


# --- the dashboard ---------------------------------------------------------------------

DASHBOARD = CHART / "files" / "dashboards" / "modelship.json"


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [
        v["query"]["query"].replace("label_values(", "group by (x) (").replace(", namespace)", ")")
        .replace(", deployment)", ")")
        for v in board["templating"]["list"] if v["type"] == "query"
    ]  # fmt: skip
    return queries


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Grafana's variables substituted, each query becomes a recording rule promtool checks."""
    values = {"$namespace": "ml", "$deployment": "churn", "$__rate_interval": "1m",
              "$accuracy_window": "15m"}  # fmt: skip
    rules = []
    for i, query in enumerate(dashboard_queries()):
        for name, value in values.items():
            query = query.replace(name, value)
        assert "$" not in query, query
        rules.append({"record": f"dashboard:query{i}", "expr": query})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_each_thing_per_modeldeployment() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for what in ("traffic split", "requests", "errors", "latency", "accuracy", "verdicts"):
        assert what in titles, what
    for query in dashboard_queries()[:-2]:
        assert 'deployment="$deployment"' in query or 'modeldeployment="$deployment"' in query


def test_the_dashboard_configmap_carries_the_sidecar_label() -> None:
    assert by_kind(render(), "ConfigMap") == []
    (config,) = by_kind(render("--set", "dashboard.enabled=true"), "ConfigMap")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["modelship.json"]) == json.loads(DASHBOARD.read_text())
