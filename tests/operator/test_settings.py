"""Operator settings from MODELSHIP_OPERATOR_* environment variables."""

from __future__ import annotations

import pytest
from modelship_operator.settings import OperatorSettings
from pydantic import ValidationError


def test_defaults_watch_everything_with_the_installed_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NAMESPACES", "SERVING_IMAGE", "PROMETHEUS_URL", "LOG_JSON"):
        monkeypatch.delenv(f"MODELSHIP_OPERATOR_{name}", raising=False)
    settings = OperatorSettings()
    assert settings.cluster_wide and settings.namespaces == []
    assert settings.serving_image.startswith("modelship/serving:")
    assert settings.prometheus_url.startswith("http://")
    assert settings.log_level == "info" and settings.log_json is False
    assert settings.leader_election is True


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHIP_OPERATOR_NAMESPACES", " team-b, ml ,ml")
    monkeypatch.setenv("MODELSHIP_OPERATOR_SERVING_IMAGE", "reg.local/serving:2")
    monkeypatch.setenv("MODELSHIP_OPERATOR_PROMETHEUS_URL", "http://prom:9090")
    monkeypatch.setenv("MODELSHIP_OPERATOR_LOG_JSON", "true")
    monkeypatch.setenv("MODELSHIP_OPERATOR_LOG_LEVEL", "debug")
    settings = OperatorSettings()
    assert settings.namespaces == ["ml", "team-b"]
    assert not settings.cluster_wide
    assert settings.serving_image == "reg.local/serving:2"
    assert settings.prometheus_url == "http://prom:9090"
    assert settings.log_json is True and settings.log_level == "debug"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("NAMESPACES", "ml,Bad_NS", "is not a namespace name"),
        ("PROMETHEUS_URL", "prometheus:9090", "should match pattern"),
        ("LOG_LEVEL", "verbose", "Input should be"),
        ("RESYNC_SECONDS", "0", "greater than 0"),
    ],
)
def test_bad_values_are_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(f"MODELSHIP_OPERATOR_{name}", value)
    with pytest.raises(ValidationError, match=words):
        OperatorSettings()


def test_every_setting_is_documented() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "operator.md").read_text()
    for name in OperatorSettings.model_fields:
        assert f"`MODELSHIP_OPERATOR_{name.upper()}`" in text, name


def test_the_namespace_label_defaults_to_namespace_and_must_be_a_label_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelship_operator.analysis.queries import label_scheme

    monkeypatch.delenv("MODELSHIP_OPERATOR_PROMETHEUS_NAMESPACE_LABEL", raising=False)
    assert OperatorSettings().prometheus_namespace_label == "namespace"
    monkeypatch.setenv("MODELSHIP_OPERATOR_PROMETHEUS_NAMESPACE_LABEL", "kubernetes_namespace")
    settings = OperatorSettings()
    assert label_scheme(settings.prometheus_namespace_label).namespace == "kubernetes_namespace"
    monkeypatch.setenv("MODELSHIP_OPERATOR_PROMETHEUS_NAMESPACE_LABEL", "kubernetes.namespace")
    with pytest.raises(ValidationError, match="prometheus_namespace_label"):
        OperatorSettings()
