"""The client's pure parts: paths, errors, back-off, watch lines, kubeconfig, tokens."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from modelship_kube import errors
from modelship_kube.backoff import Backoff
from modelship_kube.credentials import (
    ExecAuth,
    StaticAuth,
    TokenFile,
    in_cluster,
    kubeconfig_files,
    parse_exec_credential,
    parse_kubeconfig,
)
from modelship_kube.paths import (
    apply_params,
    collection_path,
    object_path,
    typed_items,
    watch_params,
)
from modelship_kube.watch import parse_event

# --- paths ---------------------------------------------------------------------------------


def test_paths_of_core_and_group_resources() -> None:
    assert collection_path("v1", "pods", "ml") == "/api/v1/namespaces/ml/pods"
    assert collection_path("v1", "namespaces", None) == "/api/v1/namespaces"
    assert object_path("apps/v1", "deployments", "ml", "x") == (
        "/apis/apps/v1/namespaces/ml/deployments/x"
    )
    assert object_path("modelship.io/v1alpha1", "modeldeployments", "ml", "m", "status") == (
        "/apis/modelship.io/v1alpha1/namespaces/ml/modeldeployments/m/status"
    )


def test_watch_and_apply_queries() -> None:
    assert watch_params({"labelSelector": "a=b"}, "42", 30) == {
        "labelSelector": "a=b",
        "watch": "true",
        "timeoutSeconds": "30",
        "allowWatchBookmarks": "true",
        "resourceVersion": "42",
    }
    assert "resourceVersion" not in watch_params({}, None)
    assert "allowWatchBookmarks" not in watch_params({}, "1", bookmarks=False)
    assert apply_params("op", True) == {"fieldManager": "op", "force": "true"}
    assert apply_params("op", False) == {"fieldManager": "op"}


def test_list_items_get_the_kind_and_api_version_the_api_leaves_out() -> None:
    listing = {
        "kind": "DeploymentList",
        "apiVersion": "apps/v1",
        "items": [{"metadata": {"name": "a"}}, {"kind": "Other", "metadata": {"name": "b"}}],
    }
    a, b = typed_items(listing)
    assert (a["kind"], a["apiVersion"]) == ("Deployment", "apps/v1")
    assert b["kind"] == "Other"  # what an item says is kept
    assert typed_items({"kind": "PodList", "items": None}) == []


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls", "transient"),
    [
        (0, errors.Unavailable, True),
        (401, errors.Unauthorized, False),
        (403, errors.Forbidden, False),
        (404, errors.NotFound, False),
        (409, errors.Conflict, True),
        (410, errors.Gone, False),
        (422, errors.ApiError, False),
        (429, errors.ApiError, True),
        (503, errors.ApiError, True),
    ],
)
def test_each_status_has_its_error(code: int, cls: type[errors.ApiError], transient: bool) -> None:
    body = json.dumps({"kind": "Status", "code": code, "reason": "Why", "message": "because"})
    error = errors.from_response("get x", code, body.encode())
    assert type(error) is cls and error.status == code
    assert (error.reason, error.message) == ("Why", "because")
    assert error.transient is transient
    assert error.not_found is (code == 404) and error.conflict is (code == 409)
    assert str(error) == f"get x: {code or 'no answer'} because"


def test_errors_without_a_status_keep_the_http_status_and_text() -> None:
    error = errors.from_response("get x", 502, b"<html>bad gateway</html>")
    assert error.status == 502 and error.reason == "" and "bad gateway" in error.message
    # A Status whose code disagrees with the response: the response's status wins.
    error = errors.from_response("get x", 404, b'{"kind": "Status", "code": 500}')
    assert isinstance(error, errors.NotFound)
    assert errors.WatchExpired is errors.Gone


# --- back-off ------------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial=0.5, cap=4.0, factor=2.0, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5
    assert backoff.base(0) == 0.0 and backoff.base(10_000) == 4.0


def test_backoff_jitter_only_shortens() -> None:
    low = Backoff(initial=1.0, cap=8.0, jitter=0.25, random=lambda: 1.0)
    high = Backoff(initial=1.0, cap=8.0, jitter=0.25, random=lambda: 0.0)
    assert [low.next() for _ in range(5)] == [0.75, 1.5, 3.0, 6.0, 6.0]
    assert [high.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    with pytest.raises(ValueError):
        Backoff(initial=2.0, cap=1.0)


# --- watch lines ---------------------------------------------------------------------------


def test_watch_lines_become_typed_events() -> None:
    line = '{"type":"MODIFIED","object":{"metadata":{"name":"a","resourceVersion":"7"}}}'
    event = parse_event(line)
    assert event is not None and event.type == "MODIFIED" and event.resource_version == "7"
    mark = parse_event(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}')
    assert mark is not None and mark.type == "BOOKMARK" and mark.resource_version == "9"
    assert parse_event("") is None and parse_event("  \n") is None


def test_watch_error_events_are_raised() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                        "message": "too old resource version"}}  # fmt: skip
    with pytest.raises(errors.Gone) as caught:
        parse_event(json.dumps(gone), "watch cms")
    assert caught.value.reason == "Expired" and "too old" in str(caught.value)
    with pytest.raises(errors.ApiError) as other:
        parse_event('{"type":"ERROR","object":{"kind":"Status","message":"boom"}}')
    assert other.value.status == 500
    for bad in ("not json", "[1]", '{"type":"ADDED"}', '{"type":"WHAT","object":{}}'):
        with pytest.raises(errors.ApiError) as caught_bad:
            parse_event(bad)
        assert caught_bad.value.reason == "BadWatchEvent"


# --- kubeconfig ----------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


KUBECONFIG = f"""
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev
  cluster:
    server: https://10.0.0.1:6443/
    certificate-authority: ca.crt
- name: prod
  cluster:
    server: https://prod:443
    certificate-authority-data: {b64("-----BEGIN CERTIFICATE-----")}
    insecure-skip-tls-verify: true
contexts:
- name: dev
  context: {{cluster: dev, user: cert, namespace: ml}}
- name: prod
  context: {{cluster: prod, user: token}}
- name: files
  context: {{cluster: dev, user: file}}
- name: cloud
  context: {{cluster: prod, user: exec}}
- name: basic
  context: {{cluster: dev, user: basic}}
- name: legacy
  context: {{cluster: dev, user: gcp}}
users:
- name: cert
  user:
    client-certificate: certs/client.crt
    client-key: /abs/client.key
- name: token
  user: {{token: abc, client-certificate-data: {b64("CERT")}, client-key-data: {b64("KEY")}}}
- name: file
  user: {{tokenFile: secrets/token}}
- name: exec
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-auth
      args: [--quiet]
- name: basic
  user: {{username: u, password: p}}
- name: gcp
  user: {{auth-provider: {{name: gcp}}}}
"""


async def header(auth: object) -> str | None:
    assert isinstance(auth, StaticAuth)
    return await auth.header()


def test_kubeconfig_contexts_and_relative_paths() -> None:
    home = Path("/home/me/.kube/config")
    dev = parse_kubeconfig([(KUBECONFIG, home)])
    assert dev.server == "https://10.0.0.1:6443" and dev.namespace == "ml"
    assert dev.tls.ca_file == Path("/home/me/.kube/ca.crt")
    assert dev.tls.cert_file == Path("/home/me/.kube/certs/client.crt")
    assert dev.tls.key_file == Path("/abs/client.key")
    assert dev.auth is None and "context dev" in dev.source

    prod = parse_kubeconfig([(KUBECONFIG, home)], context="prod")
    assert prod.tls.insecure and prod.tls.ca_data == "-----BEGIN CERTIFICATE-----"
    assert (prod.tls.cert_data, prod.tls.key_data) == ("CERT", "KEY")
    assert isinstance(prod.auth, StaticAuth) and prod.auth.value == "Bearer abc"

    files = parse_kubeconfig([(KUBECONFIG, home)], context="files")
    assert isinstance(files.auth, TokenFile)
    assert files.auth.path == Path("/home/me/.kube/secrets/token")

    cloud = parse_kubeconfig([(KUBECONFIG, home)], context="cloud")
    assert isinstance(cloud.auth, ExecAuth)
    assert cloud.auth.config.command == "gke-auth" and cloud.auth.config.args == ["--quiet"]
    assert cloud.auth.config.api_version.endswith("v1beta1")

    basic = parse_kubeconfig([(KUBECONFIG, home)], context="basic")
    assert isinstance(basic.auth, StaticAuth)
    assert basic.auth.value == "Basic " + b64("u:p")


def test_kubeconfig_refusals_name_the_problem() -> None:
    home = Path("/k/config")
    with pytest.raises(errors.ConfigurationError, match="auth-provider"):
        parse_kubeconfig([(KUBECONFIG, home)], context="legacy")
    with pytest.raises(errors.ConfigurationError, match="no context 'nope'"):
        parse_kubeconfig([(KUBECONFIG, home)], context="nope")
    with pytest.raises(errors.ConfigurationError, match="no current-context"):
        parse_kubeconfig([("clusters: []", home)])
    with pytest.raises(errors.ConfigurationError, match="not valid"):
        parse_kubeconfig([("clusters: [{name: x}]", home)])
    with pytest.raises(errors.ConfigurationError, match="not valid"):
        parse_kubeconfig([(": : :", home)])


def test_several_kubeconfigs_merge_first_wins() -> None:
    first = """
current-context: a
clusters: [{name: c, cluster: {server: "https://first"}}]
contexts: [{name: a, context: {cluster: c, user: u}}]
"""
    second = """
current-context: b
clusters: [{name: c, cluster: {server: "https://second"}}]
users: [{name: u, user: {token: from-second, tokenFile: ignored}}]
contexts: [{name: b, context: {cluster: c}}]
"""
    merged = parse_kubeconfig([(first, Path("/1/config")), (second, Path("/2/config"))])
    assert merged.server == "https://first"
    assert isinstance(merged.auth, StaticAuth) and merged.auth.value == "Bearer from-second"
    assert parse_kubeconfig([(first, Path("/1")), (second, Path("/2"))], "b").auth is None
    assert kubeconfig_files({"KUBECONFIG": "/a:/b::"}) == [Path("/a"), Path("/b")]
    assert kubeconfig_files({})[0].name == "config"


# --- tokens --------------------------------------------------------------------------------


def test_token_file_is_read_again_when_it_changes_or_grows_old(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    now = [0.0]
    tokens = TokenFile(path, refresh_seconds=60, clock=lambda: now[0])
    assert tokens.token() == "one"
    path.write_text("token-0002")  # a new size and mtime: read at once
    assert tokens.token() == "token-0002"

    # Rewritten in place with the same size and mtime: the stat cannot tell ...
    stat = path.stat()
    path.write_text("token-0003")
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert tokens.token() == "token-0002"
    now[0] = 61.0  # ... a minute later it is read anyway,
    assert tokens.token() == "token-0003"
    path.write_text("token-0004")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    tokens.expire()  # ... and at once after a 401.
    assert tokens.token() == "token-0004"

    path.unlink()  # gone: the last token is kept
    now[0] = 200.0
    assert tokens.token() == "token-0004"
    with pytest.raises(errors.ConfigurationError):
        TokenFile(tmp_path / "missing").token()


def test_in_cluster_credentials(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("pem")
    (tmp_path / "namespace").write_text("ml\n")
    creds = in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1",
                                  "KUBERNETES_SERVICE_PORT": "443"})  # fmt: skip
    assert creds.server == "https://[fd00::1]:443" and creds.namespace == "ml"
    assert creds.tls.ca_file == tmp_path / "ca.crt"
    assert isinstance(creds.auth, TokenFile) and creds.auth.path == tmp_path / "token"
    with pytest.raises(errors.ConfigurationError, match="not in a pod"):
        in_cluster(tmp_path, {})
    (tmp_path / "token").unlink()
    with pytest.raises(errors.ConfigurationError, match="no ServiceAccount token"):
        in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"})


def test_exec_credentials_are_parsed_with_their_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    expiry = {"token": "t", "expirationTimestamp": "2026-01-01T01:00:00Z"}
    text = json.dumps({"kind": "ExecCredential", "status": expiry})
    assert parse_exec_credential(text, now) == ("t", now + timedelta(hours=1))
    assert parse_exec_credential('{"status": {"token": "t"}}', now) == ("t", None)
    with pytest.raises(errors.ConfigurationError, match="no token"):
        parse_exec_credential('{"status": {}}', now)
