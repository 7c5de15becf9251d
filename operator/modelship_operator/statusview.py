"""Human-readable views of a ModelDeployment's status (pure): the one-line summary, the
models and the analysis table shown by `kubectl modelship status` and the demo."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from modelship_operator.status import AnalysisResult, ModelDeploymentStatus, ModelRef


def parse_status(body: Mapping[str, Any]) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(body.get("status") or {})


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "NaN"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.4f}"
    return f"{value:.2f}"


def summary(name: str, status: ModelDeploymentStatus, steps: int | None = None) -> str:
    """`churn  Progressing  step 2/3  stable 1.0.0 70% | canary 2.0.0 30%`."""
    parts = [name, status.phase or "Pending"]
    if status.step is not None:
        parts.append(f"step {status.step}/{steps}" if steps else f"step {status.step}")
    traffic = status.traffic
    stable = status.stable.version if status.stable and status.stable.version else "?"
    split = f"stable {stable} {traffic.stable if traffic else 100}%"
    if status.canary and status.canary.version:
        split += f" | canary {status.canary.version} {traffic.canary if traffic else 0}%"
        if traffic and traffic.mirror:
            split += f" (mirror {traffic.mirror}%)"
    parts.append(split)
    if status.rollout and status.rollout.pause_reason:
        parts.append(f"paused: {status.rollout.pause_reason}")
    return "  ".join(parts)


def analysis_rows(results: Sequence[AnalysisResult]) -> list[tuple[str, ...]]:
    return [
        (
            r.metric,
            r.variant,
            _number(r.value),
            _number(r.stable_value),
            r.threshold or "-",
            "-" if r.samples is None else str(r.samples),
            r.verdict,
        )
        for r in results
    ]


ANALYSIS_HEADER = ("METRIC", "VARIANT", "VALUE", "STABLE", "THRESHOLD", "SAMPLES", "VERDICT")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """A plain aligned text table (kubectl style: upper-case header, two spaces apart)."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        indent + "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def analysis_table(results: Sequence[AnalysisResult], indent: str = "") -> str:
    if not results:
        return f"{indent}(no analysis yet)"
    return table(ANALYSIS_HEADER, analysis_rows(results), indent)


MODELS_HEADER = ("ROLE", "VERSION", "SOURCE", "ARTIFACT", "SHA256")


def _short_sha(ref: ModelRef) -> str:
    if not ref.sha256:
        return "unpinned"
    by = {"operator": " (hashed by operator)", "spec": " (pinned)"}.get(ref.sha256_source or "", "")
    return ref.sha256[:12] + by


def model_rows(status: ModelDeploymentStatus) -> list[tuple[str, ...]]:
    """What stable serves, what it served before and the candidate being rolled out, each
    with where it came from: a registry model shows its resolved version, so a moved alias
    can be told from what runs."""
    refs: list[tuple[str, ModelRef]] = []
    if status.rolled_out is not None:
        if status.rolled_out.current is not None:
            refs.append(("stable", status.rolled_out.current))
        if status.rolled_out.previous is not None:
            refs.append(("previous", status.rolled_out.previous))
    if status.rollout is not None and status.rollout.candidate is not None:
        refs.append(("candidate", status.rollout.candidate))
    rows: list[tuple[str, ...]] = []
    for role, ref in refs:
        source = ref.resolved_from or ref.uri
        if ref.resolved_from and ref.registry_version:
            source += f" (version {ref.registry_version})"
        artifact = ref.uri if ref.resolved_from else "-"
        rows.append((role, ref.version, source, artifact, _short_sha(ref)))
    return rows


def models_table(status: ModelDeploymentStatus, indent: str = "") -> str:
    rows = model_rows(status)
    if not rows:
        return f"{indent}(none rolled out yet)"
    return table(MODELS_HEADER, rows, indent)
