"""The chart's PodMonitors: off by default, one value each, selecting the pods the
operator renders on the port it names."""

from __future__ import annotations

import pytest
from modelship_operator import render as operator_render
from modelship_operator.kinds import LABEL_COMPONENT, LABEL_MANAGED_BY
from test_chart import by_kind, render


def test_no_monitor_by_default() -> None:
    docs = render()
    assert by_kind(docs, "PodMonitor") == [] and by_kind(docs, "ServiceMonitor") == []


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("metrics.podMonitor.enabled", "modelship-operator"),
        ("podMonitors.serving.enabled", "modelship-serving"),
        ("podMonitors.router.enabled", "modelship-router"),
    ],
)
def test_each_monitor_is_one_value(value: str, name: str) -> None:
    (monitor,) = by_kind(render("--set", f"{value}=true"), "PodMonitor")
    assert monitor["metadata"]["name"] == name


@pytest.mark.parametrize("component", ["serving", "router"])
def test_serving_and_router_monitors_select_the_rendered_pods(component: str) -> None:
    (monitor,) = by_kind(
        render("--set", f"podMonitors.{component}.enabled=true",
               "--set", "podMonitors.labels.release=kps"),
        "PodMonitor",
    )  # fmt: skip
    spec = monitor["spec"]
    selector = spec["selector"]["matchLabels"]
    assert selector == {LABEL_MANAGED_BY: "modelship", LABEL_COMPONENT: component}
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint == {"port": operator_render.PORT_NAME, "path": "/metrics"}
    assert monitor["metadata"]["labels"]["release"] == "kps"
    # Nothing relabelled: the series carry what the analysis needs (docs/metrics.md).
    assert "relabelings" not in endpoint and "honorLabels" not in endpoint


def test_monitors_follow_the_watched_namespaces_and_an_interval() -> None:
    (monitor,) = by_kind(
        render("--set", "podMonitors.serving.enabled=true",
               "--set", "podMonitors.serving.interval=10s",
               "--set", "watchNamespaces={ml,team-b}"),
        "PodMonitor",
    )  # fmt: skip
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml", "team-b"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "10s"
