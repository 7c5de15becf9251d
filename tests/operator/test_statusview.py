"""The human views of status: one summary line, the models and the analysis table."""

from __future__ import annotations

from typing import Any

from modelship_operator.statusview import (
    analysis_table,
    model_rows,
    models_table,
    parse_status,
    summary,
)


def body(**status: Any) -> dict[str, Any]:
    return {"status": status}


def test_summary_of_a_canary_step_names_versions_and_weights() -> None:
    status = parse_status(
        body(
            phase="Progressing",
            step=2,
            traffic={"stable": 70, "canary": 30},
            stable={"version": "1.0.0"},
            canary={"version": "2.0.0"},
        )
    )
    assert summary("churn", status, steps=3) == (
        "churn  Progressing  step 2/3  stable 1.0.0 70% | canary 2.0.0 30%"
    )


def test_summary_before_any_status_and_while_paused() -> None:
    assert summary("churn", parse_status({})) == "churn  Pending  stable ? 100%"
    paused = parse_status(
        body(
            phase="Paused",
            rollout={
                "key": "k",
                "startedAt": "2026-01-01T00:00:00Z",
                "pauseReason": "Prometheus unreachable",
            },
        )
    )
    assert summary("x", paused).endswith("paused: Prometheus unreachable")


def test_analysis_table_aligns_values_thresholds_and_verdicts() -> None:
    status = parse_status(
        body(
            lastAnalysis=[
                {
                    "metric": "success-rate",
                    "variant": "canary",
                    "value": 99.5,
                    "threshold": ">= 99",
                    "samples": 52,
                    "verdict": "Successful",
                },
                {
                    "metric": "accuracy",
                    "variant": "canary",
                    "value": float("nan"),
                    "stableValue": 0.95,
                    "threshold": ">= stable - 0.05",
                    "verdict": "Inconclusive",
                },
            ]
        )
    )
    lines = analysis_table(status.last_analysis).splitlines()
    assert lines[0].split() == ["METRIC", "VARIANT", "VALUE", "STABLE", "THRESHOLD", "SAMPLES",
                                "VERDICT"]  # fmt: skip
    assert lines[1].split() == ["success-rate", "canary", "99.50", "-", ">=", "99", "52",
                                "Successful"]  # fmt: skip
    assert "NaN" in lines[2] and "0.95" in lines[2] and lines[2].endswith("Inconclusive")
    # Columns line up: every VERDICT starts at the same offset.
    offsets = {
        line.index(word)
        for line, word in zip(lines, ("VERDICT", "Successful", "Inconclusive"), strict=True)
    }
    assert len(offsets) == 1
    assert analysis_table([]) == "(no analysis yet)"


def test_models_show_a_registry_models_resolved_version_artifact_and_hash() -> None:
    sha = "ab" * 32
    status = parse_status(
        body(
            rolledOut={
                "current": {
                    "version": "3",
                    "uri": "s3://mlflow/1/models/m-1/artifacts",
                    "sha256": sha,
                    "resolvedFrom": "models:/churn@champion",
                    "registryVersion": "3",
                    "sha256Source": "operator",
                },
                "previous": {"version": "1.0.0", "uri": "s3://models/a.skops", "sha256": sha},
            },
            rollout={
                "key": "k",
                "startedAt": "2026-01-01T00:00:00Z",
                "candidate": {"version": "2.0.0", "uri": "pvc://models/b.skops", "sha256": ""},
            },
        )
    )
    assert model_rows(status) == [
        (
            "stable",
            "3",
            "models:/churn@champion (version 3)",
            "s3://mlflow/1/models/m-1/artifacts",
            "abababababab (hashed by operator)",
        ),
        ("previous", "1.0.0", "s3://models/a.skops", "-", "abababababab"),
        ("candidate", "2.0.0", "pvc://models/b.skops", "-", "unpinned"),
    ]
    text = models_table(status, indent="  ")
    assert text.splitlines()[0].split() == ["ROLE", "VERSION", "SOURCE", "ARTIFACT", "SHA256"]


def test_models_before_any_rollout() -> None:
    assert models_table(parse_status({})) == "(none rolled out yet)"
