"""The Prometheus and Prometheus Operator builds' recipes (pure), and the built binaries
when they are in the cache (`modelship-cluster build` makes them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from modelship_cluster import binaries


@pytest.mark.parametrize(
    ("release", "module"), [("3.16.0", "v0.316.0"), ("3.0.1", "v0.300.1"), ("3.5.12", "v0.305.12")]
)
def test_prometheus_3_releases_map_to_their_go_module_versions(release: str, module: str) -> None:
    assert binaries.prometheus_module_version(release) == module


def test_only_prometheus_3_has_such_a_module_version() -> None:
    with pytest.raises(ValueError, match=r"only Prometheus 3\.x"):
        binaries.prometheus_module_version("2.55.1")


def test_prometheus_keeps_kubernetes_discovery_and_leaves_the_other_mechanisms_out() -> None:
    recipe = binaries.prometheus_recipe()
    args = recipe.build_args(Path("/out"))
    tags = args[args.index("-tags") + 1].split(",")
    assert "enable_kubernetes_sd" in tags and "remove_all_sd" in tags
    assert "builtinassets" not in tags  # the UI's JavaScript is not in the Go module
    assert args[-2:] == [
        "github.com/prometheus/prometheus/cmd/prometheus",
        "github.com/prometheus/prometheus/cmd/promtool",
    ]
    assert "version.Version=3.16.0" in recipe.ldflags
    assert recipe.modules == ("github.com/prometheus/prometheus@v0.316.0",)


def test_the_operator_wrapper_requires_its_three_modules_at_one_version() -> None:
    recipe = binaries.prometheus_operator_recipe("0.85.0")
    text = binaries.wrapper_go_mod("promoperatorbin", recipe)
    m = binaries.PROMETHEUS_OPERATOR_MODULE
    for module in (m, f"{m}/pkg/apis/monitoring", f"{m}/pkg/client"):
        assert f"\t{module} v0.85.0\n" in text
    assert "replace" not in text
    assert text.startswith("module modelship.io/localcluster/promoperatorbin\n")


def test_the_cache_folder_changes_with_any_input_of_the_build() -> None:
    base = binaries.prometheus_recipe()
    variants = [
        binaries.prometheus_recipe("3.16.1"),
        binaries.GoRecipe(base.modules, base.packages, (*base.tags, "x"), base.ldflags),
        binaries.GoRecipe(base.modules, base.packages, base.tags, base.ldflags + " -X a=b"),
    ]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == 4
    assert base.key() == binaries.prometheus_recipe().key()  # and only with one
    assert binaries.prometheus_bin_dir().parent.name == f"v3.16.0-{base.key()}"


def test_crd_files_name_the_kinds_the_prometheus_controller_watches(tmp_path: Path) -> None:
    names = [p.name for p in binaries.prometheus_operator_crd_files(tmp_path)]
    for kind in ("prometheuses", "podmonitors", "servicemonitors", "prometheusrules", "probes"):
        assert f"monitoring.coreos.com_{kind}.yaml" in names


def _built(directory: Path, names: tuple[str, ...]) -> Path:
    if not all((directory / n).exists() for n in names):
        pytest.skip(f"not built yet ({directory}): run `modelship-cluster build`")
    return directory


def test_the_built_prometheus_has_kubernetes_discovery(tmp_path: Path) -> None:
    bin_dir = _built(binaries.prometheus_bin_dir(), binaries.PROMETHEUS_COMMANDS)
    version = subprocess.run(
        [bin_dir / "prometheus", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert "version 3.16.0" in version and "enable_kubernetes_sd" in version
    config = tmp_path / "prometheus.yml"
    config.write_text("scrape_configs:\n- job_name: pods\n  kubernetes_sd_configs: [{role: pod}]\n")
    check = subprocess.run(
        [bin_dir / "promtool", "check", "config", config], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_built_operator_and_reloader_report_their_version() -> None:
    bin_dir = _built(binaries.prometheus_operator_bin_dir(), binaries.PROMETHEUS_OPERATOR_COMMANDS)
    for name in binaries.PROMETHEUS_OPERATOR_COMMANDS:
        out = subprocess.run([bin_dir / name, "--version"], capture_output=True, text=True)
        assert "version 0.85.0" in out.stdout + out.stderr, name


def test_the_built_prometheus_serves_its_api_without_ui_assets(tmp_path: Path) -> None:
    """Run with flags the Prometheus Operator v0.85 passes a 3.x server: ready, the query
    API answers, the UI pages do not (no builtinassets, by choice)."""
    import time
    import urllib.error
    import urllib.request

    bin_dir = _built(binaries.prometheus_bin_dir(), binaries.PROMETHEUS_COMMANDS)
    from modelship_cluster.ports import free_port

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 2s}\n")
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [bin_dir / "prometheus", f"--config.file={config}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--web.enable-lifecycle", "--web.route-prefix=/", "--storage.tsdb.retention.time=1d"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(url + path, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    try:
        deadline = time.monotonic() + 30
        while status("/-/ready") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, "not ready in 30s"
            time.sleep(0.2)
        assert status("/api/v1/query?query=up") == 200
        assert status("/query") >= 500
    finally:
        proc.terminate()
        proc.wait(timeout=20)
