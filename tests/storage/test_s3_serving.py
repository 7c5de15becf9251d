"""modelship-serve loading s3:// models from a real SeaweedFS: served when the bytes are the
pinned ones, and each failure reported with its cause (the process exits, as a pod's
container does, with the reason as its last log line)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from modelship_cluster.seaweedfs import SeaweedFS
from serving_helpers import Server, free_port, start_server, stop_server
from storage_helpers import READER, SCOPED, Stored, env_of

#: The test process' own AWS variables never reach the servers.
NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
                  "AWS_ROLE_ARN": "", "AWS_WEB_IDENTITY_TOKEN_FILE": ""}  # fmt: skip


def serve(
    tmp: Path,
    art: Stored,
    seaweed: SeaweedFS,
    *extra: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    endpoint: str | None = None,
) -> Server:
    """modelship-serve on ART, against SEAWEED (or ENDPOINT), with ENV's credentials only."""
    return start_server(
        tmp, art, "--s3-endpoint-url", endpoint or seaweed.s3_endpoint,
        "--cache-dir", str(tmp / "cache"), *extra,
        name="iris", wait_ready=wait_ready,
        env={**NO_CREDENTIALS, **(env if env is not None else env_of(READER))},
    )  # fmt: skip


def refusal(
    tmp: Path,
    art: Stored,
    seaweed: SeaweedFS,
    *extra: str,
    env: dict[str, str] | None = None,
    endpoint: str | None = None,
) -> str:
    """Start a server that must not load ART; return the reason it logged."""
    server = serve(tmp, art, seaweed, *extra, wait_ready=False, env=env, endpoint=endpoint)
    try:
        assert server.process.wait(timeout=90) == 1, server.log()
        found = re.findall(r"cannot serve the model: (.*)", server.log())
        assert found, server.log()
        return str(found[-1])
    finally:
        stop_server(server)


def test_a_model_in_s3_is_downloaded_verified_and_served(
    tmp_path: Path, seaweed: SeaweedFS, stored: Stored
) -> None:
    server = serve(tmp_path, stored, seaweed, "--sha256", stored.sha256)
    try:
        rows = stored.X[:7]
        answer = server.client.post("/v1/models/iris:predict", json={"instances": rows.tolist()})
        assert answer.status_code == 200, answer.text
        expected = stored.estimator.predict(rows)  # type: ignore[attr-defined]
        assert np.array_equal(np.array(answer.json()["predictions"]), expected)
        # The hash it verified, as an operator would record it for sources without a pin.
        assert server.client.get("/v2/models/iris").json()["parameters"]["sha256"] == (
            stored.sha256
        )
        assert f"downloading model from {stored.uri}" in server.log()
        assert f"sha256 {stored.sha256[:12]}" in server.log()
    finally:
        stop_server(server)
    # The same pod's next server process (a container restart) reads its download again.
    again = serve(tmp_path, stored, seaweed, "--sha256", stored.sha256)
    try:
        assert "already downloaded" in again.log()
        assert "downloading model from" not in again.log()
    finally:
        stop_server(again)


def test_no_such_bucket(tmp_path: Path, seaweed: SeaweedFS, stored: Stored) -> None:
    art = Stored(stored.path, stored.sha256, stored.X, stored.y, None, "s3://absent/iris.skops")
    reason = refusal(tmp_path, art, seaweed, "--sha256", stored.sha256)
    assert reason.startswith("cannot load s3://absent/iris.skops: no such bucket 'absent'")
    assert seaweed.s3_endpoint in reason


def test_no_such_key(tmp_path: Path, seaweed: SeaweedFS, stored: Stored) -> None:
    art = Stored(stored.path, stored.sha256, stored.X, stored.y, None, "s3://models/iris/9.skops")
    reason = refusal(tmp_path, art, seaweed, "--sha256", stored.sha256)
    assert "no such key 'iris/9.skops' in bucket 'models'" in reason


def test_access_denied_to_a_bucket_the_key_may_not_read(
    tmp_path: Path, seaweed: SeaweedFS, stored_private: Stored
) -> None:
    reason = refusal(tmp_path, stored_private, seaweed, "--sha256", stored_private.sha256,
                     env=env_of(SCOPED))  # fmt: skip
    assert "cannot load s3://private/iris.skops: access denied" in reason
    assert "AccessDenied" in reason and "check the access key" in reason


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"AWS_ACCESS_KEY_ID": READER.access_key, "AWS_SECRET_ACCESS_KEY": "wrong"},
         "SignatureDoesNotMatch"),
        ({"AWS_ACCESS_KEY_ID": "NOSUCHKEY0000001", "AWS_SECRET_ACCESS_KEY": "x"},
         "InvalidAccessKeyId"),
        ({}, "request was anonymous"),
    ],
    ids=["wrong-secret", "unknown-key", "anonymous"],
)  # fmt: skip
def test_access_denied_for_bad_or_missing_credentials(
    tmp_path: Path, seaweed: SeaweedFS, stored: Stored, env: dict[str, str], code: str
) -> None:
    reason = refusal(tmp_path, stored, seaweed, "--sha256", stored.sha256, env=env)
    assert "access denied" in reason and code in reason


def test_an_incomplete_access_key_is_named(
    tmp_path: Path, seaweed: SeaweedFS, stored: Stored
) -> None:
    env = {"AWS_ACCESS_KEY_ID": READER.access_key}
    reason = refusal(tmp_path, stored, seaweed, "--sha256", stored.sha256, env=env)
    assert "AWS_SECRET_ACCESS_KEY is not set" in reason


def test_too_large(tmp_path: Path, seaweed: SeaweedFS, stored: Stored) -> None:
    size = stored.path.stat().st_size
    reason = refusal(tmp_path, stored, seaweed, "--sha256", stored.sha256,
                     "--max-model-bytes", str(size - 1))  # fmt: skip
    assert f"the object is {size} bytes, over the limit of {size - 1} bytes" in reason
    assert not list((tmp_path / "cache").iterdir())  # nothing half-written is kept


def test_checksum_mismatch(tmp_path: Path, seaweed: SeaweedFS, stored: Stored) -> None:
    reason = refusal(tmp_path, stored, seaweed, "--sha256", "0" * 64)
    assert f"sha256 mismatch for {stored.uri}: expected {'0' * 64}, file has {stored.sha256}" in (
        reason
    )


def test_an_unpinned_pickle_from_s3_is_never_unpickled(
    tmp_path: Path, seaweed: SeaweedFS, stored_pickle: Stored
) -> None:
    reason = refusal(tmp_path, stored_pickle, seaweed)
    assert f"refusing to unpickle {stored_pickle.uri}" in reason
    server = serve(tmp_path, stored_pickle, seaweed, "--sha256", stored_pickle.sha256)
    try:
        answer = server.client.post("/v1/models/iris:predict", json={"instances": [[5, 3, 1, 0]]})
        assert answer.status_code == 200
    finally:
        stop_server(server)


def test_an_unreachable_store_is_retried_then_reported(
    tmp_path: Path, seaweed: SeaweedFS, stored: Stored
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    reason = refusal(tmp_path, stored, seaweed, "--sha256", stored.sha256,
                     "--download-attempts", "3", endpoint=closed)  # fmt: skip
    assert f"downloading {stored.uri} from {closed} failed after 3 attempts" in reason
    assert "ConnectError" in reason
