"""The API's rules, checked twice on the same inputs: by the CRD (as the API server applies
it: defaults, schema, CEL) and by the pydantic models the operator parses with.

Each invalid case names the words a user must see from each layer; for CEL rules those are
the same message (one ``Rule`` object feeds both), for schema bounds each layer words it
its own way. Valid cases must be accepted by both, and the API server's defaults must equal
the models' defaults.
"""

from __future__ import annotations

from typing import Any

import pytest
from mdep_fixtures import ACCESS, SHA_CANARY, base_resource, set_path
from modelship_operator import crd
from modelship_operator.spec import ModelDeployment, ModelDeploymentSpec, parse_duration
from pydantic import ValidationError
from schemacheck import admit

SCHEMA = crd.resource_schema()

CANARY = {
    "version": "1.5.0",
    "uri": "https://models.example/churn-1.5.0.skops",
    "sha256": SHA_CANARY,
}


def metric(**fields: Any) -> dict[str, Any]:
    return fields


def with_metrics(*metrics: dict[str, Any]) -> dict[str, Any]:
    return set_path(base_resource(), "spec.strategy.metrics", list(metrics))


def pydantic_errors(body: dict[str, Any]) -> str:
    try:
        ModelDeployment.from_api(body)
    except ValidationError as exc:
        return str(exc)
    return ""


# (case id, resource, words from the API server, words from pydantic)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "sha256-too-short",
        set_path(base_resource(), "spec.model.sha256", "abc123"),
        "sha256 must be 64 hexadecimal characters",
        "sha256 must be 64 hexadecimal characters",
    ),
    (
        "sha256-not-hex",
        set_path(base_resource(), "spec.model.sha256", "z" * 64),
        "sha256 must be 64 hexadecimal characters",
        "sha256 must be 64 hexadecimal characters",
    ),
    (
        "sha256-too-long",
        set_path(base_resource(), "spec.model.sha256", "a" * 65),
        "Too long",
        "at most 64 characters",
    ),
    (
        "steps-decreasing",
        set_path(base_resource(), "spec.strategy.steps", [10, 50, 25]),
        "spec.strategy.steps: steps must be strictly increasing",
        "steps must be strictly increasing",
    ),
    (
        "steps-repeated",
        set_path(base_resource(), "spec.strategy.steps", [10, 10, 50]),
        "steps must be strictly increasing",
        "steps must be strictly increasing",
    ),
    (
        "step-zero",
        set_path(base_resource(), "spec.strategy.steps", [0, 50]),
        "spec.strategy.steps[0]: in body should be greater than or equal to 1",
        "greater than or equal to 1",
    ),
    (
        "step-over-100",
        set_path(base_resource(), "spec.strategy.steps", [50, 101]),
        "spec.strategy.steps[1]: in body should be less than or equal to 100",
        "less than or equal to 100",
    ),
    (
        "steps-empty",
        set_path(base_resource(), "spec.strategy.steps", []),
        "at least 1 items",
        "at least 1 item",
    ),
    (
        "min-not-below-max",
        with_metrics(metric(name="success-rate", min=99, max=95)),
        "spec.strategy.metrics[0].min: min must be below max",
        "min must be below max",
    ),
    (
        "min-equals-max",
        with_metrics(metric(name="success-rate", min=99, max=99)),
        "min must be below max",
        "min must be below max",
    ),
    (
        "unknown-metric-without-query",
        with_metrics(metric(name="error-budget", max=1)),
        "spec.strategy.metrics[0].name: a metric without a query must be a built-in one",
        "a metric without a query must be a built-in one",
    ),
    (
        "custom-query-with-builtin-name",
        with_metrics(metric(name="success-rate", query="vector(1)", min=1)),
        "a custom query needs its own name",
        "a custom query needs its own name",
    ),
    (
        "metric-without-check",
        with_metrics(metric(name="latency-p99")),
        "a metric check needs min, max or compareTo",
        "a metric check needs min, max or compareTo",
    ),
    (
        "compare-without-margin",
        with_metrics(metric(name="latency-p99", compareTo="stable")),
        "spec.strategy.metrics[0].margin: compareTo: stable needs a margin",
        "compareTo: stable needs a margin",
    ),
    (
        "margin-without-compare",
        with_metrics(metric(name="latency-p99", max=1, margin={"relative": 0.1})),
        "margin is only used with compareTo: stable",
        "margin is only used with compareTo: stable",
    ),
    (
        "margin-both-kinds",
        with_metrics(
            metric(name="latency-p99", compareTo="stable", margin={"absolute": 1, "relative": 1})
        ),
        "margin takes exactly one of absolute or relative",
        "margin takes exactly one of absolute or relative",
    ),
    (
        "margin-neither-kind",
        with_metrics(metric(name="latency-p99", compareTo="stable", margin={})),
        "margin takes exactly one of absolute or relative",
        "margin takes exactly one of absolute or relative",
    ),
    (
        "custom-compare-without-direction",
        with_metrics(
            metric(name="cost", query="vector(1)", compareTo="stable", margin={"absolute": 1})
        ),
        "spec.strategy.metrics[0].better: a custom metric compared with stable needs better",
        "a custom metric compared with stable needs better",
    ),
    (
        "duplicate-metric-names",
        with_metrics(metric(name="success-rate", min=99), metric(name="success-rate", min=98)),
        "Duplicate value",
        "metric names must be unique: success-rate repeats",
    ),
    (
        "interval-zero",
        set_path(base_resource(), "spec.strategy.interval", "0s"),
        "spec.strategy.interval: interval must be between 1s and 24h",
        "interval must be between 1s and 24h",
    ),
    (
        "interval-too-long",
        set_path(base_resource(), "spec.strategy.interval", "25h"),
        "interval must be between 1s and 24h",
        "interval must be between 1s and 24h",
    ),
    (
        "interval-not-a-duration",
        set_path(base_resource(), "spec.strategy.interval", "thirty seconds"),
        "spec.strategy.interval: should match",
        "is not a duration like 30s",
    ),
    (
        "deadline-shorter-than-interval",
        set_path(
            set_path(base_resource(), "spec.strategy.interval", "5m"),
            "spec.strategy.progressDeadline",
            "1m",
        ),
        "spec.strategy.progressDeadline: progressDeadline must be at least one interval",
        "progressDeadline must be at least one interval",
    ),
    (
        "abtest-settings-on-canary",
        set_path(base_resource(), "spec.strategy.abTest", {"split": 30}),
        "spec.strategy.abTest: abTest is only used with type: ABTest",
        "abTest is only used with type: ABTest",
    ),
    (
        "shadow-settings-on-abtest",
        set_path(
            set_path(base_resource(), "spec.strategy.type", "ABTest"),
            "spec.strategy.shadow",
            {"mirrorPercent": 10},
        ),
        "shadow is only used with type: Shadow",
        "shadow is only used with type: Shadow",
    ),
    (
        "sticky-header-and-cookie",
        set_path(
            set_path(base_resource(), "spec.strategy.type", "ABTest"),
            "spec.strategy.abTest",
            {"stickyKey": {"header": "x-user", "cookie": "uid"}},
        ),
        "set exactly one of header or cookie",
        "set exactly one of header or cookie",
    ),
    (
        "match-rule-without-key",
        set_path(
            set_path(base_resource(), "spec.strategy.type", "ABTest"),
            "spec.strategy.abTest",
            {"match": [{"value": "beta"}]},
        ),
        "set exactly one of header or cookie",
        "set exactly one of header or cookie",
    ),
    (
        "header-name-with-space",
        set_path(
            set_path(base_resource(), "spec.strategy.type", "ABTest"),
            "spec.strategy.abTest",
            {"stickyKey": {"header": "user id"}},
        ),
        "header must be an HTTP header name",
        "header must be an HTTP header name",
    ),
    (
        "business-metric-half-pair",
        set_path(
            set_path(base_resource(), "spec.strategy.type", "ABTest"),
            "spec.strategy.abTest",
            {"metric": {"name": "conversion", "successes": "sum(x)"}},
        ),
        "successes and trials go together",
        "successes and trials go together",
    ),
    (
        "business-metric-unknown-builtin",
        set_path(
            set_path(base_resource(), "spec.strategy.type", "ABTest"),
            "spec.strategy.abTest",
            {"metric": {"name": "conversion"}},
        ),
        "the business metric is the built-in accuracy",
        "the business metric is the built-in accuracy",
    ),
    (
        "significance-zero",
        set_path(
            set_path(base_resource(), "spec.strategy.type", "ABTest"),
            "spec.strategy.abTest",
            {"significance": 0},
        ),
        "spec.strategy.abTest.significance: in body should be greater than 0",
        "greater than 0",
    ),
    (
        "uri-unsupported-scheme",
        set_path(base_resource(), "spec.model.uri", "gs://bucket/model.skops"),
        "uri must be file:///path, http(s)://host/path, s3://bucket/key, pvc://claim/path or "
        "models:/name/version",
        "uri must be file:///path, http(s)://host/path, s3://bucket/key, pvc://claim/path or "
        "models:/name/version",
    ),
    (
        "uri-s3-without-key",
        set_path(base_resource(), "spec.model.uri", "s3://bucket"),
        "uri must be file:///path, http(s)://host/path, s3://bucket/key, pvc://claim/path or "
        "models:/name/version",
        "uri must be file:///path, http(s)://host/path, s3://bucket/key, pvc://claim/path or "
        "models:/name/version",
    ),
    (
        "s3-endpoint-not-a-url",
        set_path(base_resource(), "spec.s3", {"endpoint": "seaweedfs:8333"}),
        "endpoint must be http(s)://host[:port]",
        "endpoint must be http(s)://host[:port]",
    ),
    (
        "uri-pvc-without-path",
        set_path(base_resource(), "spec.model.uri", "pvc://team-models"),
        "uri must be file:///path, http(s)://host/path, s3://bucket/key, pvc://claim/path or "
        "models:/name/version",
        "uri must be file:///path, http(s)://host/path, s3://bucket/key, pvc://claim/path or "
        "models:/name/version",
    ),
    (
        "precision-without-class",
        set_path(base_resource(), "spec.strategy", {"metrics": [{"name": "precision", "min": 80}]}),
        "className is needed by precision, recall, f1 and roc-auc",
        "className is needed by precision, recall, f1 and roc-auc",
    ),
    (
        "roc-auc-without-class",
        set_path(base_resource(), "spec.strategy", {"metrics": [{"name": "roc-auc", "min": 0.9}]}),
        "className is needed by precision, recall, f1 and roc-auc",
        "className is needed by precision, recall, f1 and roc-auc",
    ),
    (
        "class-on-log-loss",
        set_path(
            base_resource(),
            "spec.strategy",
            {"metrics": [{"name": "log-loss", "max": 0.5, "className": "1"}]},
        ),
        "className is needed by precision, recall, f1 and roc-auc",
        "className is needed by precision, recall, f1 and roc-auc",
    ),
    (
        "class-on-accuracy",
        set_path(
            base_resource(),
            "spec.strategy",
            {"metrics": [{"name": "accuracy", "min": 80, "className": "1"}]},
        ),
        "className is needed by precision, recall, f1 and roc-auc",
        "className is needed by precision, recall, f1 and roc-auc",
    ),
    (
        "uri-pvc-escapes-its-claim",
        set_path(base_resource(), "spec.model.uri", "pvc://team-models/churn/../../etc/passwd"),
        "a pvc:// path must stay inside its claim",
        "a pvc:// path must stay inside its claim",
    ),
    (
        "uri-pvc-dot-segment",
        set_path(base_resource(), "spec.model.uri", "pvc://team-models/./m.skops"),
        "a pvc:// path must stay inside its claim",
        "a pvc:// path must stay inside its claim",
    ),
    (
        "max-size-not-a-size",
        set_path(base_resource(), "spec.model.maxSize", "1.5G"),
        "maxSize must be a whole number of bytes",
        "maxSize must be a whole number of bytes",
    ),
    (
        "s3-secret-name-not-a-name",
        set_path(base_resource(), "spec.s3", {"secretName": "Model_Store"}),
        "secretName must be a Secret name",
        "secretName must be a Secret name",
    ),
    (
        "uri-relative-file",
        set_path(base_resource(), "spec.model.uri", "file://models/x.skops"),
        "uri must be file:///path",
        "uri must be file:///path",
    ),
    (
        "version-not-a-label-value",
        set_path(base_resource(), "spec.model.version", "1.4.0 beta"),
        "version must be 1-63 letters",
        "version must be 1-63 letters",
    ),
    (
        "replicas-zero",
        set_path(base_resource(), "spec.replicas", 0),
        "spec.replicas: in body should be greater than or equal to 1",
        "greater than or equal to 1",
    ),
    (
        "router-type-unknown",
        set_path(base_resource(), "spec.router.type", "istio"),
        'Unsupported value: "istio": supported values: "builtin", "none"',
        "Input should be 'builtin' or 'none'",
    ),
    (
        "strategy-type-unknown",
        set_path(base_resource(), "spec.strategy.type", "BlueGreen"),
        'Unsupported value: "BlueGreen"',
        "Input should be 'Canary', 'ABTest' or 'Shadow'",
    ),
    (
        "quantity-malformed",
        set_path(base_resource(), "spec.resources.limits", {"memory": "1GB"}),
        "spec.resources.limits.memory: should match",
        "is not a Kubernetes quantity",
    ),
    (
        "typo-in-field-name",
        set_path(base_resource(), "spec.replica", 3),
        'unknown field "spec.replica"',
        "Extra inputs are not permitted",
    ),
    (
        "prometheus-url-without-scheme",
        set_path(base_resource(), "spec.prometheus.url", "prometheus:9090"),
        "prometheus url must start with http:// or https://",
        "prometheus url must start with http:// or https://",
    ),
    (
        "name-starts-with-digit",
        base_resource(name="1churn"),
        ".metadata.name: metadata.name must be a DNS-1035 label",
        "metadata.name must be a DNS-1035 label",
    ),
    (
        "name-too-long",
        base_resource(name="m" * 57),
        "Too long",
        "metadata.name must be a DNS-1035 label of at most 56 characters",
    ),
    (
        "registry-uri-without-version",
        set_path(base_resource(), "spec.model.uri", "models:/churn"),
        "a registry uri must be models:/<name>/<version>",
        "a registry uri must be models:/<name>/<version>",
    ),
    (
        "registry-uri-bad-version",
        set_path(base_resource(), "spec.model.uri", "models:/churn/latest"),
        "or models:/<name>@<alias>",
        "or models:/<name>@<alias>",
    ),
    (
        "unpinned-file",
        base_resource(model={"version": "1.4.0", "uri": "s3://models/churn.skops"}),
        "sha256 is required (sha256sum of the artifact) unless uri is a models:/ registry URI",
        "sha256 is required (sha256sum of the artifact) unless uri is a models:/ registry URI",
    ),
    (
        "registry-with-a-format",
        base_resource(model={"version": "3", "uri": "models:/churn/3", "format": "joblib"}),
        "a models:/ model's format is the one its MLmodel file names",
        "a models:/ model's format is the one its MLmodel file names",
    ),
    (
        "accuracy-without-access",
        with_metrics(metric(name="accuracy", min=80)),
        "need feedback, which clients post with a token: set access.tokenSecret",
        "need feedback, which clients post with a token: set access.tokenSecret",
    ),
    (
        "rmse-without-access",
        with_metrics(metric(name="rmse", max=2.5)),
        "set access.tokenSecret",
        "set access.tokenSecret",
    ),
    (
        "log-loss-without-access",
        with_metrics(metric(name="log-loss", max=0.4)),
        "set access.tokenSecret",
        "set access.tokenSecret",
    ),
    (
        "abtest-builtin-without-access",
        base_resource(model=CANARY, strategy={"type": "ABTest", "metrics": []}),
        "the A/B test's built-in accuracy) need feedback",
        "the A/B test's built-in accuracy) need feedback",
    ),
    (
        "access-secret-key",
        base_resource(access={"tokenSecret": {"name": "churn-access", "key": "a/b"}}),
        "key must be a Secret data key",
        "key must be a Secret data key",
    ),
    (
        "access-secret-name",
        base_resource(access={"tokenSecret": {"name": "Churn_Access"}}),
        "tokenSecret.name must be a Secret name",
        "tokenSecret.name must be a Secret name",
    ),
    (
        "mlflow-tracking-uri",
        base_resource(mlflow={"trackingUri": "mlflow:5000"}),
        "trackingUri must be http(s)://host[:port]",
        "trackingUri must be http(s)://host[:port]",
    ),
    (
        "scale-to-zero-without-router",
        base_resource(
            autoscaling={"minReplicas": 0, "maxReplicas": 2},
            resources={"requests": {"cpu": "100m"}},
            router={"type": "none"},
        ),
        "autoscaling.minReplicas 0 (scale to zero) needs router.type builtin",
        "autoscaling.minReplicas 0 (scale to zero) needs router.type builtin",
    ),
    (
        "scale-to-zero-after-too-short",
        base_resource(
            autoscaling={"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfter": "2s"},
            resources={"requests": {"cpu": "100m"}},
        ),
        "scaleToZeroAfter must be between 10s and 24h",
        "scaleToZeroAfter must be between 10s and 24h",
    ),
]


@pytest.mark.parametrize(("body", "api_words", "py_words"),
                         [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])  # fmt: skip
def test_invalid_resources_are_refused_by_both_layers_with_a_reason(
    body: dict[str, Any], api_words: str, py_words: str
) -> None:
    _, api_errors = admit(SCHEMA, body)
    assert any(api_words in e for e in api_errors), api_errors
    assert py_words in pydantic_errors(body)


VALID: list[tuple[str, dict[str, Any]]] = [
    ("minimal", base_resource()),
    (
        "scale-to-zero",
        base_resource(
            autoscaling={
                "minReplicas": 0,
                "maxReplicas": 4,
                "scaleToZeroAfter": "15m",
                "activationTimeout": "45s",
            },
            resources={"requests": {"cpu": "250m"}},
        ),
    ),
    ("with-canary", base_resource(model=CANARY, replicas=3)),
    ("uppercase-sha256", set_path(base_resource(), "spec.model.sha256", "ABCDEF" * 10 + "0123")),
    (
        "canary-every-field",
        base_resource(
            model={**CANARY, "format": "skops"},
            replicas=2,
            paused=True,
            resources={"requests": {"cpu": 1, "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            strategy={
                "type": "Canary",
                "steps": [5, 25, 50, 100],
                "interval": "1m30s",
                "maxFailedChecks": 1,
                "maxConsecutiveErrors": 2,
                "minSamples": 0,
                "progressDeadline": "1h",
                "promotion": "Manual",
                "scaleDownDelay": "0s",
                "metrics": [
                    {"name": "success-rate", "min": 99.5},
                    {
                        "name": "latency-p99",
                        "max": 0.25,
                        "compareTo": "stable",
                        "margin": {"relative": 0.2},
                    },
                    {"name": "accuracy", "compareTo": "stable", "margin": {"absolute": 1}},
                    {
                        "name": "cost",
                        "query": "sum(rate(x_total[{{ interval }}]))",
                        "compareTo": "stable",
                        "margin": {"absolute": 0.1},
                        "better": "Lower",
                    },
                ],
            },
            router={"type": "builtin", "replicas": 2},
            access={"tokenSecret": {"name": "churn-access", "key": "feedback-token"}},
            prometheus={"url": "http://prometheus.monitoring:9090"},
            images={"serving": "registry.local/serving:1", "pullPolicy": "IfNotPresent"},
            storage={"claimName": "models", "mountPath": "/models"},
        ),
    ),
    (
        "abtest-defaults",
        base_resource(model=CANARY, strategy={"type": "ABTest"}, access=ACCESS),
    ),
    (
        "abtest-every-field",
        base_resource(
            model=CANARY,
            strategy={
                "type": "ABTest",
                "abTest": {
                    "stickyKey": {"cookie": "uid"},
                    "split": 20,
                    "match": [
                        {"header": "x-group", "value": "beta"},
                        {"cookie": "staff", "value": "1", "variant": "stable"},
                    ],
                    "metric": {"name": "conversion", "successes": "sum(a)", "trials": "sum(b)"},
                    "significance": 0.01,
                    "minSamples": 500,
                },
            },
        ),
    ),
    (
        "shadow",
        base_resource(
            model=CANARY,
            strategy={"type": "Shadow", "shadow": {"mirrorPercent": 50, "agreementThreshold": 0.9}},
        ),
    ),
    ("no-metrics", set_path(base_resource(), "spec.strategy.metrics", [])),
    ("single-step-of-100", set_path(base_resource(), "spec.strategy.steps", [100])),
    ("router-none", set_path(base_resource(), "spec.router.type", "none")),
    # Checks from custom queries and A/B tests of custom counters read no feedback.
    ("custom-query", with_metrics(metric(name="my-accuracy", query="vector(1)", min=1))),
    (
        "abtest-custom-counters",
        base_resource(
            model=CANARY,
            strategy={
                "type": "ABTest",
                "metrics": [],
                "abTest": {
                    "metric": {"name": "orders", "successes": "vector(1)", "trials": "vector(2)"}
                },
            },
        ),
    ),
    ("longest-name", base_resource(name="m" * 56)),
    (
        "s3-every-field",
        set_path(
            set_path(base_resource(), "spec.model.uri", "s3://models/churn/1.4.0.skops"),
            "spec.s3",
            {
                "secretName": "model-store",
                "endpoint": "http://seaweedfs.storage:8333",
                "region": "eu-west-1",
                "addressingStyle": "path",
                "serviceAccountName": "model-reader",
            },
        ),
    ),
    ("pvc-uri", set_path(base_resource(), "spec.model.uri", "pvc://team-models/churn/m.skops")),
    ("max-size", set_path(base_resource(), "spec.model.maxSize", "4Gi")),
    ("s3-defaults", set_path(base_resource(), "spec.model.uri", "s3://models/churn.skops")),
    (
        "registry-version-unpinned",
        base_resource(
            model={"version": "3", "uri": "models:/churn/3"},
            mlflow={"trackingUri": "http://mlflow.mlops.svc:5000"},
        ),
    ),
    (
        "registry-alias-pinned",
        base_resource(
            model={"version": "3", "uri": "models:/churn@champion", "sha256": SHA_CANARY}
        ),
    ),
    (
        "mlflow-directory",
        base_resource(
            model={
                "version": "3",
                "uri": "s3://mlflow/1/m-1/artifacts",
                "sha256": SHA_CANARY,
                "format": "mlflow",
            },
        ),
    ),
]


@pytest.mark.parametrize("body", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_resources_are_accepted_and_both_layers_default_alike(body: dict[str, Any]) -> None:
    stored, errors = admit(SCHEMA, body)
    assert errors == []
    parsed = ModelDeployment.from_api(body)
    assert parsed.spec.to_api() == stored["spec"]
    # What the API server stores parses to the same spec (a second round trip is stable).
    assert ModelDeploymentSpec.model_validate(stored["spec"]) == parsed.spec


def test_defaults_fill_a_minimal_spec_with_documented_values() -> None:
    spec = ModelDeployment.from_api(base_resource()).spec
    assert spec.replicas == 1
    assert spec.strategy.type == "Canary"
    assert spec.strategy.steps == [10, 25, 50]
    assert spec.strategy.interval_delta.total_seconds() == 30
    assert [m.name for m in spec.strategy.metrics] == ["success-rate", "latency-p99"]
    assert spec.router.type == "builtin"
    assert spec.model.format == "auto"
    assert spec.strategy.ab_test_settings.sticky_key.header == "x-user-id"
    assert spec.strategy.shadow_settings.mirror_percent == 100


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1m30s", 90), ("1.5h", 5400), ("250ms", 0.25), ("0s", 0), ("2h3m4s", 7384)],
)
def test_durations_parse_like_kubernetes(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "1d", "-1s", "1 m", "s"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("fields", "direction"),
    [
        ({"name": "success-rate", "min": 99}, "Higher"),
        ({"name": "latency-p99", "max": 1}, "Lower"),
        ({"name": "accuracy", "min": 90}, "Higher"),
        ({"name": "cost", "query": "q", "max": 1}, "Lower"),
        ({"name": "gain", "query": "q", "min": 1}, "Higher"),
        ({"name": "x", "query": "q", "compareTo": "stable", "margin": {"absolute": 1},
          "better": "Lower"}, "Lower"),
    ],
)  # fmt: skip
def test_metric_direction_for_comparisons(fields: dict[str, Any], direction: str) -> None:
    from modelship_operator.spec import MetricCheck

    assert MetricCheck.model_validate(fields).direction == direction


def test_rollout_key_changes_with_what_restarts_a_rollout_only() -> None:
    from modelship_operator.rollout import rollout_key

    def key(**spec: Any) -> str:
        resource = ModelDeployment.from_api(base_resource(model=CANARY, **spec))
        stable = ModelDeployment.from_api(base_resource()).spec.desired_model()
        return rollout_key(stable, resource.spec.desired_model(), resource.spec.strategy)

    base = key()
    assert base == key(replicas=5, paused=True, images={"serving": "x:1"})
    assert base != key(strategy={"steps": [20, 40]})
    newer = ModelDeployment.from_api(base_resource(model={**CANARY, "version": "1.6.0"}))
    stable = ModelDeployment.from_api(base_resource()).spec.desired_model()
    assert base != rollout_key(stable, newer.spec.desired_model(), newer.spec.strategy)


def test_the_old_canary_field_is_refused_with_the_field_named() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="canary"):
        ModelDeployment.from_api(base_resource(canary=CANARY))


def test_unreadable_status_is_dropped_not_fatal() -> None:
    body = base_resource()
    body["status"] = {"phase": "Exploded", "traffic": {"canary": 500}}
    parsed = ModelDeployment.from_api(body)
    assert parsed.status.phase is None


@pytest.mark.parametrize(
    ("size", "expected"), [("1", 1), ("512Ki", 512 << 10), ("2Gi", 2 << 30), ("1Ti", 1 << 40)]
)
def test_max_sizes_are_bytes_with_binary_units(size: str, expected: int) -> None:
    from modelship_operator.spec import size_bytes

    assert size_bytes(size) == expected
