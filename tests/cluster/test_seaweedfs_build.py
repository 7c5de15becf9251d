"""The SeaweedFS build's recipe (pure), and the built `weed` when it is in the cache
(`modelship-cluster build` makes it)."""

from __future__ import annotations

import subprocess

import pytest
from modelship_cluster import binaries
from modelship_cluster.seaweedfs import Identity, s3_config


def test_the_wrapper_repeats_seaweedfs_own_replace() -> None:
    recipe = binaries.seaweedfs_recipe()
    text = binaries.wrapper_go_mod("seaweedfsbin", recipe)
    assert f"\tgithub.com/seaweedfs/seaweedfs {binaries.SEAWEEDFS_VERSION}\n" in text
    assert (
        "replace (\n\tgithub.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0\n)"
        in text
    )
    assert recipe.packages == ("github.com/seaweedfs/seaweedfs/weed",)


def test_replaces_are_part_of_the_key_and_absent_ones_keep_older_keys() -> None:
    base = binaries.seaweedfs_recipe()
    plain = binaries.GoRecipe(base.modules, base.packages, base.tags, base.ldflags)
    assert plain.key() != base.key()
    prometheus = binaries.prometheus_recipe()
    assert (
        prometheus.key()
        == binaries.GoRecipe(
            prometheus.modules, prometheus.packages, prometheus.tags, prometheus.ldflags, ()
        ).key()
    )
    assert binaries.seaweedfs_bin_dir().parent.name == (
        f"{binaries.SEAWEEDFS_VERSION}-{base.key()}"
    )
    assert binaries.seaweedfs_bin_dir() in binaries.toolset().bin_dirs


def test_the_s3_config_lists_each_identity_with_its_actions() -> None:
    text = s3_config([Identity("reader", "AK", "SK", ("Read:models", "List:models"))])
    assert '"accessKey": "AK"' in text and '"Read:models"' in text


def test_the_built_weed_reports_its_module_version() -> None:
    weed = binaries.seaweedfs_bin_dir() / "weed"
    if not weed.exists():
        pytest.skip(f"not built yet ({weed}): run `modelship-cluster build`")
    out = subprocess.run([weed, "version"], capture_output=True, text=True, check=True).stdout
    assert binaries.SEAWEEDFS_VERSION in out
