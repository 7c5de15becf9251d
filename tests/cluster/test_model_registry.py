"""The test bed's MLflow server command line (tests/registry runs it for real)."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelship_cluster import registry


def test_the_registry_keeps_a_sqlite_store_and_proxies_artifacts_on_the_gateway(
    tmp_path: Path,
) -> None:
    args = registry.server_args(tmp_path, "10.244.0.1")
    flags = dict(zip(args[2::2], args[3::2], strict=False))
    assert args[1] == "server" and Path(args[0]).name == "mlflow"
    assert (flags["--host"], flags["--port"]) == ("10.244.0.1", "5000")
    assert flags["--backend-store-uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "--serve-artifacts" in args
    assert args[args.index("--artifacts-destination") + 1] == (tmp_path / "artifacts").as_uri()
    assert registry.tracking_uri("10.244.0.1") == "http://10.244.0.1:5000"
    assert "--app-name" not in args
    assert registry.server_args(tmp_path, "127.0.0.1", app_name="basic-auth")[-1] == "basic-auth"


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("1", True), ("0", False)])
def test_modelship_mlflow_0_skips_the_registry(
    monkeypatch: pytest.MonkeyPatch, value: str | None, enabled: bool
) -> None:
    if value is None:
        monkeypatch.delenv("MODELSHIP_MLFLOW", raising=False)
    else:
        monkeypatch.setenv("MODELSHIP_MLFLOW", value)
    assert registry.enabled() is enabled
