"""models:/ registry URIs: parsing, where the pods read a version's files, and when the
recorded artifact is used again instead of asking the registry."""

from __future__ import annotations

import pytest
from mdep_fixtures import SHA_CANARY
from modelship_operator.sources import (
    ModelFile,
    RegistryError,
    RegistryRef,
    ResolvedVersion,
    artifact_location,
    parse_registry_uri,
    recorded,
    resolved_ref,
)
from modelship_operator.status import ModelRef

TRACKING = "http://mlflow.mlops.svc:5000"


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/churn/3", RegistryRef("churn", version="3")),
        ("models:/churn@champion", RegistryRef("churn", alias="champion")),
        ("models:/Churn.Model_v2/12", RegistryRef("Churn.Model_v2", version="12")),
        ("models:/churn@prod-eu_1", RegistryRef("churn", alias="prod-eu_1")),
    ],
)
def test_registry_uris_name_a_version_or_an_alias(uri: str, ref: RegistryRef) -> None:
    assert parse_registry_uri(uri) == ref
    assert str(ref) == uri


@pytest.mark.parametrize(
    "uri",
    ["models:/churn", "models:/churn/latest", "models:/churn/0", "models:/churn@", "models:/@a",
     "models:/a/b/3", "models:/churn@bad alias", "models:/churn/3/"],
)  # fmt: skip
def test_malformed_registry_uris_are_refused_with_the_accepted_shapes(uri: str) -> None:
    with pytest.raises(ValueError, match=r"models:/<name>/<version>.*models:/<name>@<alias>"):
        parse_registry_uri(uri)


@pytest.mark.parametrize(
    ("artifacts", "served"),
    [
        (
            "mlflow-artifacts:/0/models/m-1/artifacts",
            f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/0/models/m-1/artifacts",
        ),
        (
            "mlflow-artifacts://other:5000/1/abc/artifacts/model/",
            f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model",
        ),
        ("s3://mlflow/1/m-2/artifacts", "s3://mlflow/1/m-2/artifacts"),
        ("https://files.example/m/", "https://files.example/m"),
        ("file:///mnt/models/m-3", "file:///mnt/models/m-3"),
    ],
)
def test_pods_read_proxied_artifacts_through_the_tracking_server(
    artifacts: str, served: str
) -> None:
    assert artifact_location(artifacts, TRACKING + "/") == served


@pytest.mark.parametrize("artifacts", ["dbfs:/databricks/m", "gs://b/m", "/local/path/m"])
def test_stores_the_pods_cannot_read_are_refused_with_the_reason(artifacts: str) -> None:
    with pytest.raises(RegistryError, match="a store the serving pods cannot read"):
        artifact_location(artifacts, TRACKING)


def _resolved(uri: str = "models:/churn@champion", sha256: str | None = None) -> ModelRef:
    found = ResolvedVersion("7", "mlflow-artifacts:/1/models/m-7/artifacts")
    return resolved_ref(uri, found, TRACKING, version="2.0.0", sha256=sha256, max_size=None)


def test_a_resolved_version_records_its_source_number_and_files() -> None:
    ref = _resolved(sha256=SHA_CANARY.upper())
    assert ref.resolved_from == "models:/churn@champion"
    assert ref.registry_version == "7"
    assert ref.uri == f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/1/models/m-7/artifacts"
    assert ref.format == "mlflow"
    assert ref.sha256 == SHA_CANARY
    assert _resolved().sha256 == ""  # unpinned: the server verifies the format's own safety


def test_the_recorded_artifact_is_used_again_while_the_spec_names_it() -> None:
    candidate = _resolved()
    assert recorded("models:/churn@champion", "2.0.0", None, None, None, candidate) == candidate
    # another URI, version label, pin or size limit is a new model: resolved again
    assert recorded("models:/churn@other", "2.0.0", None, None, candidate) is None
    assert recorded("models:/churn@champion", "2.0.1", None, None, candidate) is None
    assert recorded("models:/churn@champion", "2.0.0", SHA_CANARY, None, candidate) is None
    assert recorded("models:/churn@champion", "2.0.0", None, "2Gi", candidate) is None


def test_what_stable_serves_is_reused_when_no_rollout_records_it() -> None:
    serving = _resolved()
    other = _resolved("models:/churn/3")
    assert recorded("models:/churn@champion", "2.0.0", None, None, other, serving) == serving


def test_undo_names_a_registry_model_by_its_version_number_which_no_alias_move_changes() -> None:
    from modelship_operator.kubectl_plugin import undo_patch
    from modelship_operator.spec import ModelSource

    previous = _resolved()  # models:/churn@champion, then version 7, unpinned
    body = {
        "metadata": {"name": "churn"},
        "spec": {"model": {"version": "3.0.0", "uri": "models:/churn/9", "sha256": SHA_CANARY}},
        "status": {"rolledOut": {"current": _resolved("models:/churn/9").to_api(),
                                 "previous": previous.to_api()}},
    }  # fmt: skip
    model = undo_patch(body)
    assert model == {"version": "2.0.0", "uri": "models:/churn/7", "format": "auto",
                     "sha256": None}  # fmt: skip
    # what the merge patch leaves is a valid spec.model
    ModelSource.model_validate({k: v for k, v in model.items() if v is not None})
    plain = ModelRef(version="1.0.0", uri="s3://models/churn.skops", sha256=SHA_CANARY)
    body["status"]["rolledOut"]["previous"] = plain.to_api()
    assert undo_patch(body) == {"version": "1.0.0", "uri": "s3://models/churn.skops",
                                "sha256": SHA_CANARY, "format": "auto"}  # fmt: skip


FILE_URI = f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/1/models/m-7/artifacts/model.skops"


def test_a_skops_file_the_operator_hashed_pins_every_pod_of_the_version() -> None:
    found = ResolvedVersion("7", "mlflow-artifacts:/1/models/m-7/artifacts")
    hashed = ModelFile(FILE_URI, "skops", "c" * 64)
    ref = resolved_ref("models:/churn/7", found, TRACKING, version="2.0.0", sha256=None,
                       max_size=None, file=hashed)  # fmt: skip
    assert (ref.uri, ref.format, ref.sha256, ref.sha256_source) == (
        FILE_URI,
        "skops",
        "c" * 64,
        "operator",
    )
    # reused while the spec pins nothing; a pin of the user's own is a new model
    assert recorded("models:/churn/7", "2.0.0", None, None, ref) == ref
    assert recorded("models:/churn/7", "2.0.0", "c" * 64, None, ref) is None
    # the user's pin wins over the operator's hash
    pinned = resolved_ref("models:/churn/7", found, TRACKING, version="2.0.0",
                          sha256=SHA_CANARY, max_size=None, file=hashed)  # fmt: skip
    assert (pinned.sha256, pinned.sha256_source) == (SHA_CANARY, "spec")
    assert recorded("models:/churn/7", "2.0.0", SHA_CANARY, None, pinned) == pinned


def test_a_pickle_file_stays_unpinned_without_the_users_pin() -> None:
    found = ResolvedVersion("8", "mlflow-artifacts:/1/models/m-8/artifacts")
    pickled = ModelFile(FILE_URI.replace("model.skops", "model.pkl"), "pickle", None)
    ref = resolved_ref("models:/churn/8", found, TRACKING, version="2.0.0", sha256=None,
                       max_size=None, file=pickled)  # fmt: skip
    assert (ref.format, ref.sha256, ref.sha256_source) == ("pickle", "", None)
