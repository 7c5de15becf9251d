"""The modelship-router command line: help, validation and clear start-up errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROUTER = str(Path(sys.executable).parent / "modelship-router")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROUTER, *args], capture_output=True, text=True, timeout=60)


def test_help_explains_modes_and_every_setting() -> None:
    result = run("--help")
    assert result.returncode == 0
    for text in (
        "--config FILE",
        "--deployment",
        "routing.json",
        "MODELSHIP_ROUTER_PORT",
        "MODELSHIP_ROUTER_UPSTREAM_TIMEOUT",
        "MODELSHIP_ROUTER_EJECT_SECONDS",
        "MODELSHIP_ROUTER_TOKEN_FILE",
        "--token-file",
        "/readyz",
        "x-modelship-variant",
        "mirror",
    ):
        assert text in result.stdout, text


def test_check_prints_effective_weights(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "deployment: churn\ngeneration: 2\nvariants:\n"
        "  - {name: stable, modelVersion: '1', upstreams: ['127.0.0.1:1']}\n"
        "  - {name: canary, modelVersion: '2', upstreams: ['127.0.0.1:2'], weight: 12.5}\n"
    )
    result = run("--check", str(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "valid": True,
        "generation": 2,
        "stable": 87.5,
        "canary": 12.5,
    }


def test_invalid_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("deployment: churn\nvariants:\n  - {name: stable, modelVersion: '1'}\n")
    checked = run("--check", str(path))
    assert checked.returncode == 2
    assert "variants.0: variant 'stable': set 'service' or 'upstreams'" in checked.stderr
    started = run("--config", str(path), "--port", "0")
    assert started.returncode == 1
    assert "set 'service' or 'upstreams'" in started.stderr
    assert "Traceback" not in started.stderr
    missing = run("--config", str(tmp_path / "nope.yaml"))
    assert "cannot read" in missing.stderr


def test_a_mode_is_required_and_namespace_explained() -> None:
    neither = run()
    assert neither.returncode == 1
    assert "set --config FILE (static mode) or --deployment NAME" in neither.stderr
    no_namespace = run("--deployment", "churn")
    assert no_namespace.returncode == 1
    assert "no namespace" in no_namespace.stderr or "cannot start" in no_namespace.stderr


def test_print_schema_is_the_shared_routing_schema() -> None:
    result = run("--print-schema")
    schema = json.loads(result.stdout)
    assert schema["title"] == "RoutingConfig"
    assert "modelVersion" in schema["$defs"]["Variant"]["properties"]
