"""The pure parts of S3 loading: URIs, addressing, signing keys, error bodies, backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from modelship_serving.errors import ModelLoadError
from modelship_serving.retries import TransientError, backoff_seconds, with_retries
from modelship_serving.s3 import S3Config, S3Location, error_code, parse_s3_uri
from modelship_serving.s3credentials import (
    parse_assume_role_response,
    static_credentials,
)
from modelship_serving.sigv4 import Credentials, sign, signing_key


def test_s3_uris_split_into_bucket_and_key() -> None:
    assert parse_s3_uri("s3://models/churn/1.4.0.skops") == S3Location(
        "models", "churn/1.4.0.skops"
    )
    for bad in ("s3://models", "s3://models/", "s3:///key", "s3://b/k?versionId=1", "gs://b/k"):
        with pytest.raises(ModelLoadError, match="s3://bucket/key"):
            parse_s3_uri(bad)


def test_custom_endpoints_are_path_style_and_aws_is_virtual_hosted() -> None:
    location = S3Location("models", "churn/a b.skops")
    custom = S3Config.from_env("http://127.0.0.1:8333/", None, "auto", env={})
    assert custom.region == "us-east-1"
    assert custom.object_url(location) == (
        "http://127.0.0.1:8333/models/churn/a%20b.skops",
        "127.0.0.1:8333",
        "/models/churn/a b.skops",
    )
    aws = S3Config.from_env(None, None, "auto", env={"AWS_REGION": "eu-west-1"})
    url, host, _ = aws.object_url(location)
    assert host == "models.s3.eu-west-1.amazonaws.com"
    assert url == "https://models.s3.eu-west-1.amazonaws.com/churn/a%20b.skops"
    forced = S3Config.from_env(None, "eu-west-1", "path", env={})
    assert forced.object_url(location)[1] == "s3.eu-west-1.amazonaws.com"


def test_endpoint_and_region_fall_back_to_the_aws_variables() -> None:
    env = {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://s3:2",
           "AWS_DEFAULT_REGION": "ap-south-1"}  # fmt: skip
    config = S3Config.from_env(None, None, "auto", env=env)
    assert (config.endpoint, config.region) == ("http://s3:2", "ap-south-1")
    assert S3Config.from_env("http://mine:3", "x-1", "auto", env=env).endpoint == "http://mine:3"
    with pytest.raises(ModelLoadError, match="endpoint must be http"):
        S3Config.from_env("seaweedfs:8333", None, "auto", env={})


def test_signing_key_matches_the_published_sigv4_example() -> None:
    # The key-derivation example of the SigV4 documentation (IAM, 2012-02-15).
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_signed_headers_name_what_was_signed() -> None:
    creds = Credentials("AKID", "secret", "token")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = sign("GET", "h:1", "/b/k", creds, "us-east-1", now)
    assert headers["x-amz-date"] == "20260102T030405Z"
    assert headers["x-amz-security-token"] == "token"
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKID/20260102/us-east-1/s3/aws4_request")
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token" in auth
    other = sign("GET", "h:1", "/b/k2", creds, "us-east-1", now)["authorization"]
    assert other != auth


def test_static_credentials_need_both_halves() -> None:
    assert static_credentials({}) is None
    pair = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    assert static_credentials(pair) == Credentials("a", "b", None)
    with pytest.raises(ModelLoadError, match="AWS_SECRET_ACCESS_KEY is not set"):
        static_credentials({"AWS_ACCESS_KEY_ID": "a"})


def test_an_sts_answer_becomes_credentials() -> None:
    body = (
        '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>AK</AccessKeyId>"
        "<SecretAccessKey>SK</SecretAccessKey><SessionToken>ST</SessionToken>"
        "<Expiration>2026-01-01T00:00:00Z</Expiration></Credentials>"
        "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
    )
    assert parse_assume_role_response(body) == Credentials("AK", "SK", "ST")
    with pytest.raises(ModelLoadError, match="without credentials"):
        parse_assume_role_response("<Error/>")


def test_error_bodies_give_their_code() -> None:
    body = "<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>"
    assert error_code(body) == ("NoSuchKey", "The key does not exist")
    assert error_code("plain text") == ("", "plain text")


def test_only_transient_failures_are_retried_with_growing_backoff() -> None:
    pauses: list[float] = []
    calls = iter([TransientError("503"), TransientError("reset"), "ok"])

    def call() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert with_retries("get", call, 5, sleep=pauses.append) == "ok"
    assert len(pauses) == 2
    with pytest.raises(ModelLoadError, match="failed after 2 attempts, the last with: down"):
        with_retries("get", lambda: (_ for _ in ()).throw(TransientError("down")), 2,
                     sleep=pauses.append)  # fmt: skip
    refused = iter([ModelLoadError("no such key")])
    with pytest.raises(ModelLoadError, match="no such key"):
        with_retries("get", lambda: (_ for _ in ()).throw(next(refused)), 5, sleep=pauses.append)
    assert all(0 <= backoff_seconds(n, 0.5, 8) <= min(8, 0.5 * 2 ** (n - 1)) for n in range(1, 9))
